"""The generation self-check (``irm_lens.canary``) and the KV-cache work-around it guards
(``irm_lens.compat``): a host whose cached generation is broken stops every verb that trusts
generation, with the versions named and nothing written."""

from __future__ import annotations

import weakref
from pathlib import Path

import pytest
import torch
import transformers
from packaging.version import Version
from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge

from irm_lens import canary, compat, load_host
from irm_lens.canary import GenerationCheckError, check_generation
from irm_lens.cli import main
from irm_lens.stack import versions


def _ignore_kv_cache(self, k, v, **kwargs):
    return k, v


@pytest.fixture()
def fresh_checks(monkeypatch):
    """Forget which hosts passed, so the check runs again in this test."""
    monkeypatch.setattr(canary, "_passed", weakref.WeakSet())


@pytest.fixture()
def broken_kv_cache(monkeypatch, fresh_checks):
    """What transformers 5.24 did to TransformerLens 4.3.0 without irm_lens.compat: attention
    drops the KV cache, so each cached step sees only the newest token."""
    monkeypatch.setattr(AttentionBridge, "_update_kv_cache", _ignore_kv_cache)


def _assert_names_the_stack(message: str) -> None:
    for package, version in versions().items():
        assert f"{package} {version}" in message
    assert "make lock" in message and "make clean install" in message
    assert "nothing was written" in message


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_a_working_host_passes_once(tiny_host, fresh_checks):
    answers, mismatches = canary.cached_vs_uncached(tiny_host, canary._prompts(tiny_host))
    assert mismatches == [] and [len(a) for a in answers] == [canary.NEW_TOKENS] * 2
    check_generation(tiny_host)
    assert tiny_host in canary._passed


def test_broken_kv_cache_is_caught_with_the_versions(tiny_host, broken_kv_cache):
    prompts = canary._prompts(tiny_host)
    assert len(prompts[0]) != len(prompts[1])  # one row is left-padded
    _, mismatches = canary.cached_vs_uncached(tiny_host, prompts)
    assert {m.row for m in mismatches} == {0, 1}  # both rows leave the uncached choice
    with pytest.raises(GenerationCheckError) as caught:
        check_generation(tiny_host)
    _assert_names_the_stack(str(caught.value))
    assert "KV-cache greedy generation" in str(caught.value)
    assert tiny_host not in canary._passed


def test_generate_and_evaluate_refuse_a_broken_host(tmp_path, capsys, monkeypatch, fresh_checks):
    run = tmp_path / "run"
    common = ["--host", "tiny-random-llama", "--device", "cpu"]
    assert main(["train", str(run), *common, "--preset", "smoke", "--max-steps", "1"]) == 0
    before = sorted(_files(run))
    monkeypatch.setattr(AttentionBridge, "_update_kv_cache", _ignore_kv_cache)
    capsys.readouterr()
    assert main(["generate", *common, "--prompt", "Why?", "--greedy"]) == 2
    _assert_names_the_stack(capsys.readouterr().err)
    assert main(["evaluate", str(run), "--max-rows", "2", "--max-new-tokens", "3"]) == 2
    assert main(["record", str(run), "--max-new-tokens", "3", "--max-rows", "2"]) == 2
    _assert_names_the_stack(capsys.readouterr().err)
    assert sorted(_files(run)) == before  # no evaluation.csv, no recordings


def test_make_figures_writes_nothing_on_a_broken_host(tmp_path, capsys, monkeypatch):
    from analyses.__main__ import run

    for name, value in {
        "FAST": "1",
        "FIGURES_DIR": str(tmp_path / "figures"),
        "IRM_LENS_RUNS": str(tmp_path / "runs"),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(AttentionBridge, "_update_kv_cache", _ignore_kv_cache)
    assert run(progress=False) == 2
    _assert_names_the_stack(capsys.readouterr().err)
    assert _files(tmp_path) == []


def test_route_kv_cache_hands_the_renamed_cache_to_the_attention():
    marker = object()
    args, kwargs = compat._cache_under_old_name(torch.nn.Identity(), (1,), {"cache": marker})
    assert args == (1,) and kwargs == {"past_key_values": marker}
    same = {"past_key_values": marker, "cache": None}
    assert compat._cache_under_old_name(torch.nn.Identity(), (), same)[1] is same


def test_every_attention_bridge_is_routed_once(tiny_host):
    attention = [m for m in tiny_host.modules() if isinstance(m, AttentionBridge)]
    assert len(attention) == tiny_host.cfg.n_layers
    assert all(len(m._forward_pre_hooks) == 1 for m in attention)
    assert compat.route_kv_cache(tiny_host) == 0  # idempotent


@pytest.mark.skipif(
    Version(transformers.__version__) < Version("5.24"),
    reason="the keyword was renamed in transformers 5.24; before it there is nothing to route",
)
def test_without_the_route_cached_generation_breaks(fresh_checks):
    # The root cause, shown on the installed transformers: remove irm_lens.compat's hooks.
    host = load_host("tiny-random-llama", device="cpu")
    for module in host.modules():
        if isinstance(module, AttentionBridge):
            module._forward_pre_hooks.clear()
    with pytest.raises(GenerationCheckError):
        check_generation(host)


@pytest.mark.embedded
def test_embedded_host_must_answer_the_fact(embedded_host, fresh_checks, monkeypatch):
    check_generation(embedded_host)  # answers Paris
    monkeypatch.setattr(canary, "_passed", weakref.WeakSet())
    monkeypatch.setattr(canary, "ANSWER", "Berlin")
    with pytest.raises(GenerationCheckError) as caught:
        check_generation(embedded_host)
    assert "What is the capital of France?" in str(caught.value)
    assert "Paris" in str(caught.value)
    _assert_names_the_stack(str(caught.value))
