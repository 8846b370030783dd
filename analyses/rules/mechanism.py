"""The mechanism experiments' verdict rules: where the dominant coordinate comes from (rotated
host, SGD), masked retraining and the layer-set matrix.

An IRM trained on a rotated-basis host (``irm_lens.rotate``: same function, no privileged
coordinates) writes in the rotated basis. Its outputs can be read in that basis (``own``: where
Adam's per-coordinate steps act) or rotated back into the original host's basis (``back``: where
the host's norm gains and massive activations live). If one coordinate dominates in ``back`` but
not in ``own``, the host's basis made it; if it dominates in ``own`` but not in ``back``, the IRM
or its optimizer did. An IRM trained with SGD (rotation-equivariant) on the original host splits
the second case: dominance without Adam's per-coordinate steps is not Adam's.

Dominance is measured as the **dominance ratio** (``irm_lens.measures.dominance``): the top
index's share of total |output| times ``d_model`` (1 = every index alike), with a bootstrap 95 %
CI over prompts, and always against the untrained null of the same host read in the same basis
(IRMs of different init seeds, built and never trained: a random MLP's outputs have a top index
too). An effect is the trained runs' median ratio over the null's median.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np

from analyses.rules.base import MIN_RUNS, NOT, NOT_TESTED, PARTLY, REPRODUCED, Verdict

MARGIN = 1.5
"""A trained IRM's dominance ratio must be this many times its untrained null's median to count."""


def _effect(ratios: Sequence[float], null: Sequence[float]) -> float:
    """The median of ``ratios`` over the median of the untrained ``null`` (NaN when either is
    empty)."""
    if not len(ratios) or not len(null):
        return float("nan")
    return float(np.median(ratios) / np.median(null))


def _null_sizes(**nulls: Sequence[float]) -> str:
    """How many untrained IRMs each null holds, and the spread of its ratios, in words."""
    return "; ".join(
        f"{name.replace('_', ' ')} null n={len(v)}, ratio {min(v):.2f}-{max(v):.2f}"
        if len(v)
        else f"{name.replace('_', ' ')} null empty"
        for name, v in nulls.items()
    )


def _no_dominance(where: str, effect: float, margin: float) -> str:
    """Why a rule is not tested when no index dominates ``where`` (its ``effect`` over the
    untrained null's median below ``margin``): there is no dominance for it to explain."""
    return (
        f"no index dominates {where} beyond the untrained null ({effect:.2f}x its median < "
        f"{margin}x): "
        "nothing to explain"
    )


def _too_few(needed: str, got: str, nulls: str, effects: dict[str, float]) -> Verdict:
    """*not tested* for want of runs, saying what was there (the nulls included)."""
    return Verdict(NOT_TESTED, f"needs {needed}; got {got} ({nulls})", effects)


BASIS_VERDICTS = ("host basis", "IRM or optimizer", "both", "neither", NOT_TESTED)


def basis_verdict(
    original: Sequence[float],
    original_null: Sequence[float],
    rotated_own: Sequence[float],
    rotated_own_null: Sequence[float],
    rotated_back: Sequence[float],
    rotated_back_null: Sequence[float],
    foreign: Sequence[float] = (),
    foreign_null: Sequence[float] = (),
    *,
    margin: float = MARGIN,
    min_runs: int = MIN_RUNS,
) -> Verdict:
    """Decide where the dominant coordinate comes from (``BASIS_VERDICTS``).

    Each list holds the dominance ratios of aligned runs; each ``*_null`` the ratios of the
    untrained IRMs (different init seeds) on the same host read in the same basis. An effect is
    a median ratio over its null's median.
    ``foreign``: the original host's IRMs read in the rotated basis, the symmetric control of
    ``rotated_back`` (the rotated host's IRMs read in the original basis): reading an IRM in a
    basis other than the one it wrote in may concentrate it by itself, so the original basis
    counts only when ``rotated_back`` exceeds ``foreign`` by ``margin`` too.
    """
    effects = {
        "original": _effect(original, original_null),
        "rotated_own": _effect(rotated_own, rotated_own_null),
        "rotated_back": _effect(rotated_back, rotated_back_null),
        "foreign": _effect(foreign, foreign_null),
    }
    nulls = _null_sizes(original=original_null, rotated=rotated_own_null)
    symmetric = (
        f"; read in the other basis, the original host's IRMs hold "
        f"{effects['foreign']:.2f}x (the symmetric control)"
        if foreign
        else ""
    )
    measured = (
        f"on the rotated host the top index holds {effects['rotated_own']:.2f}x its "
        f"null's median in the IRM's own basis and {effects['rotated_back']:.2f}x in the "
        f"original host's basis{symmetric} (threshold {margin}x; original host "
        f"{effects['original']:.2f}x; {nulls})"
    )
    if len(original) < min_runs or len(rotated_own) < min_runs:
        got = f"{len(original)} on the original and {len(rotated_own)} on the rotated host"
        return _too_few(f"{min_runs} aligned runs on each host", got, nulls, effects)
    if effects["original"] < margin:
        reason = _no_dominance("on the original host", effects["original"], margin)
        return Verdict(NOT_TESTED, f"{reason} (measured: {measured})", effects)
    own = effects["rotated_own"] >= margin
    back = effects["rotated_back"] >= margin and not (
        foreign and effects["rotated_back"] < margin * effects["foreign"]
    )
    verdict = {
        (False, True): "host basis",
        (True, False): "IRM or optimizer",
        (True, True): "both",
        (False, False): "neither",
    }[(own, back)]
    return Verdict(verdict, measured, effects)


OPTIMIZER_VERDICTS = ("dominance without Adam", "Adam needed", NOT_TESTED)


def optimizer_verdict(
    adam: Sequence[float],
    adam_null: Sequence[float],
    sgd: Sequence[float],
    sgd_null: Sequence[float],
    *,
    margin: float = MARGIN,
    min_runs: int = MIN_RUNS,
) -> Verdict:
    """Is Adam's per-coordinate update needed for the dominance (``OPTIMIZER_VERDICTS``)?

    ``adam``/``sgd``: dominance ratios of aligned runs on the original host; nulls as in
    ``basis_verdict`` (an untrained IRM is the same under either optimizer, so both may be the
    same null).
    """
    effects = {"adam": _effect(adam, adam_null), "sgd": _effect(sgd, sgd_null)}
    if len(adam) < min_runs or len(sgd) < min_runs:
        got, nulls = (
            f"{len(adam)} Adam and {len(sgd)} SGD",
            _null_sizes(adam=adam_null, sgd=sgd_null),
        )
        return _too_few(f"{min_runs} aligned runs per optimizer", got, nulls, effects)
    if effects["adam"] < margin:
        return Verdict(NOT_TESTED, _no_dominance("under Adam", effects["adam"], margin), effects)
    verdict = "dominance without Adam" if effects["sgd"] >= margin else "Adam needed"
    reason = (
        f"top index {effects['sgd']:.2f}x its null's median under SGD with momentum, "
        f"{effects['adam']:.2f}x under Adam (threshold {margin}x; "
        f"{_null_sizes(adam=adam_null, sgd=sgd_null)})"
    )
    return Verdict(verdict, reason, effects)


MASKING_VERDICTS = ("needed for alignment", "substituted", NOT_TESTED)
MIN_LOSS = 0.02
"""Specificity (a fraction) masking must cost before it counts as a loss: 2 points."""


def masking_verdict(
    unmasked: Sequence[float],
    masked_top: Sequence[float],
    masked_random: Sequence[float],
    *,
    dominance_effect: float,
    n_aligned: int,
    min_runs: int = MIN_RUNS,
    min_loss: float = MIN_LOSS,
) -> Verdict:
    """Do the IRMs need their top indices (``MASKING_VERDICTS``)?

    Args:
        unmasked, masked_top, masked_random: specificity per emotion (same order) of the runs
            without a mask, with the top indices masked, and with as many random indices
            masked (the control).
        dominance_effect: the unmasked runs' median dominance ratio over the untrained null's
            median (stated: whether the masked indices dominate does not change what masking
            shows).
        n_aligned: aligned unmasked runs.

    The loss of a mask is the median over emotions of (unmasked - masked) specificity; the top
    indices are *needed* when theirs is at least ``min_loss`` and twice the random mask's, else
    they were *substituted* (the IRMs align as well through other indices).
    """
    top = [u - m for u, m in zip(unmasked, masked_top, strict=True)]
    rand = [u - m for u, m in zip(unmasked, masked_random, strict=True)]
    return masking_decision(
        float(np.median(top)) if top else float("nan"),
        float(np.median(rand)) if rand else float("nan"),
        dominance_effect=dominance_effect,
        n_aligned=n_aligned,
        min_runs=min_runs,
        min_loss=min_loss,
    )


def masking_decision(
    loss_top: float,
    loss_random: float,
    *,
    dominance_effect: float,
    n_aligned: int,
    min_runs: int = MIN_RUNS,
    min_loss: float = MIN_LOSS,
) -> Verdict:
    """``masking_verdict`` from its two losses (median specificity points lost per mask)."""
    effects = {
        "loss_top": loss_top,
        "loss_random": loss_random,
        "dominance_effect": dominance_effect,
    }
    if n_aligned < min_runs:
        return Verdict(
            NOT_TESTED, f"needs {min_runs} aligned unmasked runs; got {n_aligned}", effects
        )
    needed = loss_top >= max(min_loss, 2 * loss_random)
    reason = (
        f"masking them costs {100 * loss_top:.1f} points of specificity (median over "
        f"emotions), masking as many random indices {100 * loss_random:.1f} (needed: at "
        f"least {100 * min_loss:.0f} points and twice the random mask's); the masked "
        f"indices hold {dominance_effect:.2f}x the untrained null's median "
        "dominance"
    )
    return Verdict("needed for alignment" if needed else "substituted", reason, effects)


SAME_INDEX_SHARES = (0.75, 0.4)
"""Share of aligned runs whose top index is the modal one: reproduced at the first, partly at the
second (chance: two random top indices of d_model = 576 coincide 0.2 % of the time)."""


def same_index_verdict(top1: Mapping[str, Sequence[int]], *, min_runs: int = 4) -> Verdict:
    """Does the same index dominate across layer sets? ``top1``: layer set -> top index of each
    aligned run trained on it."""
    every = [int(i) for ids in top1.values() for i in ids]
    sets = [name for name, ids in top1.items() if len(ids)]
    if len(every) < min_runs or len(sets) < 3:
        return Verdict(
            NOT_TESTED,
            f"needs {min_runs} aligned runs over 3 layer sets; got {len(every)} over {len(sets)}",
            {},
        )
    values, counts = np.unique(every, return_counts=True)
    modal, share = int(values[counts.argmax()]), float(counts.max() / len(every))
    spans = sum(modal in ids for ids in top1.values())
    effects = {"modal_index": float(modal), "modal_share": share, "layer_sets_with_it": spans}
    high, low = SAME_INDEX_SHARES
    verdict = REPRODUCED if share >= high and spans >= 3 else PARTLY if share >= low else NOT
    reason = (
        f"index {modal} is the top index of {counts.max()}/{len(every)} aligned runs "
        f"({100 * share:.0f} %), in {spans} of {len(sets)} layer sets"
    )
    return Verdict(verdict, reason, effects)


def early_layers_verdict(magnitude: Mapping[str, Sequence[float]]) -> Verdict:
    """Do earlier layer sets get larger outputs? ``magnitude``: ``q1``..``q4`` -> mean |output|
    of each aligned run injecting into that quarter. Reproduced when the medians fall from q1 to
    q4 at every step; partly when q1's is the largest; not reproduced otherwise."""
    quarters = ("q1", "q2", "q3", "q4")
    if any(not len(magnitude.get(q, ())) for q in quarters):
        missing = [q for q in quarters if not len(magnitude.get(q, ()))]
        return Verdict(NOT_TESTED, f"no aligned run injecting into {missing}", {})
    medians = [float(np.median(magnitude[q])) for q in quarters]
    effects = {f"{q}_median": m for q, m in zip(quarters, medians, strict=True)}
    effects["q1_over_q4"] = medians[0] / medians[3]
    falling = all(a > b for a, b in itertools.pairwise(medians))
    verdict = REPRODUCED if falling else PARTLY if medians[0] == max(medians) else NOT
    reason = (
        "median mean |output| q1..q4: "
        + ", ".join(f"{m:.3g}" for m in medians)
        + f" (q1/q4 {effects['q1_over_q4']:.2f})"
    )
    return Verdict(verdict, reason, effects)
