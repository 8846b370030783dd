"""Atomic writes: permissions of the written file, and nothing half-written on failure."""

from __future__ import annotations

import os
import stat

import pytest

from irm_lens.files import atomic_path, write_text_atomic


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_new_file_gets_the_umask_permissions_not_owner_only(tmp_path):
    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "new.json", "{}")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "new.json") == 0o644  # mkstemp alone would leave 0600


def test_replaced_file_keeps_its_permissions(tmp_path):
    target = tmp_path / "kept.csv"
    target.write_text("a\n")
    target.chmod(0o640)
    write_text_atomic(target, "b\n")
    assert target.read_text() == "b\n" and _mode(target) == 0o640


def test_failure_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_a_result_directory_is_replaced_only_under_its_own_marker(tmp_path):
    from irm_lens.errors import OutputPathError
    from irm_lens.files import MARKER, atomic_dir, check_replaceable, result_kind

    out = tmp_path / "abl"
    with atomic_dir(out, kind="ablation") as tmp:
        (tmp / "ablation.csv").write_text("a\n1\n")
    assert result_kind(out) == "ablation" and (out / MARKER).exists()
    check_replaceable(out, "ablation")  # its own kind: may be replaced
    with pytest.raises(OutputPathError, match="a ablation irm_lens wrote, not a recording"):
        check_replaceable(out, "recording")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "table.csv").write_text("x\n")
    with (
        pytest.raises(OutputPathError, match="files irm_lens did not write"),
        atomic_dir(mine, kind="ablation"),
    ):
        raise AssertionError("the body must not run")
    assert (mine / "table.csv").read_text() == "x\n"
    (tmp_path / "empty").mkdir()
    check_replaceable(tmp_path / "empty", "recording")  # an empty directory holds nothing
    with (
        pytest.raises(ValueError, match="kind must be one of"),
        atomic_dir(tmp_path / "x", kind="run"),
    ):
        pass


def test_a_full_disk_while_saving_tensors_names_the_file_and_keeps_the_old_one(tmp_path):
    """A file-size limit (what a full disk looks like to the writer) during a safetensors save:
    an OSError naming the file, not safetensors' own error, and the previous file unchanged."""
    import resource
    import signal

    import torch

    from irm_lens.files import save_tensors_atomic

    path = tmp_path / "irm.safetensors"
    save_tensors_atomic({"w": torch.zeros(4)}, path, {"format": "test"})
    before = path.read_bytes()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, hard))
    try:
        with pytest.raises(
            OSError, match=r"irm\.safetensors: could not write it \(File too large\)\. Free space"
        ):
            save_tensors_atomic({"w": torch.zeros(1 << 18)}, path, {"format": "test"})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["irm.safetensors"]  # no temporary left
