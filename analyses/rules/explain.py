"""Why one index? Rules for the experiments that can decide it.

Pure functions over tables (the measures are in ``irm_lens.measures``); ``analyses/explain.py``
trains the runs and measures them. Every rule returns a ``rules.base.Verdict`` whose outcomes
are each reached in ``tests/test_explain.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from analyses.rules.base import NOT_TESTED, Verdict
from irm_lens.interventions.predict import Validation
from irm_lens.measures.bootstrap import resampled_median_ci

# A cell "shares" an index when it tops at least this fraction of the cell's aligned runs.
SHARED = 0.75
MIN_RUNS = 2
# Runs of one init seed start from the same IRM: two emotions sharing a top index then may share
# it through their start. A cell counts only with aligned runs from this many seeds (added after
# the first seed's 8 runs were measured, before the second seed's).
MIN_SEEDS = 2
# Dominance grows with training when the median ratio last/first trained snapshot has its 95 %
# CI above 1 + this, and does not when the CI lies below it (a growth of a few per cent that
# is certain is still no concentration).
MIN_GROWTH = 0.05

PREDICTOR_VERDICTS = (
    "names the index",
    "better than chance",
    "partly better than chance",
    "no better than chance",
    NOT_TESTED,
)
# The predictor names the index when at least this share of runs' top indices is in its top k.
NAMES_SHARE = 0.5
ALPHA = 0.01
MIN_VALIDATION_RUNS = 5
RANDOM_PERCENTILE = 0.5  # a random ranking's median rank percentile
PADDING_VERDICTS = ("only with padding", "one offset only", "not padding", NOT_TESTED)
CONCENTRATION_VERDICTS = ("concentrates", "does not concentrate", NOT_TESTED)


def shared_index(tops: Sequence[int]) -> tuple[int | None, float]:
    """The most frequent top index of ``tops`` and the fraction of them it tops (None, nan for
    no runs; the smaller index on a tie)."""
    if not tops:
        return None, float("nan")
    counts = pd.Series(list(tops)).value_counts()
    best = int(min(counts[counts == counts.max()].index))
    return best, float(counts.max() / len(tops))


def cell_sharing(
    rows: pd.DataFrame, null_tops: Sequence[int], cells: Sequence[str] = ()
) -> pd.DataFrame:
    """Per cell of ``rows`` (one row per run: ``cell``, ``padding``, ``aligned``, ``top_index``,
    ``seed``): the aligned runs and their seeds, the modal top index among them, its share, and
    whether the cell shares an index: at least ``MIN_RUNS`` aligned runs from ``MIN_SEEDS``
    seeds, ``SHARED`` of them on one index, and that index not one the untrained IRMs
    (``null_tops``) already share (an index of the initialisation, not of the objective).
    ``cells`` (names like ``t2-counted``): every cell planned, listed with no runs where ``rows``
    has none yet."""
    null_index, null_share = shared_index(null_tops)
    init_index = null_index if null_share >= 0.5 else None
    out = []
    for cell, group in rows.groupby("cell", sort=False):
        tops = [int(t) for t in group.loc[group["aligned"], "top_index"]]
        seeds = group.loc[group["aligned"], "seed"].nunique()
        index, share = shared_index(tops)
        enough = len(tops) >= MIN_RUNS and seeds >= MIN_SEEDS
        shares = enough and share >= SHARED and index != init_index
        out.append(
            {
                "cell": cell,
                "padding": group["padding"].iloc[0],
                "n_runs": len(group),
                "n_aligned": len(tops),
                "n_seeds": seeds,
                "index": index,
                "share": share,
                "shares": shares,
            }
        )
    seen = {o["cell"] for o in out}
    for cell in cells:
        if cell not in seen:
            empty = {"n_runs": 0, "n_aligned": 0, "n_seeds": 0, "index": None, "share": math.nan}
            out.append({"cell": cell, "padding": cell.split("-", 1)[1], **empty, "shares": False})
    columns = ["cell", "padding", "n_runs", "n_aligned", "n_seeds", "index", "share", "shares"]
    return pd.DataFrame(out, columns=columns)


def padding_rule(
    rows: pd.DataFrame,
    null_tops: Sequence[int],
    planned: Sequence[str] = (),
    what: str = "aligned runs",
) -> Verdict:
    """Does a shared top index appear only when the padding counts?

    ``rows``: one per run, columns ``cell``, ``padding`` (``counted``/``masked``), ``aligned``,
    ``top_index``; ``null_tops``: the untrained IRMs' top indices (the control). Verdicts: *only
    with padding* (every counted cell shares an index, no masked cell does); *one offset only*
    (one counted cell shares, no masked cell does); *not padding* (a masked cell shares an
    index, or no counted cell does); *not tested* (a cell has fewer than ``MIN_RUNS`` aligned
    runs, or all of them from one seed). ``aligned`` marks the runs that count (``what`` names
    them in the reason); ``planned``: every cell of the design, so that one with no runs yet is
    named."""
    cells = cell_sharing(rows, null_tops, planned)
    if cells.empty:
        return Verdict(NOT_TESTED, "no run measured yet", {})
    effects = {f"{r.cell} shared fraction": r.share for r in cells.itertuples()}
    effects |= {f"{r.cell} aligned runs": float(r.n_aligned) for r in cells.itertuples()}
    thin = cells[cells["n_aligned"] < MIN_RUNS]
    if cells.empty or not thin.empty:
        names = ", ".join(thin["cell"]) if len(thin) else "no cell"
        verb = "has" if len(thin) == 1 else "have"
        return Verdict(
            NOT_TESTED,
            f"needs {MIN_RUNS} {what} in every cell; {names} {verb} fewer",
            effects,
        )
    one_seed = cells[cells["n_seeds"] < MIN_SEEDS]
    if not one_seed.empty:
        names = ", ".join(one_seed["cell"])
        return Verdict(
            NOT_TESTED,
            f"needs {what} from {MIN_SEEDS} init seeds in every cell ({names}: one seed; runs "
            "of one seed start from the same IRM, so a top index they share may be the start's)",
            effects,
        )
    counted, masked = cells[cells["padding"] == "counted"], cells[cells["padding"] == "masked"]

    def listing(frame: pd.DataFrame) -> str:
        return ", ".join(f"{r.cell} {r.index} in {r.share:.0%}" for r in frame.itertuples())

    detail = f"counted: {listing(counted)}; masked: {listing(masked)}"
    if masked["shares"].any():
        return Verdict("not padding", f"a masked cell shares a top index ({detail})", effects)
    if not counted["shares"].any():
        return Verdict("not padding", f"no cell shares a top index ({detail})", effects)
    if counted["shares"].all():
        return Verdict(
            "only with padding",
            f"every counted cell shares a top index, no masked cell does ({detail})",
            effects,
        )
    return Verdict(
        "one offset only",
        f"one counted cell shares a top index, no masked cell does ({detail})",
        effects,
    )


def concentration_rule(growth: Sequence[float], *, group: str = "runs") -> Verdict:
    """Does the top index's dominance grow with training? ``growth``: per aligned run, its
    dominance ratio at the last snapshot over the ratio at the first trained one. *concentrates*
    when the median's 95 % CI is above ``1 + MIN_GROWTH``, *does not concentrate* when it is
    below that, *not tested* when it spans it or with fewer than ``MIN_RUNS`` runs."""
    values = [g for g in growth if math.isfinite(g)]
    if len(values) < MIN_RUNS:
        return Verdict(
            NOT_TESTED,
            f"needs {MIN_RUNS} aligned {group}; got {len(values)}",
            {"runs": float(len(values))},
        )
    median, low, high = resampled_median_ci(values)
    effects = {"median growth": median, "low": low, "high": high, "runs": float(len(values))}
    text = (
        f"dominance last/first snapshot {median:.2f}x [{low:.2f}, {high:.2f}] over "
        f"{len(values)} {group}"
    )
    if low > 1 + MIN_GROWTH:
        return Verdict("concentrates", text, effects)
    if high < 1 + MIN_GROWTH:
        return Verdict("does not concentrate", text, effects)
    return Verdict(NOT_TESTED, f"{text}: the CI spans {1 + MIN_GROWTH:.2f}x", effects)


SEED_VERDICTS = ("same index across seeds", "seed-dependent", NOT_TESTED)


def seed_rule(pairs: dict[str, tuple[int, int]]) -> Verdict:
    """Do two init seeds' best IRMs push on the same index? ``pairs``: per emotion, the top
    index of its first seed's best IRM and its second's. *same index across seeds* when every
    pair agrees, *seed-dependent* when at most half do, *not tested* below ``MIN_RUNS`` pairs
    or in between. Control: two draws of a uniform index agree with probability 1 / d_model;
    untrained IRMs of different seeds have different top indices (the nulls)."""
    agree = [a == b for a, b in pairs.values()]
    shown = ", ".join(f"{e} {a} / {b}" for e, (a, b) in pairs.items())
    effects = {"pairs": float(len(agree)), "agree": float(sum(agree))}
    if len(agree) < MIN_RUNS:
        got = f"{len(agree)}" + (f" ({shown})" if shown else "")
        return Verdict(NOT_TESTED, f"needs {MIN_RUNS} emotions with both seeds; got {got}", effects)
    text = f"{sum(agree)} of {len(agree)} emotions share the top index ({shown})"
    if all(agree):
        return Verdict("same index across seeds", text, effects)
    if sum(agree) <= len(agree) / 2:
        return Verdict("seed-dependent", text, effects)
    return Verdict(NOT_TESTED, f"{text}: neither all nor at most half", effects)


def predictor_rule(v: Validation) -> Verdict:
    """Does the host alone name the index an IRM pushes on? ``v``: the trained runs' top indices
    looked up in the prediction (``interventions.predict.validate_prediction``). *names the
    index* when at least ``NAMES_SHARE`` of them are in the predicted top k and that beats chance
    (one-sided binomial p < ``ALPHA``); *better than chance* when the top-k hits beat chance and
    the median rank percentile's 95 % CI lies below 0.5 (a random ranking's), so the ranking as a
    whole puts trained indices high; *partly better than chance* when only one of the two holds
    (a few runs hit while most rank anywhere, or the ranking leans right with no more top hits
    than chance); *no better than chance* when neither does; *not tested* with fewer than
    ``MIN_VALIDATION_RUNS`` runs."""
    effects = {
        "runs": float(v.n_runs),
        "in top k": float(v.in_top_k),
        "k": float(v.k),
        "chance": v.chance,
        "p": v.p_value,
        "median percentile": v.median_percentile,
        "low": v.low,
        "high": v.high,
    }
    if v.n_runs < MIN_VALIDATION_RUNS:
        return Verdict(
            NOT_TESTED, f"needs {MIN_VALIDATION_RUNS} trained runs; got {v.n_runs}", effects
        )
    share = v.in_top_k / v.n_runs
    text = (
        f"{v.in_top_k} of {v.n_runs} trained top indices in the predicted top {v.k} "
        f"({share:.0%}; chance {v.chance:.1%}, binomial p {v.p_value:.2g}); median rank "
        f"percentile {v.median_percentile:.2f} [{v.low:.2f}, {v.high:.2f}] "
        "(random: 0.50)"
    )
    hits, ranking = v.p_value < ALPHA, v.high < RANDOM_PERCENTILE
    if hits and share >= NAMES_SHARE:
        return Verdict("names the index", text, effects)
    if hits and ranking:
        return Verdict("better than chance", text, effects)
    if hits:
        return Verdict(
            "partly better than chance",
            f"{text}: more top hits than chance, but the median rank is no better than random",
            effects,
        )
    if ranking:
        return Verdict(
            "partly better than chance",
            f"{text}: the ranking leans right, but no more top hits than chance",
            effects,
        )
    return Verdict("no better than chance", text, effects)
