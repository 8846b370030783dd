"""The "why one index?" measures and rules: each verdict reached, each measure on planted data."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from analyses.rules.explain import (
    CONCENTRATION_VERDICTS,
    PADDING_VERDICTS,
    cell_sharing,
    concentration_rule,
    padding_rule,
    shared_index,
)
from irm_lens.measures.dominance import top_two
from irm_lens.measures.push import direct_token_z, signed_push


def _runs(tops: dict[str, list[int | None]], seed: int | None = None) -> pd.DataFrame:
    """One row per run; ``None`` marks a run that did not align. Runs alternate seeds 42 and
    420 unless ``seed`` gives them all one."""
    rows = []
    for cell, indices in tops.items():
        padding = cell.split("-")[1]
        for i, t in enumerate(indices):
            rows.append(
                {
                    "cell": cell,
                    "padding": padding,
                    "aligned": t is not None,
                    "top_index": -1 if t is None else t,
                    "seed": seed if seed is not None else 42 + 378 * (i % 2),  # 42, 420, ...
                }
            )
    return pd.DataFrame(rows)


NULL = [394, 12, 77, 394, 501, 8, 394, 60, 394, 394]  # untrained IRMs: 394 tops 6 of 10


def test_top_two_signed_push_and_the_pad_logit():
    out = torch.zeros(5, 3, 8)
    out[:, :, 6] = -2.0  # the top index, pushed negative
    out[:, :, 2] = 1.0  # the runner-up: half its |output|
    two = top_two([out, out])
    assert (two.top, two.runner_up) == (6, 2) and two.gap == pytest.approx(2.0)
    assert signed_push([out], 6) == pytest.approx(-6.0)  # -2 per token x 3 layers
    assert top_two([torch.ones(1, 1, 4) * torch.tensor([1.0, 1, 0, 0])]).gap == pytest.approx(1)
    gain, w_u = torch.ones(8), torch.zeros(8, 10)
    w_u[6, 3] = -5.0  # index 6 lowers token 3's logit; a negative push raises it
    assert direct_token_z(gain, w_u, 6, 3, sign=-1.0) > 2
    assert direct_token_z(gain, w_u, 6, 3, sign=+1.0) < -2
    gain[6] = 0.0  # a final-norm gain of 0: the push cannot reach the logits
    assert math.isnan(direct_token_z(gain, w_u, 6, 3))


def test_shared_index_takes_the_mode_and_its_share():
    assert shared_index([5, 7, 5, 5]) == (5, 0.75)
    assert shared_index([9, 3]) == (3, 0.5)  # a tie: the smaller index
    index, share = shared_index([])
    assert index is None and math.isnan(share)


def test_padding_rule_reaches_every_verdict():
    cases = {
        "only with padding": {
            "t2-counted": [316, 316, 316, 12],
            "t2-masked": [5, 9, 5, 70],
            "t1-counted": [316, 316],
            "t1-masked": [8, 44],
        },
        "one offset only": {
            "t2-counted": [316, 316],
            "t2-masked": [5, 9],
            "t1-counted": [3, 316],
            "t1-masked": [8, 44],
        },
        "not padding": {
            "t2-counted": [316, 316],
            "t2-masked": [270, 270],
            "t1-counted": [316, 316],
            "t1-masked": [8, 44],
        },
        "not tested": {
            "t2-counted": [316, 316],
            "t2-masked": [270, None],
            "t1-counted": [316, 316],
            "t1-masked": [8, 44],
        },
    }
    seen = set()
    for expected, tops in cases.items():
        verdict = padding_rule(_runs(tops), NULL)
        assert verdict.verdict == expected, (expected, verdict.reason)
        seen.add(verdict.verdict)
    assert seen == set(PADDING_VERDICTS)
    # no cell shares at all: not padding either
    none = padding_rule(
        _runs(
            {"t2-counted": [1, 2], "t2-masked": [3, 4], "t1-counted": [5, 6], "t1-masked": [7, 8]}
        ),
        NULL,
    )
    assert none.verdict == "not padding" and "no cell" in none.reason


def test_one_seeds_runs_do_not_decide_a_cell():
    # the "only with padding" pattern, but every run from one init seed: not tested
    tops = {
        "t2-counted": [316, 316],
        "t2-masked": [5, 9],
        "t1-counted": [316, 316],
        "t1-masked": [8, 44],
    }
    assert padding_rule(_runs(tops), NULL).verdict == "only with padding"
    one = padding_rule(_runs(tops, seed=42), NULL)
    assert one.verdict == "not tested" and "2 init seeds" in one.reason
    assert cell_sharing(_runs(tops, seed=42), NULL)["n_seeds"].tolist() == [1, 1, 1, 1]


def test_an_index_the_untrained_irms_already_share_is_not_the_objectives():
    # every counted run tops 394, the index that tops most untrained IRMs: no evidence
    tops = {
        "t2-counted": [394, 394],
        "t2-masked": [5, 9],
        "t1-counted": [394, 394],
        "t1-masked": [8, 44],
    }
    cells = cell_sharing(_runs(tops), NULL).set_index("cell")
    assert not cells.loc["t2-counted", "shares"] and cells.loc["t2-counted", "index"] == 394
    assert padding_rule(_runs(tops), NULL).verdict == "not padding"
    # against a null without a shared index, the same runs share one
    assert padding_rule(_runs(tops), list(range(10))).verdict == "only with padding"


def test_concentration_rule_reaches_every_verdict():
    grows = concentration_rule([1.4, 1.5, 1.3, 1.6])
    flat = concentration_rule([0.9, 0.95, 0.92, 0.97])
    spans = concentration_rule([0.8, 1.6, 0.9, 1.5])
    few = concentration_rule([1.5, float("nan")])
    verdicts = [v.verdict for v in (grows, flat, spans, few)]
    assert verdicts == ["concentrates", "does not concentrate", "not tested", "not tested"]
    assert set(verdicts) == set(CONCENTRATION_VERDICTS)
    assert grows.effects["low"] > 1.05 and "spans" in spans.reason


def test_seed_rule_reaches_every_verdict():
    from analyses.rules.explain import SEED_VERDICTS, seed_rule

    same = seed_rule({"anger": (265, 265), "sadness": (551, 551)})
    apart = seed_rule({"anger": (265, 12), "sadness": (551, 551)})  # half agree
    between = seed_rule({"anger": (1, 1), "sadness": (2, 2), "joy": (3, 4)})
    few = seed_rule({"anger": (265, 265)})
    verdicts = [v.verdict for v in (same, apart, between, few)]
    assert verdicts == ["same index across seeds", "seed-dependent", "not tested", "not tested"]
    assert set(verdicts) == set(SEED_VERDICTS)
    assert "anger 265 / 12" in apart.reason and apart.effects["agree"] == 1
    assert few.reason.endswith("got 1 (anger 265 / 265)")  # the one pair is still shown


def _long_rows(run: str, emotion: str, dominance: tuple[float, float, float], top: int) -> list:
    """A longer run's rows: its untrained IRM (step 0), its first trained snapshot (14), its
    best IRM (step 200) with the given dominance ratios."""
    rows = []
    for step, irm, d in (
        (0, "snapshot", dominance[0]),
        (14, "snapshot", dominance[1]),
        (200, "best", dominance[2]),
    ):
        rows.append(
            {
                "run": run,
                "emotion": emotion,
                "step": step,
                "irm": irm,
                "verdict": "aligned" if step else "not aligned",
                "top_index": top if step else 394,
                "dominance": d,
            }
        )
    return rows


def test_longer_runs_judged_per_setting_and_against_the_first_seed():
    from analyses.longer import judge, setting_of

    assert [
        setting_of(r) for r in ("sadness_l1_long_s42", "anger_layersq4_long_s42", "anger_long_s420")
    ] == ["all + L1", "q4", "second seed"]
    rows = [
        *_long_rows("sadness_l1_long_s42", "sadness", (1.4, 2.0, 3.0), 270),
        *_long_rows("anger_l1_long_s42", "anger", (1.4, 2.0, 2.8), 270),
        *_long_rows("sadness_layersq4_long_s42", "sadness", (1.4, 2.0, 2.0), 521),
        *_long_rows("anger_layersq4_long_s42", "anger", (1.4, 2.0, 1.9), 542),
        *_long_rows("sadness_long_s420", "sadness", (1.4, 2.0, 2.1), 551),
        *_long_rows("anger_long_s420", "anger", (1.4, 2.0, 2.2), 100),
    ]
    j = judge(pd.DataFrame(rows), {"sadness": 551, "anger": 265})
    assert j.concentration["all + L1"].verdict == "concentrates"
    assert j.concentration["q4"].verdict == "does not concentrate"
    growth = j.runs.set_index("run")["growth"]
    assert growth["sadness_l1_long_s42"] == pytest.approx(1.5)
    assert j.runs.set_index("run").loc["anger_l1_long_s42", "untrained_dominance"] == 1.4
    # sadness's second seed keeps 551, anger's moves: half agree
    assert j.seeds.verdict == "seed-dependent" and "sadness 551 / 551" in j.seeds.reason
    # without the first seed's result the seeds are not compared
    assert judge(pd.DataFrame(rows), {}).seeds.verdict == "not tested"


def _table(runs: dict[str, tuple[str, int, bool, float]]) -> pd.DataFrame:
    """``data.csv`` rows: per run (cell, top index at the last snapshot, aligned, own_low), a
    first snapshot at step 14 with half the dominance and the last at 60."""
    rows = []
    for run, (cell, top, aligned, own_low) in runs.items():
        for step, dominance in ((14, 1.0), (60, 2.0)):
            rows.append(
                {
                    "run": run,
                    "cell": cell,
                    "padding": cell.split("-")[1],
                    "step": step,
                    "irm": "snapshot",
                    "verdict": "aligned" if aligned else "not aligned",
                    "top_index": top,
                    "own_low": own_low,
                    "dominance": dominance,
                    "seed": 42 if run.startswith("a") else 420,  # one emotion per seed here
                }
            )
    return pd.DataFrame(rows)


def test_judge_reads_aligned_runs_and_runs_that_learned_their_objective_apart():
    from analyses.explain import judge

    # the counted cells learn t+2 for every voice (own drop > 0, not specific) on one index
    runs = {
        "a_t2c": ("t2-counted", 316, False, 0.3),
        "s_t2c": ("t2-counted", 316, False, 0.3),
        "a_t2m": ("t2-masked", 5, True, 0.2),
        "s_t2m": ("t2-masked", 9, True, 0.2),
        "a_t1c": ("t1-counted", 316, False, 0.3),
        "s_t1c": ("t1-counted", 316, False, 0.2),
        "a_t1m": ("t1-masked", 8, True, 0.1),
        "s_t1m": ("t1-masked", 44, True, 0.1),
    }
    null = pd.DataFrame({"top_index": list(range(10))})
    j = judge(_table(runs), null)
    assert j.padding.verdict == "not tested"  # no counted run is aligned
    assert j.padding_learned.verdict == "only with padding"
    assert j.padding_first.verdict == "only with padding"  # the same tops at step 14
    assert j.concentration["masked"].verdict == "concentrates"  # 2x in every aligned run
    assert j.concentration["counted"].verdict == "not tested"
    assert list(j.cells["n_aligned"]) == [0, 2, 0, 2]
    assert list(j.cells_learned["n_aligned"]) == [2] * 4
    empty = judge(_table({}), null)
    assert empty.padding.verdict == "not tested" and list(empty.cells["n_runs"]) == [0] * 4


def test_longer_trains_a_settings_pair_at_a_time_the_cheapest_first():
    from analyses._common import Context
    from analyses._config import FiguresConfig
    from analyses.longer import SETTINGS, TRAIN_ORDER, longer_specs

    assert sorted(TRAIN_ORDER) == sorted(SETTINGS)
    ctx = Context(FiguresConfig.from_env({"TIER": "explain"}), progress=False)
    assert [s.name for s in longer_specs(ctx)] == [
        "sadness_layersq4_long_s42",
        "anger_layersq4_long_s42",
        "sadness_l1_long_s42",
        "anger_l1_long_s42",
        "sadness_long_s420",
        "anger_long_s420",
    ]
