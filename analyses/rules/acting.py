"""The paper's claims on how the IRM acts: through the residual architecture (the
rotated-injection control), through the LM head and final norm, and early in inference."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from analyses.rules.base import (
    MIN_RUNS,
    NOT,
    NOT_TESTED,
    PARTLY,
    REPRODUCED,
    Verdict,
)
from analyses.rules.paper import MIN_SHARE_EFFECT, against_null, null_text, too_few

MEDIATED = 0.5
"""LM head: the share of the IRM's NLL gain that must go through the final norm's scale."""


LEVER_PERCENTILE = 0.95
"""LM head: the dominant index's entropy lever must beat this share of all indices."""


EARLY = 0.8
"""Timing: the share of the top-k values before the midpoint that reads as "most ... early"."""


MIN_TIMING_EFFECT = 0.1
"""Timing: how far that share must lie above the untrained IRM's."""


def residual_rule(
    delta_shares: Sequence[float],
    output_shares: Sequence[float],
    null_shares: Sequence[float],
    *,
    striated: bool,
    min_runs: int = MIN_RUNS,
) -> Verdict:
    """What the skip-path explanation predicts, tested with a control that can fail: IRMs whose
    outputs ``v_l`` are injected as ``R_l v_l`` (a fixed random orthogonal ``R_l`` per layer).
    It tests where the stripes live (the residual basis or the IRM's own), not that the skip
    path causes them.

    ``delta_shares``: index share of the injected deltas ``R_l v_l`` in the residual basis, per
    aligned run; ``output_shares``: of the same IRMs' own outputs ``v_l``; ``null_shares``: the
    untrained IRMs'; ``striated``: whether the plain IRMs' stripes were reproduced at all.
    Striped: median above every untrained IRM's share and ``MIN_SHARE_EFFECT`` above the
    null's median. Reproduced: the deltas are striped and the raw outputs are not. Partly: both
    are. Not: the deltas are not striped.
    """
    if not striated:
        return Verdict(NOT_TESTED, "no stripes to explain", {"n_runs": float(len(delta_shares))})
    if (few := too_few(len(delta_shares), min_runs, "aligned rotated-injection runs")) is not None:
        return few
    delta, output = float(np.median(delta_shares)), float(np.median(output_shares))
    null = against_null(delta, null_shares)
    effects = {
        "delta_share": delta,
        "output_share": output,
        "control_share": null["null_median"],
        "null_max": null["null_max"],
        "n_runs": float(len(delta_shares)),
    }
    measures = (
        f"index share of the injected deltas {delta:.3f}, of the IRM's own outputs "
        f"{output:.3f}; {null_text(null)}"
    )

    def striped(share: float) -> bool:
        return share > null["null_max"] and share - null["null_median"] >= MIN_SHARE_EFFECT

    if striped(delta) and not striped(output):
        return Verdict(
            REPRODUCED,
            f"stripes form in the residual basis whatever basis the IRM writes in: {measures}",
            effects,
        )
    if striped(delta):
        return Verdict(
            PARTLY, f"stripes in the residual basis and in the IRM's own: {measures}", effects
        )
    return Verdict(
        NOT, f"rotated injection leaves no stripes in the residual basis: {measures}", effects
    )


def lm_head_rule(
    gains: Sequence[float],
    frozen_gains: Sequence[float],
    lever_percentile: float,
    *,
    dominated: bool,
    min_runs: int = MIN_RUNS,
) -> Verdict:
    """The dominant index acts through the final norm and LM head: mediation.

    ``gains``: each aligned run's relative NLL drop of its own-voice answers; ``frozen_gains``:
    the same with the final norm's scale held at its no-IRM value; ``lever_percentile``: the
    share of all ``d_model`` indices whose scaling moves next-token entropy less than the
    dominant index's does. Not tested without a dominant index. Reproduced: at least
    ``MEDIATED`` of the gain goes through the scale and the lever beats ``LEVER_PERCENTILE`` of
    the indices; partly: one of the two.
    """
    if gains:
        gain, frozen = float(np.median(gains)), float(np.median(frozen_gains))
        mediated = 1.0 - frozen / gain if gain > 0 else math.nan
        effects = {
            "gain": gain,
            "frozen_gain": frozen,
            "mediated": mediated,
            "lever_percentile": lever_percentile,
            "n_runs": float(len(gains)),
        }
        share = (
            f"{mediated:.0%} of the NLL gain goes through the final norm's scale"
            if gain > 0
            else "no NLL gain to mediate (the IRM raises its own voice's NLL)"
        )
        measures = (
            f"{share} (gain {gain:.3f}, scale frozen {frozen:.3f}); the index's entropy lever "
            f"beats {lever_percentile:.0%} of all indices"
        )
    else:
        effects = {"n_runs": 0.0, "lever_percentile": lever_percentile}
        measures = ""
    if not dominated:  # the measures are still stated: what the test would have read
        anyway = f" (measured anyway: {measures})" if measures else ""
        return Verdict(
            NOT_TESTED,
            f"no index dominates the alignments: the claim has no subject{anyway}",
            effects,
        )
    if (few := too_few(len(gains), min_runs)) is not None:
        return few
    through, lever = mediated >= MEDIATED, lever_percentile >= LEVER_PERCENTILE
    if through and lever:
        return Verdict(REPRODUCED, measures, effects)
    if through or lever:
        return Verdict(PARTLY, measures, effects)
    return Verdict(NOT, measures, effects)


def timing_rule(
    true_order: Sequence[float],
    true_null: Sequence[float],
    file_order: Sequence[float],
    file_null: Sequence[float],
    *,
    min_runs: int = MIN_RUNS,
) -> Verdict:
    """ "Most of the 1000 largest values occur towards the beginning of inference": the share of
    each aligned run's top-k values before the midpoint, in true sequence order and in the
    original figure's order (its token files sorted by name: generated tokens first, prompt
    last), each against the untrained IRMs (``*_null``). The claim holds in an order when the
    median share is >= ``EARLY``, above every untrained IRM's and ``MIN_TIMING_EFFECT`` above the
    null's median. Reproduced: in both orders; partly: in one (the reason says which)."""
    if (few := too_few(len(true_order), min_runs)) is not None:
        return few
    true, file = float(np.median(true_order)), float(np.median(file_order))
    nulls = {"true": against_null(true, true_null), "file": against_null(file, file_null)}
    effects = {
        "true_order": true,
        "true_control": nulls["true"]["null_median"],
        "file_order": file,
        "file_control": nulls["file"]["null_median"],
        "n_runs": float(len(true_order)),
    }

    def early(value: float, null: dict[str, float]) -> bool:
        return (
            value >= EARLY
            and value > null["null_max"]
            and value - null["null_median"] >= MIN_TIMING_EFFECT
        )

    holds = {
        "true sequence order": early(true, nulls["true"]),
        "the original's file order": early(file, nulls["file"]),
    }
    measures = (
        f"before the midpoint: {true:.0%} in true order (untrained null median "
        f"{nulls['true']['null_median']:.0%}, max {nulls['true']['null_max']:.0%}), {file:.0%} "
        f"in the original's file order (null median {nulls['file']['null_median']:.0%}, max "
        f"{nulls['file']['null_max']:.0%})"
    )
    where = [order for order, ok in holds.items() if ok]
    if len(where) == 2:
        return Verdict(REPRODUCED, f"holds in both orders: {measures}", effects)
    if where:
        return Verdict(PARTLY, f"holds only in {where[0]}: {measures}", effects)
    return Verdict(NOT, f"holds in neither order: {measures}", effects)
