"""IRM checkpoints: safetensors + JSON config, refusal of the wrong host, corrupt files."""

from __future__ import annotations

import json
import zipfile

import pytest
import torch

from irm_lens import IRM, CheckpointError, HostMismatchError, LayerRangeError, load_host
from irm_lens.irm import IRMConfig, read_config


def test_round_trip(tiny_host, tmp_path):
    irm = IRM.for_host(tiny_host, layers=[1, 3], width_mult=2, seed=7)
    path = irm.save(tmp_path / "irm.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["irm.safetensors"]  # no temp files left
    loaded = IRM.load(path, tiny_host)
    assert loaded.config == irm.config
    for a, b in zip(irm.parameters(), loaded.parameters(), strict=True):
        assert torch.equal(a, b)
    config = read_config(path)
    assert config.layers == (1, 3) and config.width_mult == 2 and config.depth == 5
    assert config.host is not None and config.host.name == "tiny-random-llama"
    assert config.layout_version == 1


def test_checkpoint_is_not_a_pickle(tiny_host, tmp_path):
    path = IRM.for_host(tiny_host).save(tmp_path / "irm.safetensors")
    raw = path.read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    assert json.loads(header["__metadata__"]["irm_config"])["layers"] == [0, 1, 2, 3]
    assert not zipfile.is_zipfile(path)  # not torch.save's zip of pickles


def test_loading_for_another_host_is_refused(tiny_host, tmp_path):
    other = load_host("tiny-random-llama", device="cpu", seed=1)
    path = IRM.for_host(other).save(tmp_path / "irm.safetensors")
    with pytest.raises(HostMismatchError, match="different embedding weights"):
        IRM.load(path, tiny_host)


def test_size_mismatch_names_both(tiny_host):
    irm = IRM(IRMConfig(d_model=32, layers=(0,)))
    with pytest.raises(HostMismatchError, match=r"d_model=32.*d_model=64"):
        irm.check_host(tiny_host)
    with pytest.raises(HostMismatchError, match="d_model=32"):
        irm(torch.zeros(1, 2, 64))


def test_layer_beyond_host_is_refused(tiny_host):
    irm = IRM(IRMConfig(d_model=64, layers=(2, 6)))
    with pytest.raises(LayerRangeError, match=r"0\.\.3"):
        irm.check_host(tiny_host)


def test_corrupt_or_foreign_files(tiny_host, tmp_path):
    path = IRM.for_host(tiny_host).save(tmp_path / "irm.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated"):
        IRM.load(truncated)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match=r"garbage\.safetensors"):
        IRM.load(garbage)
    with pytest.raises(CheckpointError, match="no such"):
        IRM.load(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not an irm_lens IRM checkpoint"):
        IRM.load(foreign)


def test_failed_save_leaves_previous_file(tiny_host, tmp_path, monkeypatch):
    irm = IRM.for_host(tiny_host)
    path = irm.save(tmp_path / "irm.safetensors")
    before = path.read_bytes()

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", explode)
    with pytest.raises(OSError, match="disk full"):
        IRM.for_host(tiny_host, seed=9).save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["irm.safetensors"]


def test_a_host_whose_chat_template_changed_is_refused(tmp_path):
    host = load_host("tiny-random-llama", device="cpu")  # a private copy: its template changes
    host.tokenizer.chat_template = "{{ messages[0]['content'] }}"
    path = IRM.for_host(host).save(tmp_path / "irm.safetensors")
    IRM.load(path, host)  # the same template: fine
    host.tokenizer.chat_template = "<|user|>{{ messages[0]['content'] }}<|assistant|>"
    with pytest.raises(HostMismatchError, match="another chat template"):
        IRM.load(path, host)
