"""Importers of the original project's CSVs and SQuAD 2.0 JSON: layouts, ids, errors, round trip."""

from __future__ import annotations

import hashlib
import json
import re

import pandas as pd
import pytest

from irm_lens.data.datasets import COLUMNS, load_dataset
from irm_lens.data.importers import (
    DataImportError,
    ImportReport,
    question_id_for,
    read_qa_csv,
    read_squad_json,
    write_qa_csv,
)


def test_question_answer_layout(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text(
        "idx,question,answer\n"
        '0,What is the capital of France?,"Paris, of course."\n'
        "1,  How many legs does a spider have? ,  Eight.  \n",
        encoding="utf-8",
    )
    frame, report = read_qa_csv(path, emotion="anger")
    assert list(frame.columns) == COLUMNS
    assert frame["question"].tolist() == [
        "What is the capital of France?",
        "How many legs does a spider have?",
    ]
    assert frame["answer"].tolist() == ["Paris, of course.", "Eight."]
    assert set(frame["emotion"]) == {"anger"}
    assert set(frame["reference"]) == {""} and set(frame["topic"]) == {"imported"}
    assert set(frame["split"]) <= {"train", "val", "test"}
    assert frame["question_id"][0] == question_id_for("What is the capital of France?")
    assert re.fullmatch(r"q-[0-9a-f]{12}", frame["question_id"][0])
    assert report == ImportReport(str(path), rows_read=2, rows_kept=2, skipped_empty=0)
    assert str(path) in str(report) and "kept 2" in str(report)


def test_text_layout_splits_at_first_question_mark(tmp_path):
    path = tmp_path / "text.csv"
    path.write_text(
        "text,label\n"
        '"Who wrote Hamlet? Shakespeare did, obviously? Yes.",1\n'
        '"Where is  Rome?   In Italy, sadly.",0\n',
        encoding="utf-8",
    )
    frame, report = read_qa_csv(path)
    assert list(frame.columns) == COLUMNS
    assert frame["question"].tolist() == ["Who wrote Hamlet?", "Where is  Rome?"]
    assert frame["answer"].tolist() == ["Shakespeare did, obviously? Yes.", "In Italy, sadly."]
    assert set(frame["emotion"]) == {"custom"}
    assert report.rows_kept == 2


def test_question_id_is_normalized_and_stable():
    assert question_id_for("Who  wrote\tHamlet?") == question_id_for(" who wrote hamlet? ")
    # Fixed value: sha1 of the normalized text, independent of run and platform.
    expected = "q-" + hashlib.sha1(b"who wrote hamlet?").hexdigest()[:12]
    assert question_id_for("Who wrote Hamlet?") == expected


def test_repeated_questions_share_id_and_split(tmp_path):
    lines = ["question,answer"]
    for i in range(40):
        lines += [
            f"What is item {i}?,First rewrite {i}.",
            f"what is  ITEM {i}?,Second rewrite {i}.",
        ]
    path = tmp_path / "repeat.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    frame, report = read_qa_csv(path)
    assert report.rows_kept == 80 and frame["question_id"].nunique() == 40
    assert (frame.groupby("question_id")["split"].nunique() == 1).all()
    assert set(frame["split"]) == {"train", "val", "test"}
    again, _ = read_qa_csv(path)
    assert again.equals(frame)


def test_empty_answers_are_skipped_and_counted(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text(
        'question,answer\nWhat is 2+2?,Four.\nWhat is 3+3?,"   "\nWhat is 4+4?,\n',
        encoding="utf-8",
    )
    frame, report = read_qa_csv(path)
    assert frame["answer"].tolist() == ["Four."]
    assert (report.rows_read, report.rows_kept, report.skipped_empty) == (3, 1, 2)


def test_missing_columns(tmp_path):
    error = _refused(read_qa_csv, tmp_path / "wrong.csv", "prompt,response\nHi?,Hello.\n")
    message = str(error)
    assert "question and answer, or text" in message and "'prompt'" in message
    assert isinstance(error, ValueError)


def test_malformed_text_row_names_its_line(tmp_path):
    text = "text\nWhat is up? Not much.\nNo question mark here\n"
    _refused(read_qa_csv, tmp_path / "bad.csv", text, r".*line 3\b")


def test_empty_question_names_its_line(tmp_path):
    path = tmp_path / "noq.csv"
    path.write_text("question,answer\nWhy?,Because.\nWhen?,Now.\n  ,Orphan answer.\n")
    with pytest.raises(DataImportError, match=r"line 4: the question is empty"):
        read_qa_csv(path)


def test_non_utf8_byte_reports_line_and_offset(tmp_path):
    path = tmp_path / "latin1.csv"
    data = b"question,answer\nWhat is it?,Fine.\nWhere?,Caf\xff.\n"
    path.write_bytes(data)
    offset = data.index(b"\xff")
    with pytest.raises(DataImportError, match=re.escape(str(path))) as info:
        read_qa_csv(path)
    message = str(info.value)
    assert "line 3" in message and f"byte offset {offset}" in message and "UTF-8" in message


def test_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("question,answer\nWhat is café?,A place.\n".encode("utf-8-sig"))
    frame, _ = read_qa_csv(path)
    assert frame["question"].tolist() == ["What is café?"]


def test_missing_file(tmp_path):
    path = tmp_path / "nope.csv"
    with pytest.raises(DataImportError, match=re.escape(str(path)) + ".*no such file"):
        read_qa_csv(path)
    with pytest.raises(DataImportError, match=re.escape(str(path))):
        read_squad_json(path)


SQUAD = {
    "version": "v2.0",
    "data": [
        {
            "title": "Normans",
            "paragraphs": [
                {
                    "context": "The Normans were in Normandy, a region in France.",
                    "qas": [
                        {
                            "id": "sq1",
                            "question": "In what country is Normandy located?",
                            "is_impossible": False,
                            "answers": [
                                {"text": "France", "answer_start": 43},
                                {"text": "in France", "answer_start": 40},
                            ],
                        },
                        {
                            "id": "sq2",
                            "question": "Who gave their name to Normandy in the 1000s?",
                            "is_impossible": True,
                            "answers": [],
                            "plausible_answers": [{"text": "The Normans", "answer_start": 0}],
                        },
                    ],
                }
            ],
        },
        {
            "title": "Physics",
            "paragraphs": [
                {
                    "context": "Force is a push or pull.",
                    "qas": [
                        {
                            "id": "sq3",
                            "question": "What is a pull that is not a force?",
                            "is_impossible": True,
                            "answers": [],
                            "plausible_answers": [],
                        },
                        {
                            "id": "sq4",
                            "question": "What is a push or a pull?",
                            "is_impossible": False,
                            "answers": [{"text": "Force", "answer_start": 0}],
                        },
                    ],
                }
            ],
        },
    ],
}


def test_squad_json(tmp_path):
    path = tmp_path / "train-v2.0.json"
    path.write_text(json.dumps(SQUAD), encoding="utf-8")
    frame, report = read_squad_json(path)
    assert list(frame.columns) == COLUMNS
    assert frame["question_id"].tolist() == ["sq1", "sq2", "sq4"]
    assert frame["answer"].tolist() == ["France", "The Normans", "Force"]
    assert frame["reference"].tolist() == frame["answer"].tolist()
    assert frame["topic"].tolist() == ["Normans", "Normans", "Physics"]
    assert set(frame["emotion"]) == {"source"}
    assert (report.rows_read, report.rows_kept, report.skipped_empty) == (4, 3, 1)


def test_squad_invalid_json_names_file_and_position(tmp_path):
    text = '{"data": [\n  {"title": "x",,}\n]}'
    _refused(read_squad_json, tmp_path / "broken.json", text, r".*line 2, column")


def test_squad_missing_data_and_question(tmp_path):
    _refused(read_squad_json, tmp_path / "nodata.json", '{"version": "v2.0"}', '.*"data"')
    doc = {"data": [{"title": "Normans", "paragraphs": [{"context": "c", "qas": [{"id": "a"}]}]}]}
    text = json.dumps(doc)
    _refused(read_squad_json, tmp_path / "noquestion.json", text, r".*'Normans'.*qas\[0\]")


def test_write_read_round_trip(tmp_path):
    path = tmp_path / "out" / "round.csv"
    frame, _ = read_qa_csv(
        _write(tmp_path / "in.csv", 'question,answer\nA "quoted", q?,"Multi\nline"\n')
    )
    squad, _ = read_squad_json(_write(tmp_path / "s.json", json.dumps(SQUAD)))
    bundled = load_dataset("anger").head(20)
    for source in (frame, squad, bundled):
        write_qa_csv(source, path)
        back, report = read_qa_csv(path)
        assert report.skipped_empty == 0 and list(back.columns) == COLUMNS
        for column in ("question_id", "question", "answer", "reference", "topic"):
            assert back[column].tolist() == source[column].tolist(), column
    assert list(tmp_path.joinpath("out").iterdir()) == [path]  # no temporary file left behind


def test_write_rejects_frame_without_columns(tmp_path):
    with pytest.raises(DataImportError, match="question_id"):
        write_qa_csv(pd.DataFrame({"question": ["q?"], "answer": ["a"]}), tmp_path / "x.csv")


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def _refused(reader, path, text, after=""):
    """The error ``reader`` raises on ``text`` written to ``path``: a ``DataImportError`` whose
    message names the file, then matches ``after``."""
    _write(path, text)
    with pytest.raises(DataImportError, match=re.escape(str(path)) + after) as info:
        reader(path)
    return info.value


def test_special_files_huge_files_and_deep_json_are_refused_before_they_are_read(tmp_path):
    import os

    from irm_lens.data import importers
    from irm_lens.training.config import RunDirError, TrainConfig

    with pytest.raises(DataImportError, match="/dev/zero: not a regular file"):
        read_qa_csv("/dev/zero")
    with pytest.raises(DataImportError, match="a directory; give a CSV file"):
        read_qa_csv(tmp_path)
    big = tmp_path / "big.csv"
    big.write_text("question,answer\n" + "q?,a\n" * 100)
    with pytest.raises(DataImportError, match="more than the"):
        importers._read_text(big, max_bytes=64)
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    with pytest.raises(DataImportError, match="not a regular file"):  # would block if opened
        read_qa_csv(fifo)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataImportError, match="nested deeper than a JSON reader can follow"):
        read_squad_json(deep)
    config = tmp_path / "run" / "config.json"
    config.parent.mkdir()
    config.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(RunDirError, match=r"config\.json: not a valid irm_lens training config"):
        TrainConfig.load(config)
