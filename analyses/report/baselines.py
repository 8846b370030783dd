"""The report's steering baselines and longer runs, under "Why one index?", from the committed
``baselines`` and ``longer`` results."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analyses._summaries import BaselinesSummary, LongerSummary, SubspaceSummary, read_typed
from analyses.longer import SETTINGS, LongerJudgement, first_seed_tops, judge
from analyses.report.claims import not_run_lines, num_ci, pct_ci, step_cost
from analyses.rules.base import Verdict
from analyses.rules.explain import MIN_GROWTH

BASELINES_TITLE = "### Steering baselines, by the same yardsticks"
LONGER_TITLE = "### Trained longer where concentration was largest"
BASELINE_CLAIM = "why one index / {} against the IRM ({})"
LONGER_CLAIM = "why one index / dominance grows with length ({})"
SEEDS_CLAIM = "why one index / two seeds of the long tier share their top index"
SUBSPACE_TITLE = "### Do IRMs push in the same directions?"
SUBSPACE_CLAIM = "why one index / shared output subspace: {}"
MEASURES = {"specificity": "specificity", "voice": "voice classifier"}


def baseline_rules(out: Path) -> dict[str, Verdict | None]:
    """The baselines' and longer runs' verdicts by claim (None where not run)."""
    rules: dict[str, Verdict | None] = {}
    b = read_typed(out, "baselines", BaselinesSummary)
    for baseline in ("exported vectors", "bias-only IRM", "contrastive vector", "prompt"):
        for measure, label in MEASURES.items():
            verdicts = getattr(b, measure) if b else {}
            rules[BASELINE_CLAIM.format(baseline, label)] = verdicts.get(baseline)
    sub = read_typed(out, "subspace", SubspaceSummary)
    for kind in (
        "same emotion, two seeds",
        "IRM and its bias-only IRM",
        "IRM and its emotion's contrastive vector",
    ):
        rules[SUBSPACE_CLAIM.format(kind)] = sub.verdicts.get(kind) if sub else None
    judged = longer_judged(out)
    for setting in (*SETTINGS, "all settings"):
        rules[LONGER_CLAIM.format(setting)] = judged.concentration[setting] if judged else None
    rules[SEEDS_CLAIM] = judged.seeds if judged else None
    return rules


def longer_judged(out: Path) -> LongerJudgement | None:
    """The committed longer runs judged under the current rules (None where not run)."""
    path = out / "longer" / "data.csv"
    if read_typed(out, "longer", LongerSummary) is None or not path.exists():
        return None
    return judge(pd.read_csv(path), first_seed_tops(out))


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _name(r: pd.Series) -> str:
    seed = r["seed"]
    return str(r["intervention"]) + ("" if pd.isna(seed) else f" (seed {int(seed)})")


def baselines_lines(out: Path) -> list[str]:
    """Every baseline beside the IRM: specificity, voice classifier, fact retention, shape."""
    b = read_typed(out, "baselines", BaselinesSummary)
    if b is None:
        return not_run_lines(BASELINES_TITLE, "`make figures TIER=explain` (`--only baselines`)")
    data = pd.read_csv(out / "baselines" / "data.csv")
    order = [
        "host alone",
        "IRM",
        "exported vectors",
        "bias-only IRM",
        "contrastive vector",
        "prompt",
    ]
    data = data.assign(
        _emotion=pd.Categorical(data["emotion"], list(dict.fromkeys(data["emotion"]))),
        _what=pd.Categorical(data["intervention"], order),
    ).sort_values(["_emotion", "_what", "seed"], kind="stable")
    scales = data.dropna(subset=["scale"]).set_index("emotion")["scale"]
    irm_tops = data[data["intervention"] == "IRM"].groupby("emotion")["top_index"].apply(set)
    contrast = data[data["intervention"] == "contrastive vector"].set_index("emotion")
    same = [e for e in contrast.index if int(contrast.loc[e, "top_index"]) in irm_tops.get(e, ())]
    lines = [
        BASELINES_TITLE,
        "",
        "Every intervention measured with the same functions on the test questions: "
        "specificity (`irm_lens.evaluate.intervention_specificity`) and, on its greedy answers, "
        "the voice classifier's probability of the emotion and the share of answers that kept "
        "their fact (`intervention_answers`), each with a bootstrap 95 % CI over questions; the "
        "host alone is the answers' control. Beside the IRM and the two baselines above: **a "
        "contrastive steering vector**, per injected layer the mean residual stream "
        "(`hook_resid_mid`) over the answer tokens of the emotion's training answers minus the "
        f"same over the neutral ones (neutral: minus the other voices'), {b.contrast_rows} rows "
        "per voice, added where the IRM writes, times a scale chosen from "
        f"{', '.join(f'{s:g}' for s in b.scales)}: the most specific of those aligned on the "
        "validation questions (`analyses.baselines.choose_scale`; a large scale can score high "
        "by breaking the host) "
        f"(chosen: {', '.join(f'{e} {s:g}' for e, s in scales.items())}); and **prompting**, a "
        "system instruction (" + "; ".join(f'{e}: "{t}"' for e, t in b.instructions.items()) + ") "
        "in place of the chat template's default system message. Each baseline against the IRM "
        "per emotion (the IRM's value: the mean of its two seeds), by "
        "`analyses.rules.steering.vector_comparison`.",
        "",
    ]
    for baseline, verdict in b.specificity.items():
        voice = b.voice[baseline]
        name = "prompting" if baseline == "prompt" else f"the {baseline}"
        lines.append(
            f"- **{_sentence(name)} against the IRM: {verdict.verdict} on specificity, "
            f"{voice.verdict} on the voice classifier.** {_sentence(verdict.reason)}; "
            f"{voice.reason}."
        )
    lines += [
        "",
        f"The contrastive vector's top index is one of the IRMs' in {len(same)} of "
        f"{len(contrast)} emotions.",
        "",
        "| emotion | intervention | specificity [95 % CI] | P(own voice) [95 % CI] | facts "
        "kept [95 % CI] (n) | top index, dominance ratio, index share |",
        "|---|---|---|---|---|---|",
    ]
    for _, r in data.iterrows():
        spec = (
            "-"
            if pd.isna(r["specificity"])
            else f"{pct_ci(r['specificity'], r['specificity_low'], r['specificity_high'])} "
            f"({r['verdict']})"
        )
        shape = (
            "-"
            if pd.isna(r["top_index"])
            else f"{int(r['top_index'])}, {r['dominance']:.2f}, {r['index_share']:.2f}"
        )
        lines.append(
            f"| {r['emotion']} | {_name(r)} | {spec} | "
            f"{num_ci(r['voice'], r['voice_low'], r['voice_high'], '.2f')} | "
            f"{pct_ci(r['facts'], r['facts_low'], r['facts_high'])} ({int(r['facts_n'])}) | "
            f"{shape} |"
        )
    return [*lines, "", "![baselines](baselines/figure.png)", ""]


def longer_lines(out: Path) -> list[str]:
    """The longer runs: dominance over training, growth and the seeds' agreement."""
    s = read_typed(out, "longer", LongerSummary)
    judged = longer_judged(out)
    if s is None or judged is None:
        return not_run_lines(LONGER_TITLE, "`make figures TIER=explain` (`--only longer`)")
    runs = judged.runs
    status = (
        f"All {s.n_planned} runs measured."
        if s.finished
        else f"{len(s.runs)} of the {s.n_planned} planned runs measured; "
        "`make figures TIER=explain` (`--only longer`) trains and measures the rest."
    )
    cost = step_cost(s.seconds_by_run, len(s.runs))
    lines = [
        LONGER_TITLE,
        "",
        "At 14 steps the top index concentrated most with the L1 penalty on all layers and on "
        "the last quarter of the layers (q4), and the long tier trained one seed. These runs "
        "take those settings as far as the long tier (its schedule up to 480 steps, early stop "
        "after 120 steps without a lower validation loss): all layers + L1 and q4 for sadness "
        "and anger, and a second init seed (420) of the long tier's sadness and anger, each "
        "measured like the long tier's runs (dominance on the own-voice held-out rows; step 0 "
        f"is the run's own untrained IRM). {status}{cost} Growth: the best IRM's dominance "
        "over the first trained snapshot's, median with a bootstrap CI over aligned runs, "
        f"above {1 + MIN_GROWTH:.2f}x (`analyses.rules.explain.concentration_rule`).",
        "",
    ]
    for setting, verdict in judged.concentration.items():
        lines.append(
            f"- **Dominance grows with length, {setting}: {verdict.verdict}.** "
            f"{_sentence(verdict.reason)}."
        )
    seeds = judged.seeds
    lines += [
        f"- **Two seeds of the long tier share their top index: {seeds.verdict}.** "
        f"{_sentence(seeds.reason)} (best IRMs, seed 42 / seed 420; two uniform draws agree "
        "with probability 1 / d_model).",
        "",
        "| run | setting | best step | specificity [95 % CI] | top index, first trained "
        "snapshot / best | dominance: untrained, first trained, best [95 % CI] | growth |",
        "|---|---|---|---|---|---|---|",
    ]
    for _, r in runs.iterrows():
        lines.append(
            f"| {r['run']} | {r['setting']} | {int(r['step'])} | "
            f"{pct_ci(r['specificity'], r['specificity_low'], r['specificity_high'])} "
            f"({r['verdict']}) | {int(r['first_top'])} / {int(r['top_index'])} | "
            f"{r['untrained_dominance']:.2f}, {r['first_dominance']:.2f}, "
            f"{num_ci(r['dominance'], r['dominance_low'], r['dominance_high'], '.2f')} | "
            f"{r['growth']:.2f}x |"
        )
    return [*lines, "", "![longer](longer/figure.png)", ""]


def subspace_lines(out: Path) -> list[str]:
    """Shared output subspaces: seeds, the bias-only IRM and the contrastive vector."""
    sub = read_typed(out, "subspace", SubspaceSummary)
    if sub is None:
        return not_run_lines(SUBSPACE_TITLE, "`make figures TIER=explain` (`--only subspace`)")
    lines = [
        SUBSPACE_TITLE,
        "",
        "Two IRMs can disagree on their top index and still push in the same directions. Each "
        f"IRM's top output subspace (the {sub.rank} leading singular directions of its recorded "
        "outputs on the paper prompts, tokens and layers pooled; `irm_lens.measures.subspace`) "
        "compared by TransformerLens's normalized projection kernel "
        "(`transformer_lens.tools.analysis.projection_kernel`: 1 = the same subspace; two "
        f"random ones {sub.chance:.3f} on average) with the IRM of its emotion from the other "
        "seed, its bias-only IRM and its emotion's contrastive vector (each one vector per "
        "layer). Control: the untrained IRMs of the null in the trained IRM's place, against "
        "the same partner (not the partner's own init). Rule "
        "(`analyses.rules.steering.subspace_rule`): *shared beyond the null* when the median's "
        "95 % CI lies above the control's largest value, *as the null* when it reaches down to "
        "the control's median.",
        "",
    ]
    for kind, verdict in sub.verdicts.items():
        lines.append(f"- **{_sentence(kind)}: {verdict.verdict}.** {_sentence(verdict.reason)}.")
    return [*lines, "", "![subspace](subspace/figure.png)", ""]


def why_lines(out: Path) -> list[str]:
    """Every candidate explanation side by side: experiment, effect [CI], control, verdict."""
    path = out / "why" / "data.csv"
    if not path.exists():
        return []
    data = pd.read_csv(path)

    def effect(r: pd.Series) -> str:
        if pd.isna(r["effect"]):
            return "-"
        if pd.isna(r["low"]):
            return f"{r['effect']:.3g}"
        return f"{r['effect']:.3g} [{r['low']:.3g}, {r['high']:.3g}]"

    lines = [
        "Each candidate explanation, the experiment that tests it, its effect with the 95 % CI "
        "and the control it is read against (the sections below give the rules and the runs; "
        "`figures/why/data.csv`):",
        "",
        "| explanation | experiment | measure | effect [95 % CI] | control | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for _, r in data.iterrows():
        control = "-" if pd.isna(r["control"]) else f"{r['control']:.3g} ({r['control_label']})"
        lines.append(
            f"| {r['explanation']} | {r['experiment']} | {r['measure']} | {effect(r)} | "
            f"{control} | **{r['verdict']}** |"
        )
    return [*lines, "", "![why](why/figure.png)", ""]
