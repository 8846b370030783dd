"""The report's "Why one index?" section, from the committed ``explain`` result."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import pandas as pd

from analyses._summaries import ExplainSummary, PredictSummary, SteeringSummary, read_typed
from analyses.explain import Judgement, final_rows, judge
from analyses.predict import SCORES
from analyses.report.baselines import (
    baseline_rules,
    baselines_lines,
    longer_lines,
    subspace_lines,
    why_lines,
)
from analyses.report.claims import not_run_lines, num_ci, pct_ci, step_cost
from analyses.report.mechanism import NOT_RUN
from analyses.rules.base import Verdict
from analyses.rules.explain import MIN_GROWTH, MIN_RUNS, MIN_SEEDS, SHARED
from irm_lens.interventions.predict import validate_prediction

TITLE = "## Why one index? (`make figures TIER=explain`)"
PADDING_CLAIM = "why one index / a shared top index only when padding counts"
PADDING_LEARNED_CLAIM = f"{PADDING_CLAIM} (runs that learned their objective)"
PADDING_FIRST_CLAIM = f"{PADDING_CLAIM} (runs that learned their objective, first snapshot)"
GROWTH_CLAIM = "why one index / dominance grows with training, padding {}"
PREDICT_CLAIM = "why one index / the host alone names the pushed index ({})"
STEERING_CLAIM = "why one index / the IRM is a fixed steering vector"
STEERING_TITLE = "### Is the IRM a fixed steering vector?"
PADDING_TITLE = "### Does the original's padding objective give one index?"
PREDICT_TITLE = "### Does the host alone name the index? (`irm-lens predict`)"

T = TypeVar("T")


def judged(out: Path) -> Judgement | None:
    """The committed rows judged under the current rules (None where the tier has not run)."""
    target = out / "explain"
    if not (target / "data.csv").exists() or not (target / "null.csv").exists():
        return None
    return judge(pd.read_csv(target / "data.csv"), pd.read_csv(target / "null.csv"))


def explain_rules(out: Path) -> dict[str, Verdict | None]:
    """The tier's verdicts by claim (None where the tier has not run)."""
    j = judged(out)
    rules: dict[str, Verdict | None] = {
        PADDING_CLAIM: j.padding if j else None,
        PADDING_LEARNED_CLAIM: j.padding_learned if j else None,
        PADDING_FIRST_CLAIM: j.padding_first if j else None,
    }
    for group in ("counted", "masked"):
        rules[GROWTH_CLAIM.format(group)] = j.concentration[group] if j else None
    st = read_typed(out, "steering", SteeringSummary)
    rules[STEERING_CLAIM] = st.verdict if st else None
    p = read_typed(out, "predict", PredictSummary)
    for score in SCORES:
        rules[PREDICT_CLAIM.format(score)] = p.verdicts.get(score) if p else None
    return {**rules, **baseline_rules(out)}


def explain_verdicts(out: Path) -> dict[str, str]:
    """Entries for verdicts.json (``not run`` where the tier has not run)."""
    return {k: v.verdict if v else NOT_RUN for k, v in explain_rules(out).items()}


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def run_rows(last: pd.DataFrame) -> list[str]:
    """One table row per run at its last snapshot."""
    lines = [
        "| run | objective | step | own-objective specificity [95 % CI] | verdict | top "
        "index (runner-up, lead) | dominance [95 % CI] | index / layer share | pad-logit "
        "z of the top index |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in last.itertuples():
        lines.append(
            f"| {r.run} | {r.cell} | {int(r.step)} | "
            f"{num_ci(r.specificity, r.specificity_low, r.specificity_high)} | {r.verdict} | "
            f"{int(r.top_index)} ({int(r.runner_up)}, {r.gap:.2f}x) | "
            f"{num_ci(r.dominance, r.dominance_low, r.dominance_high, '.2f')} | "
            f"{r.index_share:.3f} / {r.layer_share:.3f} | {r.pad_logit_z:+.1f} |"
        )
    return lines


def cell_rows(j: Judgement) -> list[str]:
    """Per cell: the aligned runs and those that learned their objective (at the last snapshot,
    and at the first trained one), each with the most frequent top index among them and whether
    the cell shares it."""
    lines = [
        "| objective | runs | last snapshot, aligned: n, most frequent top (share), shares | "
        "last, learned own objective | first trained snapshot, learned own objective |",
        "|---|---|---|---|---|",
    ]

    def part(c: object) -> str:
        n, index, share, shares = c.n_aligned, c.index, c.share, c.shares  # type: ignore[attr-defined]
        if n == 0 or pd.isna(index):
            return f"{n}, -, -"
        return f"{n}, {int(index)} ({share:.0%}), {'yes' if shares else 'no'}"

    cells = zip(
        j.cells.itertuples(), j.cells_learned.itertuples(), j.cells_first.itertuples(), strict=True
    )
    for a, b, c in cells:
        lines.append(f"| {a.cell} | {a.n_runs} | {part(a)} | {part(b)} | {part(c)} |")
    return lines


SOURCES = {
    "default": "default tier (Adam, 14 steps)",
    "long": "long tier (Adam, best IRM)",
    "matrix": "layer sets and L1 (Adam)",
    "sgd": "SGD (original host)",
    "explain": "loss quirks (explain tier)",
    "masked": "top 5 or 5 random indices masked (Adam)",
    "rotated": "rotated host (Adam), read in the host basis",
    "longer": "longer runs (explain tier, best IRM)",
}


def source_rows(data: pd.DataFrame, scores: list[str], d_model: int) -> list[str]:
    """Per source of runs and predictor: top-k hits and the median rank percentile with its
    bootstrap CI (the same statistics as the overall rule, on each slice)."""
    lines = [
        "| runs | n | " + " | ".join(scores) + " |",
        "|---|---|" + "---|" * len(scores),
    ]
    for (source, objective), rows in data.groupby(["source", "objective"], sort=False):
        cells = []
        for score in scores:
            v = validate_prediction(rows[f"{score}_rank"].tolist(), d_model)
            cells.append(
                f"{v.in_top_k}/{v.n_runs} in top {v.k}; {v.median_percentile:.2f} "
                f"[{v.low:.2f}, {v.high:.2f}]"
            )
        name = f"{SOURCES.get(str(source), source)}, {objective}"
        lines.append(f"| {name} | {len(rows)} | {' | '.join(cells)} |")
    return lines


def _summary_and_data(out: Path, result: str, cls: type[T]) -> tuple[T, pd.DataFrame] | None:
    """``result``'s typed summary and its ``data.csv`` (None where the result has not run)."""
    summary = read_typed(out, result, cls)
    return None if summary is None else (summary, pd.read_csv(out / result / "data.csv"))


def steering_lines(out: Path) -> list[str]:
    """Is the IRM a fixed steering vector? The constant part of its outputs."""
    if (found := _summary_and_data(out, "steering", SteeringSummary)) is None:
        return not_run_lines(STEERING_TITLE, "`make figures TIER=explain`")
    s, data = found
    null = data[data["run_kind"] == "untrained"]
    return [
        STEERING_TITLE,
        "",
        "Each IRM's recorded outputs on the paper prompts split into their mean over tokens (one "
        "vector per layer: what a steering vector could write) plus the rest "
        "(`irm_lens.measures.steering`). Control: the untrained IRMs of the null (an untrained "
        f"MLP's biases give it a constant part too: {null['constant_share'].min():.2f}-"
        f"{s.null_max:.2f} of its sum of squares).",
        "",
        f"**The IRM is a fixed steering vector: {s.verdict.verdict}.** "
        f"{_sentence(s.verdict.reason)}. The "
        f"constant part's largest index is the IRM's top index in {s.same_top} of "
        f"{len(s.runs)} of them (untrained IRMs: {int(null['same_top'].sum())} of {len(null)}).",
        "",
        *_vector_lines(s, data),
        "![steering](steering/figure.png)",
        "",
    ]


def _vector_lines(s: SteeringSummary, data: pd.DataFrame) -> list[str]:
    """The constant part exported as steering vectors, and a bias-only IRM trained alike, each
    with its specificity beside the IRM's."""
    rows = data.dropna(subset=["vector_specificity"])

    def cell(r: pd.Series, prefix: str) -> str:
        value, low = r[f"{prefix}_specificity"], r[f"{prefix}_specificity_low"]
        return f"{pct_ci(value, low, r[f'{prefix}_specificity_high'])} ({r[f'{prefix}_verdict']})"

    table = [
        "| run | the IRM: specificity [95 % CI] | its vectors | a bias-only IRM trained alike | "
        "bias-only: top index (IRM's), dominance ratio |",
        "|---|---|---|---|---|",
        *(
            f"| {r['run']} | {cell(r, 'irm')} | {cell(r, 'vector')} | {cell(r, 'bias')} | "
            f"{int(r['bias_top1'])} ({int(r['irm_top'])}), {r['bias_ratio']:.2f} |"
            for _, r in rows.iterrows()
        ),
    ]
    return [
        "Two steering baselines, each measured like the IRM (specificity on the test questions, "
        "`irm_lens.evaluate.intervention_specificity`, the same code for all; control: the IRM "
        "itself). **Its own vectors** (`irm-lens export`): each next-token IRM's constant part, "
        "one vector per layer added where the IRM writes, at every position. **A bias-only "
        "IRM**: one learned vector per injected layer and no input, trained with the run's "
        "loss, training rows, step size, batch and steps (`irm_lens.interventions.predict."
        "fit_bias`; rows drawn at random rather than in epoch order).",
        "",
        f"- **The exported vectors against the IRM: {s.vectors.verdict}.** "
        f"{_sentence(s.vectors.reason)}.",
        f"- **A bias-only IRM against the IRM: {s.bias.verdict}.** {_sentence(s.bias.reason)}.",
        "",
        *table,
        "",
    ]


def predict_lines(out: Path) -> list[str]:
    """The predictor's validation: does the host alone name the index an IRM pushes on?"""
    if (found := _summary_and_data(out, "predict", PredictSummary)) is None:
        return not_run_lines(PREDICT_TITLE, "`make figures TIER=explain` (or `--only predict`)")
    p, data = found
    sources = ", ".join(f"{k} {v}" for k, v in data["source"].value_counts().items())
    predicted = ", ".join(f"{k}: {v}" for k, v in p.predicted.items())
    lines = [
        PREDICT_TITLE,
        "",
        f"Before any IRM is trained, {len(p.verdicts)} predictors rank the residual indices, "
        "each summed "
        "over the injected layers (`irm_lens.interventions.predict`): **gradient**, the "
        "magnitude of the alignment loss's gradient with respect to a zero bias at every "
        "layer's write point (`blocks.L.hook_attn_out`; where gradient descent pushes first); "
        "**consistency**, how far the training rows agree on that gradient's sign (|mean| / "
        "rms: Adam's per-coordinate step moves a coordinate at full rate when they do, "
        "whatever its size); **bias fit**, the |vector| of a bias-only IRM (one vector per "
        f"layer, no input) trained with Adam for {p.fit_steps} steps of 8 rows: a steering "
        "vector; **lever**, the host's final-norm gain times the unembedding row norm; "
        "**transport lever**, the same read through the rest of the network from each injected "
        "layer (TransformerLens's Jacobian lens, `transformer_lens.tools.analysis.JacobianLens`, "
        "fitted on bank rows; the norm of the centred logit change a unit push there causes); "
        "**stop lever**, the gain times the stop token's centred unembedding weight (the last "
        "three read no loss at all). Each trained run's top index is looked up "
        f"in the ranking for its emotion, objective and layers ({p.n_runs} runs: {sources}; "
        f"{p.rows_per_gradient} training rows per emotion and objective). Control: a random "
        "ranking (top-k hits binomial against k / d_model; median rank percentile 0.5). Runs "
        "of one emotion and objective share a prediction and often a top index, so the "
        "binomial p treats as independent what is not: read it as a bound, not a measure.",
        "",
    ]
    for score, verdict in p.verdicts.items():
        lines.append(
            f"- **{score}: {verdict.verdict}.** {_sentence(verdict.reason)}. By objective: "
            + "; ".join(
                f"{kind} {int(v['in_top_k'])}/{int(v['n_runs'])} in the top "
                f"{int(v['k'])}, median percentile {v['median_percentile']:.2f}"
                for kind, v in p.by_objective[score].items()
            )
            + "."
        )
    return [
        *lines,
        "",
        "By where the runs come from (top-10 hits; median rank percentile [95 % CI], random 0.50):",
        "",
        *source_rows(data, list(p.verdicts), p.d_model),
        "",
        f"The gradient's first index (all layers): {predicted}. The bias fit's largest: "
        + ", ".join(f"{k}: {v}" for k, v in p.fitted.items())
        + ".",
        "",
        "Run it on any host: `irm-lens predict HOST --emotion anger` (add `--loss paper` for the "
        "original's objective); on Llama-2-7b-chat, `irm-lens predict "
        "/models/Llama-2-7b-chat-hf --emotion anger --loss paper --device cuda --dtype float16` "
        "answers whether 1512 is the index an IRM would push on, beside its final-norm gain, "
        "unembedding row norm and massive-activation status.",
        "",
        "![predict](predict/figure.png)",
        "",
    ]


def explain_section(out: Path) -> list[str]:
    s = read_typed(out, "explain", ExplainSummary)
    if s is None:
        return [
            *not_run_lines(TITLE, "`make figures TIER=explain`"),
            *steering_lines(out),
            *baselines_lines(out),
            *subspace_lines(out),
            *predict_lines(out),
            *longer_lines(out),
        ]
    data = pd.read_csv(out / "explain" / "data.csv")
    last = final_rows(data)
    j = judged(out)
    assert j is not None  # the summary was read above
    status = (
        f"All {s.n_planned} runs measured."
        if s.finished
        else f"{len(s.runs)} of the {s.n_planned} planned runs measured; "
        "`make figures TIER=explain` measures the rest."
    )
    tops = ", ".join(f"{k} ({v})" for k, v in s.null_tops.items())
    cost = step_cost(s.seconds_by_run, len(s.runs))
    growth = "\n".join(
        f"- **Dominance grows with training, padding {g}: {v.verdict}.** {_sentence(v.reason)}."
        for g, v in j.concentration.items()
    )
    return [
        TITLE,
        "",
        *why_lines(out),
        PADDING_TITLE,
        "",
        "The original's loss has two quirks: every position predicts the token two ahead "
        "(t+2), and rows are EOS-padded to 128 tokens with the padding counted, so most of its "
        'terms are "EOS predicts EOS". Its 14-step runs here share one top index across '
        "emotions. If a shared, emotion-independent index comes from the padding objective, it "
        "should appear when padding counts and vanish when it is masked. The tier trains the "
        "2 x 2 {t+1, t+2} x {padding counted, masked} in the original's setting (plain text, "
        "lr 1e-4, 16 rows a step) for anger and sadness and two seeds, each judged on its own "
        "objective (held-out questions, 95 % CIs). " + status + cost,
        "",
        f"Rule (`analyses.rules.explain.padding_rule`): a cell shares an index when one "
        f"index tops at least {SHARED:.0%} of its aligned runs (at least {MIN_RUNS}, from at "
        f"least {MIN_SEEDS} init seeds: runs of one seed start from the same IRM; a condition "
        "set with the first seed's runs measured, before the second's) and the untrained "
        "IRMs do not already share it; *only with padding* when every counted cell shares one "
        "and no masked cell does, *not padding* when a masked cell shares one or no cell does. "
        "Control: the masked cells (same data, same offsets) and the untrained "
        f"IRMs of the tier's seeds and seeds 1-8 on the same rows (dominance median "
        f"{s.null_ratio_median:.2f}, max {s.null_ratio_max:.2f}; lead over the runner-up at "
        f"most {s.null_gap_max:.2f}x; top indices {tops}). Growth: dominance at the last "
        f"snapshot over the first trained one, median with a bootstrap CI over aligned runs, "
        f"above {1 + MIN_GROWTH:.2f}x.",
        "",
        f"**A shared top index only when padding counts: {j.padding.verdict}.** "
        f"{_sentence(j.padding.reason)}.",
        "",
        "The same rule over the runs that learned their own objective (own-voice drop CI above "
        "0, specific to the emotion or not: the original's loss can lower every voice's t+2 "
        f"loss alike): **{j.padding_learned.verdict}.** "
        f"{_sentence(j.padding_learned.reason)}. At the "
        "first trained snapshot (where the default tier's runs share one index): "
        f"**{j.padding_first.verdict}.** {_sentence(j.padding_first.reason)}.",
        "",
        growth,
        "",
        *cell_rows(j),
        "",
        *run_rows(last),
        "",
        "Pad-logit z: how much a push of the IRM's sign at its top index raises the pad "
        "token's logit over the vocabulary's through the final norm and unembedding (> 0 "
        "favours padding).",
        "",
        "![why one index](explain/figure.png)",
        "",
        *steering_lines(out),
        *baselines_lines(out),
        *subspace_lines(out),
        *predict_lines(out),
        *longer_lines(out),
    ]
