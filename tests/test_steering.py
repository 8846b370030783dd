"""The constant part of an IRM's outputs and the steering rule."""

from __future__ import annotations

import math

import pytest
import torch

from analyses.rules.steering import STEERING_VERDICTS, steering_rule
from irm_lens.measures.steering import constant_part, constant_share, constant_top


def test_constant_share_of_planted_outputs():
    g = torch.Generator().manual_seed(0)
    vector = torch.zeros(2, 6)
    vector[:, 4] = 3.0
    fixed = [vector.expand(5, 2, 6).clone(), vector.expand(3, 2, 6).clone()]
    assert constant_share(fixed) == pytest.approx(1.0)
    assert constant_top(fixed) == 4 and torch.allclose(constant_part(fixed), vector.double())
    noise = [torch.randn(400, 2, 6, generator=g)]  # mean ~0: nothing constant
    assert constant_share(noise) < 0.02
    # half constant, half zero-mean noise of the same energy
    mixed = [vector + torch.randn(4000, 2, 6, generator=g) * 3.0 / math.sqrt(6)]
    assert constant_share(mixed) == pytest.approx(0.5, abs=0.03)
    assert math.isnan(constant_share([torch.zeros(2, 1, 3)]))
    with pytest.raises(ValueError, match="at least one"):
        constant_share([])


def test_steering_rule_reaches_every_verdict():
    null = [0.3, 0.35, 0.4]
    verdicts = [
        steering_rule([0.95, 0.9, 0.97, 0.92], null),
        steering_rule([0.6, 0.7, 0.65, 0.75], null),
        steering_rule([0.6, 0.7, 0.65, 0.75], [0.68]),  # the untrained IRMs are as constant
        steering_rule([0.2, 0.3, 0.25], null),
        steering_rule([0.9], null),
    ]
    assert [v.verdict for v in verdicts] == list(STEERING_VERDICTS)
    assert steering_rule([0.9, 0.92, 0.95], [0.96]).verdict == "as constant as untrained"


def test_vector_comparison_reaches_every_verdict():
    from analyses.rules.steering import VECTOR_VERDICTS, vector_comparison

    irm = [0.20, 0.25, 0.30, 0.22, 0.27]

    def moved(by):
        return [x + d for x, d in zip(irm, by, strict=True)]

    verdicts = [
        vector_comparison(irm, moved([0.15] * 5)),  # the constant part steers better
        vector_comparison(irm, moved([0.01, -0.01, 0.0, 0.005, -0.005])),
        vector_comparison(irm, moved([-0.10] * 5)),  # the input-dependent part matters
        vector_comparison(irm, moved([0.10, -0.10, 0.08, -0.09, 0.0])),
        vector_comparison(irm[:1], irm[:1]),
    ]
    assert [v.verdict for v in verdicts] == list(VECTOR_VERDICTS)
    assert verdicts[0].effects["median"] == pytest.approx(0.15)
    assert "+15.0 points" in verdicts[0].reason and "the vectors higher in 5" in verdicts[0].reason
    # another measure and unit, named in the reason
    voice = vector_comparison(
        irm, moved([0.15] * 5), "prompting", measure="P(own voice)", unit="emotion"
    )
    assert voice.reason.startswith("P(own voice) of prompting minus the IRM's, per emotion")
    assert "over 5 emotions" in voice.reason


def test_subspace_rule_reaches_every_verdict():
    from analyses.rules.steering import SUBSPACE_VERDICTS, subspace_rule

    null = [0.05, 0.06, 0.07, 0.08, 0.10]
    verdicts = [
        subspace_rule([0.5, 0.6, 0.55, 0.7], null, 0.014),
        subspace_rule([0.05, 0.06, 0.07, 0.09], null, 0.014),
        subspace_rule([0.075, 0.2, 0.3, 0.25], null, 0.014),  # above the median, not the max
        subspace_rule([0.5], null, 0.014),
    ]
    assert [v.verdict for v in verdicts] == list(SUBSPACE_VERDICTS)
    assert "max 0.100 (n=5)" in verdicts[0].reason and "random subspaces: 0.014" in (
        verdicts[0].reason
    )
    assert subspace_rule([0.5, 0.6], [], 0.014).verdict == "not tested"


def test_output_subspaces_of_planted_outputs_agree_as_their_directions_do():
    from irm_lens.measures.subspace import agreement, chance, output_subspace

    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(64, 64, generator=g)).Q
    first, second = basis[:, :8], basis[:, 8:16]  # two orthogonal 8-dim subspaces

    def outputs(directions, n=200):  # [token, inject=2, d_model] spanning ``directions``
        return [(torch.randn(n, 2, 8, generator=g) @ directions.T)]

    a, again, other = outputs(first), outputs(first), outputs(second)
    assert agreement(output_subspace(a), output_subspace(again)) == pytest.approx(1.0, abs=1e-6)
    assert agreement(output_subspace(a), output_subspace(other)) == pytest.approx(0.0, abs=1e-6)
    # three steering vectors span three directions, not eight
    assert output_subspace([torch.randn(3, 64, generator=g)]).rank == 3
    assert chance(576) == pytest.approx(8 / 576)


def test_the_contrastive_scale_is_the_most_specific_aligned_one():
    import pandas as pd

    from analyses.baselines import choose_scale

    scales = pd.DataFrame(
        {
            "scale": [0.01, 0.03, 0.1, 1.0],
            "verdict": ["not aligned", "aligned", "aligned", "not aligned"],
            "specificity": [0.01, 0.06, 0.09, 3.1],  # 1.0 broke the host: high, not aligned
            "own_low": [0.0, 0.05, 0.08, -2.5],
        }
    )
    assert choose_scale(scales) == 0.1
    none_aligned = scales.assign(verdict="not aligned")
    assert choose_scale(none_aligned) == 0.1  # the most specific that lowered its own NLL
    assert choose_scale(none_aligned.assign(own_low=-1.0)) == 0.01  # else the gentlest
