"""Importers for the original IRM project's data: its CSVs and SQuAD 2.0 JSON.

Each reader returns the same tidy DataFrame as :func:`irm_lens.data.datasets.load_dataset` (columns
``COLUMNS``) plus an :class:`ImportReport`. Every error names the file and, where it can, the line.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from irm_lens.data.datasets import COLUMNS, SPLIT_SEED, assign_splits
from irm_lens.errors import IrmLensError
from irm_lens.files import atomic_path

PathLike = str | os.PathLike[str]
CSV_COLUMNS = ["question_id", "question", "answer", "emotion", "reference", "topic"]


class DataImportError(IrmLensError, ValueError):
    """A data file that is missing, unreadable or not in an expected layout."""


@dataclass(frozen=True)
class ImportReport:
    """What an importer read from one file.

    Attributes:
        path: The file read.
        rows_read: Data rows (CSV records after the header, or SQuAD questions) seen.
        rows_kept: Rows in the returned DataFrame.
        skipped_empty: Rows skipped because their answer was empty or whitespace.
    """

    path: str
    rows_read: int
    rows_kept: int
    skipped_empty: int

    def __str__(self) -> str:
        return (
            f"{self.path}: read {self.rows_read} rows, kept {self.rows_kept}, "
            f"skipped {self.skipped_empty} with an empty answer"
        )


def question_id_for(question: str) -> str:
    """Stable id of a question: ``"q-"`` + 12 hex chars of sha1 of its normalized text.

    Args:
        question: The question; case and runs of whitespace do not change the id.

    Returns:
        The id, identical across runs and platforms.
    """
    normalized = " ".join(question.lower().split())
    return "q-" + hashlib.sha1(normalized.encode("utf-8")).hexdigest()[:12]


MAX_BYTES = 1 << 30  # 1 GiB: far beyond any question/answer bank, short of a runaway read


def _read_text(path: PathLike, max_bytes: int = MAX_BYTES) -> str:
    """The file's text, decoded strictly as UTF-8 (a leading BOM is dropped). A path that is
    not a regular file (a directory, /dev/zero, a pipe) or is larger than ``max_bytes`` is
    refused before it is read."""
    p = Path(path)
    try:
        if not p.is_file():
            what = "a directory" if p.is_dir() else "not a regular file"
            if not p.exists():
                raise FileNotFoundError
            raise DataImportError(f"{path}: {what}; give a CSV file.")
        if p.stat().st_size > max_bytes:
            raise DataImportError(
                f"{path}: {p.stat().st_size / 2**30:.1f} GiB, more than the {max_bytes / 2**30:g} "
                "GiB a question/answer CSV may have; split it or pass fewer rows."
            )
        with p.open("rb") as handle:  # bounded even if the file grows while it is read
            data = handle.read(max_bytes + 1)
    except FileNotFoundError:
        raise DataImportError(f"{path}: no such file.") from None
    except OSError as err:
        raise DataImportError(f"{path}: cannot read the file ({err.strerror}).") from None
    if len(data) > max_bytes:
        raise DataImportError(f"{path}: grew past {max_bytes / 2**30:g} GiB while it was read.")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataImportError(
            f"{path}: not valid UTF-8: byte 0x{data[err.start]:02x} at line {line} "
            f"(byte offset {err.start}). Re-save the file as UTF-8 and import it again."
        ) from None
    return text.removeprefix("\ufeff")


def _frame(rows: list[dict[str, str]], seed: int) -> pd.DataFrame:
    """Tidy DataFrame of ``rows``, with ``split`` assigned by unique question id."""
    frame = pd.DataFrame(rows, columns=[c for c in COLUMNS if c != "split"], dtype=object)
    split_of = assign_splits(frame["question_id"].tolist(), seed=seed)
    frame["split"] = frame["question_id"].map(split_of)
    return frame.reset_index(drop=True)[COLUMNS]


def label_of(path: PathLike) -> str | None:
    """The persona label a question/answer CSV names for itself: the one value of its
    ``emotion`` column (as :func:`write_qa_csv` and ``data synth`` write it), or None when it
    has no such column or more than one value there."""
    try:
        records = list(csv.reader(io.StringIO(_read_text(path), newline="")))
    except csv.Error:
        return None
    header = [name.strip().lower() for name in records[0]] if records else []
    if "emotion" not in header:
        return None
    i = header.index("emotion")
    values = {r[i].strip() for r in records[1:] if i < len(r) and r[i].strip()}
    return values.pop() if len(values) == 1 else None


def read_qa_csv(
    path: PathLike, *, emotion: str = "custom", seed: int = SPLIT_SEED
) -> tuple[pd.DataFrame, ImportReport]:
    """Read a question/answer CSV of the original IRM project (or one from :func:`write_qa_csv`).

    Two layouts are accepted: ``question`` and ``answer`` columns, or one ``text`` column holding
    question + " " + answer, split at the first "?" (the question keeps it). Rows with an empty
    answer are skipped and counted. ``question_id``, ``reference`` and ``topic`` columns are kept
    when present (as :func:`write_qa_csv` writes them); other columns are ignored.

    Args:
        path: The CSV file (UTF-8, header on line 1).
        emotion: Value of the ``emotion`` column.
        seed: Seed of :func:`irm_lens.data.datasets.assign_splits`.

    Returns:
        The tidy DataFrame (columns ``COLUMNS``) and an :class:`ImportReport`. Rows repeating a
        question share its ``question_id`` (see :func:`question_id_for`) and so its split.

    Raises:
        DataImportError: Missing file, bad UTF-8, missing columns or a malformed row.
    """
    try:
        records = list(csv.reader(io.StringIO(_read_text(path), newline="")))
    except csv.Error as err:
        raise DataImportError(f"{path}: not a readable CSV file ({err}).") from None
    header = [name.strip().lower() for name in records[0]] if records else []
    if {"question", "answer"} <= set(header):
        layout = "qa"
    elif "text" in header:
        layout = "text"
    else:
        found = ", ".join(repr(name) for name in header) or "none"
        raise DataImportError(
            f"{path}: missing columns; found {found}, expected question and answer, or text."
        )
    col: dict[str, int] = {}
    for i, name in enumerate(header):
        col.setdefault(name, i)

    def cell(record: list[str], name: str) -> str:
        i = col.get(name)
        return _restore_formula(record[i].strip()) if i is not None and i < len(record) else ""

    rows: list[dict[str, str]] = []
    skipped = 0
    for line, record in enumerate(records[1:], start=2):
        if layout == "qa":
            question, answer = cell(record, "question"), cell(record, "answer")
        else:
            text = cell(record, "text")
            mark = text.find("?")
            if text and mark < 0:
                raise DataImportError(
                    f"{path}: line {line}: the text has no '?' to end the question: {text[:60]!r}."
                )
            question, answer = text[: mark + 1].strip(), text[mark + 1 :].strip()
        if not answer:
            skipped += 1
            continue
        if not question.rstrip("?").strip():
            raise DataImportError(f"{path}: line {line}: the question is empty.")
        rows.append(
            {
                "question_id": cell(record, "question_id") or question_id_for(question),
                "question": question,
                "answer": answer,
                "emotion": emotion,
                "reference": cell(record, "reference"),
                "topic": cell(record, "topic") or "imported",
            }
        )
    report = ImportReport(str(path), len(records) - 1 if records else 0, len(rows), skipped)
    return _frame(rows, seed), report


def _first_text(answers: Any) -> str:
    """First non-empty ``text`` in a SQuAD answer list ('' if none)."""
    for entry in answers if isinstance(answers, list) else []:
        text = entry.get("text") if isinstance(entry, dict) else None
        if isinstance(text, str) and text.strip():
            return text.strip()
    return ""


def read_squad_json(path: PathLike, *, seed: int = SPLIT_SEED) -> tuple[pd.DataFrame, ImportReport]:
    """Read a SQuAD 2.0 JSON file: one row per question.

    The answer is the first ``answers[].text``; for unanswerable questions (``is_impossible`` or
    no answers) the first ``plausible_answers[].text``. Questions with neither are skipped and
    counted as empty.

    Args:
        path: The SQuAD 2.0 JSON file (UTF-8).
        seed: Seed of :func:`irm_lens.data.datasets.assign_splits`.

    Returns:
        The tidy DataFrame (``question_id`` = SQuAD id, ``reference`` = the answer, ``emotion`` =
        ``"source"``, ``topic`` = article title) and an :class:`ImportReport`.

    Raises:
        DataImportError: Missing file, bad UTF-8, invalid JSON or a missing key.
    """
    try:
        doc = json.loads(_read_text(path))
    except json.JSONDecodeError as err:
        raise DataImportError(
            f"{path}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}."
        ) from None
    except RecursionError:
        raise DataImportError(
            f"{path}: nested deeper than a JSON reader can follow; SQuAD 2.0 JSON is four levels "
            "deep. Check that this is the file you meant."
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise DataImportError(f'{path}: no "data" list at the top level; is this SQuAD 2.0 JSON?')
    rows: list[dict[str, str]] = []
    read = skipped = 0
    for a, article in enumerate(doc["data"]):
        article = article if isinstance(article, dict) else {}
        title = str(article.get("title", f"article {a}"))
        for p, paragraph in enumerate(article.get("paragraphs") or []):
            qas = paragraph.get("qas") if isinstance(paragraph, dict) else None
            for q, qa in enumerate(qas or []):
                read += 1
                question = qa.get("question") if isinstance(qa, dict) else None
                if not isinstance(question, str):
                    raise DataImportError(
                        f'{path}: article {title!r}, paragraph {p}, qas[{q}] has no "question".'
                    )
                answer = "" if qa.get("is_impossible") else _first_text(qa.get("answers"))
                answer = answer or _first_text(qa.get("plausible_answers"))
                if not answer:
                    skipped += 1
                    continue
                rows.append(
                    {
                        "question_id": str(qa.get("id") or question_id_for(question)),
                        "question": question.strip(),
                        "answer": answer,
                        "emotion": "source",
                        "reference": answer,
                        "topic": title,
                    }
                )
    return _frame(rows, seed), ImportReport(str(path), read, len(rows), skipped)


def read_source(path: str | os.PathLike[str]) -> tuple[pd.DataFrame, ImportReport]:
    """Question/answer rows from a SQuAD 2.0 JSON file (``.json``) or a question/answer CSV."""
    return read_squad_json(path) if Path(path).suffix == ".json" else read_qa_csv(path)


# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def defuse_formula(text: str) -> str:
    """``text`` as a spreadsheet shows it literally: a leading ``'`` before a formula start
    (``=cmd|...`` -> ``'=cmd|...``). :func:`read_qa_csv` takes the ``'`` off again."""
    return "'" + text if text.startswith(_FORMULA_START) else text


def _restore_formula(text: str) -> str:
    return text[1:] if text.startswith("'") and text[1:].startswith(_FORMULA_START) else text


def qa_frame(rows: pd.DataFrame | Sequence[tuple[str, str]], emotion: str) -> pd.DataFrame:
    """A frame ``write_qa_csv`` takes, from Python data: a DataFrame with ``question`` and
    ``answer`` columns (``question_id``, ``reference`` and ``topic`` kept when present) or
    ``(question, answer)`` pairs. Rows with an empty question or answer are refused by number."""
    if isinstance(rows, pd.DataFrame):
        missing = [c for c in ("question", "answer") if c not in rows.columns]
        if missing:
            raise DataImportError(
                f"the DataFrame has no column(s) {missing}; give question and answer columns."
            )
        frame = rows.reset_index(drop=True).copy()
    else:
        pairs = list(rows)
        bad = [
            i
            for i, pair in enumerate(pairs)
            if not isinstance(pair, tuple | list) or len(pair) != 2
        ]
        if bad:
            raise DataImportError(
                f"rows {bad[:5]} are not (question, answer) pairs; give pairs or a DataFrame."
            )
        frame = pd.DataFrame(pairs, columns=["question", "answer"])
    if frame.empty:
        raise DataImportError("no rows to train on; give at least one (question, answer).")
    for column in ("question", "answer"):
        text = frame[column].fillna("").astype(str).str.strip()
        empty = text.index[text == ""].tolist()
        if empty:
            raise DataImportError(f"rows {empty[:5]} have an empty {column}; fill or drop them.")
        frame[column] = text
    if "question_id" not in frame.columns:
        frame["question_id"] = [question_id_for(q) for q in frame["question"]]
    for column in ("reference", "topic"):
        if column not in frame.columns:
            frame[column] = ""
    frame["emotion"] = emotion
    return frame


def write_qa_csv(frame: pd.DataFrame, path: PathLike) -> None:
    """Write ``frame`` as a UTF-8 CSV that :func:`read_qa_csv` reads back, atomically.

    Cells a spreadsheet would run as formulas get a leading ``'`` (``defuse_formula``);
    :func:`read_qa_csv` removes it, so the text round-trips.

    Args:
        frame: A tidy DataFrame (at least ``question_id, question, answer, emotion, reference,
            topic``).
        path: The CSV file to write; its parent directories are created.

    Raises:
        DataImportError: ``frame`` lacks one of those columns.
    """
    missing = [c for c in CSV_COLUMNS if c not in frame.columns]
    if missing:
        raise DataImportError(f"Cannot write {path}: the frame has no column(s) {missing}.")
    out = frame[CSV_COLUMNS].fillna("").astype(str).map(defuse_formula)
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_COLUMNS)
        writer.writerows(out.itertuples(index=False, name=None))
