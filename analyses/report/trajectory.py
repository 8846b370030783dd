"""The report's training-trajectory section and the long tier's rules."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analyses._summaries import (
    DominanceSummary,
    Rules,
    StriationSummary,
    TrajectorySummary,
    read_typed,
)
from analyses.report.claims import not_run_lines, num_ci, pct, pct_ci
from analyses.report.costs import COSTS, cold_costs
from analyses.report.mechanism import (
    DOMINANCE_CI_NOTE,
    NOT_RUN,
)
from analyses.report.results import Results, read_results
from analyses.rules.base import Verdict
from analyses.rules.paper import (
    consistency_rule,
    dominant_rule,
    striation_rule,
    top_gap_bound,
)
from irm_lens.measures.alignment import MIN_SPECIFICITY

SLOPE_STEPS = 120

"""How far back ``validation_lines`` compares each run's lowest validation loss."""


def validation_lines(losses: pd.DataFrame) -> str:
    """Per run (columns run, step, val_loss; val_loss empty between evaluations): its lowest
    validation loss, the step of it and the last step trained, and whether it was still falling."""
    parts = []
    for run, curve in losses.dropna(subset=["val_loss"]).groupby("run", sort=False):
        best = curve.loc[curve["val_loss"].idxmin()]
        best_step, last_eval = int(best["step"]), int(curve["step"].max())
        last = int(losses.loc[losses["run"] == run, "step"].max())
        state = (
            "still falling at its last evaluation"
            if best_step == last_eval
            else f"no lower in the {last_eval - best_step} steps after it"
        )
        before = curve[curve["step"] <= best_step - SLOPE_STEPS]
        if len(before):  # how fast it was still falling: a plateau or not
            drop = 1 - best["val_loss"] / before["val_loss"].iloc[-1]
            state += f"; {100 * drop:.1f} % below its loss {SLOPE_STEPS} steps before"
        parts.append(f"{run} {best['val_loss']:.3f} at step {best_step} of {last} ({state})")
    return "; ".join(parts)


def _earlier(runs: list[str]) -> str:
    if not runs:
        return ""
    return (
        f"; {', '.join(runs)}: the rows of an earlier invocation of the tier under other "
        "settings (a shorter schedule, say), shown until it runs again"
    )


def _final_irms(data: pd.DataFrame) -> pd.DataFrame:
    """Per run (in order), its best IRM's row, else its last snapshot's (a run may stop early)."""
    snapshots = data[data["irm"] == "snapshot"]
    last = snapshots.loc[snapshots.groupby("run", sort=False)["step"].idxmax()]
    best = data[data["irm"] == "best"].drop_duplicates("run")
    chosen = pd.concat([best, last[~last["run"].isin(best["run"])]])
    order = list(dict.fromkeys(data["run"]))
    return chosen.set_index("run").loc[order].reset_index()


def _trajectory_data(out: Path) -> pd.DataFrame:
    """The long tier's rows, each run's in step order (the tier's run order kept)."""
    data = pd.read_csv(out / "trajectory" / "data.csv")
    data["irm"] = data["irm"].fillna("snapshot") if "irm" in data else "snapshot"
    order = data["run"].map({run: i for i, run in enumerate(dict.fromkeys(data["run"]))})
    return data.assign(order=order).sort_values(["order", "step"], kind="stable")


@dataclass(frozen=True)
class LongRules:
    """The default tier's rules applied to the long tier's best IRMs (next-token, aligned)."""

    dominance: Verdict
    striation: Verdict
    consistency: Verdict


def _long_rules(
    data: pd.DataFrame, striation: StriationSummary, dominance: DominanceSummary
) -> LongRules:
    """The dominance, striation and consistency rules at each aligned next-token run's best (or
    last) IRM of the long tier, against the untrained null of the default tier (the same host
    and layers; the long tier's own step-0 IRMs share one init seed). Consistency reads top-1
    indices only (the tier keeps no top-5 sets); dominance, the top-to-runner-up bound of each
    run's ratio (``top_gap_bound``: the tier keeps no runner-up share)."""
    last = _final_irms(data)
    kept = last[(last["kind"] == "next-token") & (last["verdict"] == "aligned")]
    d_model = round(1 / dominance.uniform_share)
    ratios = kept["dominance"].tolist()
    return LongRules(
        dominance=dominant_rule(
            ratios,
            [top_gap_bound(r, d_model) for r in ratios],
            dominance.null_ratios,
            gaps_are_bounds=True,
        ),
        striation=striation_rule(
            kept["index_share"].tolist(),
            kept["layer_share"].tolist(),
            kept["cross_layer_corr"].tolist(),
            striation.null_index_shares,
            striation.null_cross_layer_corrs,
        ),
        consistency=consistency_rule([[int(i)] for i in kept["top_index"]], d_model),
    )


def long_tier_rules(out: Path, r: Results) -> LongRules | None:
    """``_long_rules`` on the committed trajectory, or None where the long tier has not run."""
    if read_typed(out, "trajectory", TrajectorySummary) is None:
        return None
    return _long_rules(_trajectory_data(out), r.striation, r.dominance)


def _cold_check(out: Path) -> str:
    """The measured cold ``make figures`` on the default budget, where ``costs.json`` holds one."""
    cold = cold_costs(out)
    if not cold:
        return ""
    total = sum(cold["timings"].values()) / 60
    return (
        f"; measured, the last cold `make figures` on the default budget took "
        f"{total:.1f} min before the report ({cold['written']}, `{COSTS}`)"
    )


def trajectory_section(out: Path) -> list[str]:
    """The long tier's trajectory and the budget it chose, with the dominance and striation
    rules applied to the best (or last) IRM of its aligned next-token runs ("not run" if
    absent)."""
    t = read_typed(out, "trajectory", TrajectorySummary)
    title = "## Training budget: the trajectory (`make figures TIER=long`)"
    if not t:
        return not_run_lines(title, "`make figures TIER=long`")
    data = _trajectory_data(out)
    rows = [
        f"| {r.run} | {r.step}{' (best)' if r.irm == 'best' else ''} | "
        f"{pct_ci(r.specificity, r.specificity_low, r.specificity_high)} | "
        f"{pct_ci(r.own_drop, r.own_low, r.own_high)} | {r.verdict} | {r.top_index} | "
        f"{num_ci(r.dominance, r.dominance_low, r.dominance_high, '.2f')} | "
        f"{r.index_share:.3f} | {r.cross_layer_corr:.3f} |"
        for r in data.itertuples()
    ]
    last = _final_irms(data)
    losses = pd.read_csv(out / "trajectory" / "losses.csv")
    rank = losses["run"].map({run: i for i, run in enumerate(t.runs)})
    losses = losses.iloc[rank.argsort(kind="stable")]  # the tier's run order
    steps = ", ".join(
        f"{r} {int(n)}" for r, n in losses.groupby("run", sort=False)["step"].max().items()
    )
    long = long_tier_rules(out, read_results(out))
    assert long is not None  # the trajectory's summary was read above
    budget = t.budget_step
    chosen = f"**{budget} steps**" if budget is not None else "**none**"
    return [
        title,
        "",
        "IRMs trained until their validation loss stopped improving or they reached the "
        f"tier's cap (steps trained: {steps}; "
        f"{'all runs finished' if t.finished else 'not all runs finished yet'}"
        f"{_earlier(t.earlier)}), each "
        f"measured at steps {t.schedule} it reached (step 0 is the untrained IRM, each run's "
        "control). "
        f"Budget chosen by `rules.budget.choose_budget`: {chosen}: {t.budget_reason} "
        f"(aligned emotions per step: {t.aligned_by_step}; measured training cost "
        f"{t.minutes_per_budget_step:.2f} min per step of the whole default run set on top "
        f"of about {t.fixed_min:.0f} min that do not depend on it, so a 60-minute cold "
        f"`make figures` allows steps <= {t.max_step_within_limit}: an estimate from the "
        f"long tier's rates{_cold_check(out)}).",
        "",
        f"Lowest validation loss: {validation_lines(losses)}.",
        "",
        "At each run's best IRM by validation loss, or its last snapshot where the best was "
        "not measured ("
        + ", ".join(f"{r.run}: {r.irm} at step {r.step}" for r in last.itertuples())
        + "), over the aligned next-token runs, against the default tier's untrained null "
        f"(the same host and layers): dominance **{long.dominance.verdict}** "
        f"({long.dominance.reason}); striation **{long.striation.verdict}** "
        f"({long.striation.reason}); the same top index, from top-1 indices alone: "
        f"**{long.consistency.verdict}** ({long.consistency.reason}).",
        "",
        f"A row is aligned when its specificity CI lies above {pct(MIN_SPECIFICITY)} and its "
        "own-voice NLL drop's CI above 0 (the rule of the alignment section): an IRM that "
        "raises every voice's NLL, its own least, is specific without being aligned. "
        + DOMINANCE_CI_NOTE,
        "",
        "| run | step | specificity [95 % CI] | own-voice NLL drop [95 % CI] | verdict "
        "| top index | dominance ratio [95 % CI] | index share | cross-layer corr |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "![trajectory](trajectory/figure.png)",
        "",
    ]


def long_verdict(rules: Rules) -> str:
    return rules["long"].verdict if "long" in rules else NOT_RUN
