"""The training trajectory: snapshots saved during training, the output shape of an IRM, and the
rule that picks the default budget (every outcome reached)."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from analyses._config import FiguresConfig
from analyses._runset import run_specs
from analyses.rules.budget import choose_budget, largest_step_within, minutes_at
from irm_lens.measures.shape import output_shape
from irm_lens.training.config import FAITHFUL_PAPER_LOSS, TrainConfig, preset
from irm_lens.training.runs import snapshot_path
from irm_lens.training.train import train

EMOTIONS = ("anger", "sadness")


def _table(verdicts: dict[tuple[str, int], str], kind: str = "next-token") -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"run": f"{e}_long", "emotion": e, "kind": kind, "step": s, "verdict": v}
            for (e, s), v in verdicts.items()
        ]
    )


def _by_step(verdicts: dict[int, tuple[str, str]]) -> pd.DataFrame:
    """``_table`` from each step's verdicts of anger and sadness (``EMOTIONS``), in that order."""
    return _table(
        {
            (e, step): v
            for step, pair in verdicts.items()
            for e, v in zip(EMOTIONS, pair, strict=True)
        }
    )


def test_budget_is_the_smallest_step_with_every_emotion_aligned():
    table = _by_step(
        {
            0: ("not aligned", "not aligned"),
            14: ("aligned", "not aligned"),
            60: ("aligned", "aligned"),
            200: ("aligned", "aligned"),
        }
    )
    budget = choose_budget(table, EMOTIONS, max_step=200)
    assert budget.step == 60
    assert budget.aligned_by_step == {14: 1, 60: 2, 200: 2}  # step 0 (untrained) is no budget
    assert budget.n_emotions == 2 and "smallest step" in budget.reason


def test_budget_needs_every_run_of_an_emotion_aligned():
    two_seeds = pd.concat(
        [
            _by_step({14: ("aligned", "aligned"), 60: ("aligned", "aligned")}),
            _by_step({14: ("not aligned", "aligned"), 60: ("aligned", "aligned")}),
        ]
    )
    budget = choose_budget(two_seeds, EMOTIONS, max_step=200)
    assert budget.aligned_by_step == {14: 1, 60: 2}  # anger's second run fails at step 14
    assert budget.step == 60


def test_budget_beyond_the_time_limit_is_refused():
    table = _by_step({14: ("aligned", "not aligned"), 60: ("aligned", "aligned")})
    budget = choose_budget(table, EMOTIONS, max_step=30)
    assert budget.step is None and "only from step 60, beyond the time limit" in budget.reason


def test_budget_none_when_never_aligned_or_not_measured():
    never = _by_step({14: ("aligned", "not aligned")})
    assert choose_budget(never, EMOTIONS, max_step=100).step is None
    assert "at no measured step" in choose_budget(never, EMOTIONS, max_step=100).reason
    partial = _table({("anger", 14): "aligned", ("anger", 60): "aligned"})  # sadness not yet run
    budget = choose_budget(partial, EMOTIONS, max_step=100)
    assert budget.step is None and "no step is measured for all 2 emotions" in budget.reason
    # paper-loss runs never decide the next-token budget
    paper = _table({("anger", 14): "aligned", ("sadness", 14): "aligned"}, kind="paper loss")
    assert choose_budget(paper, EMOTIONS, max_step=100).step is None


def test_budget_rejects_bad_tables():
    with pytest.raises(ValueError, match="lacks columns"):
        choose_budget(pd.DataFrame({"step": [1]}), EMOTIONS, max_step=10)
    with pytest.raises(ValueError, match="at least one emotion"):
        choose_budget(_table({("anger", 1): "aligned"}), (), max_step=10)


def test_time_limit_arithmetic():
    assert minutes_at(100, fixed_min=17.0, per_step_min=0.25) == 42.0
    steps = (0, 14, 30, 60, 120, 240)
    assert largest_step_within(steps, 60.0, fixed_min=17.0, per_step_min=0.25) == 120
    assert largest_step_within(steps, 10.0, fixed_min=17.0, per_step_min=0.25) == 0


def test_output_shape_of_a_planted_index():
    d_model, n_inject = 16, 3
    outputs = []
    for row in range(4):
        out = torch.full((5, n_inject, d_model), 0.01)
        out[:, :, 7] = 1.0 + 0.1 * row  # one index large in every layer: a perfect stripe
        outputs.append(out)
    shape = output_shape(outputs, [0, 1, 2])
    assert shape.top_index == 7
    expected = 1.15 / (1.15 + 15 * 0.01) * d_model  # its share of |output| x d_model
    assert shape.dominance == pytest.approx(expected, rel=1e-6)
    assert shape.dominance_low <= shape.dominance <= shape.dominance_high
    assert shape.index_share == pytest.approx(1.0)
    assert shape.layer_share == pytest.approx(0.0, abs=1e-12)
    assert shape.cross_layer_corr == pytest.approx(1.0)
    uniform = output_shape(
        [torch.ones(5, n_inject, d_model) + 1e-3 * torch.randn(5, n_inject, d_model)], [0, 1, 2]
    )
    assert uniform.dominance == pytest.approx(1.0, abs=0.01)


def test_snapshots_hold_the_irm_at_their_steps(tiny_host, tmp_path):
    config = preset("smoke", snapshots=(0, 2, 4), max_steps=4, epochs=4, eval_every=2)
    train(config, tmp_path / "run", host=tiny_host, progress=False)
    initial = config.untrained_irm(tiny_host).state_dict()
    at0 = load_file(snapshot_path(tmp_path / "run", 0))
    assert all(torch.equal(at0[k], v) for k, v in initial.items())
    at4 = load_file(snapshot_path(tmp_path / "run", 4))
    last = load_file(tmp_path / "run" / "last.safetensors")
    irm_keys = [k for k in last if k.startswith("irm.")]
    assert irm_keys and all(torch.equal(at4[k.removeprefix("irm.")], last[k]) for k in irm_keys)
    at2 = load_file(snapshot_path(tmp_path / "run", 2))
    assert not torch.equal(at2["net.0.weight"], at0["net.0.weight"])
    assert not torch.equal(at2["net.0.weight"], at4["net.0.weight"])
    assert sorted(p.name for p in (tmp_path / "run" / "snapshots").iterdir()) == [
        "step-000000.safetensors",
        "step-000002.safetensors",
        "step-000004.safetensors",
    ]
    # the schedule is part of the saved config, and round-trips as a tuple
    saved = TrainConfig.load(tmp_path / "run" / "config.json")
    assert saved == config and saved.snapshots == (0, 2, 4)


def test_snapshot_steps_are_checked():
    with pytest.raises(ValueError, match="snapshots"):
        TrainConfig(snapshots=(-1,))


def test_paper_loss_runs_are_the_original_loss_as_it_ran():
    specs = {s.name: s for s in run_specs(FiguresConfig())}
    paper, next_token = specs["anger_paperloss_s42"].config, specs["anger_s42"].config
    assert paper.loss == "paper" and paper.prompt_mode == "plain"
    assert (paper.lr, paper.batch_size * paper.grad_accum, paper.max_len) == (1e-4, 16, 128)
    assert paper.max_steps == next_token.max_steps  # the same number of optimizer steps
    assert (
        dataclasses.replace(paper, **{k: getattr(next_token, k) for k in FAITHFUL_PAPER_LOSS})
        == next_token
    )
    assert json.loads(paper.to_json())["prompt_mode"] == "plain"
