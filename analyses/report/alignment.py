"""The report's alignment section: NLL drops, the voice classifier and specificity per run."""

from __future__ import annotations

from typing import Any

import pandas as pd
from scipy.stats import binomtest

from analyses._summaries import (
    EvaluationSummary,
)
from analyses.report.claims import pct, pct_ci
from irm_lens.measures.alignment import MIN_SPECIFICITY


def evaluation_rows(e: EvaluationSummary) -> str:
    head = (
        "| run | target | NLL host | NLL +IRM | drop (nats) | drop | P(own voice) host [95 % CI] | "
        "P(own voice) +IRM [95 % CI] | NRC share host / +IRM / bank | facts host [95 % CI] | "
        "facts +IRM [95 % CI] |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|"
    )
    rows = [
        f"| {run} | {v['target']} | {v['nll_host']:.3f} | {v['nll_irm']:.3f} | "
        f"{v['nll_host'] - v['nll_irm']:+.3f} | {pct(v['nll_drop'])} | {_voice(v, 'voice_host')} "
        f"| {_voice(v, 'voice_irm')} | {pct(v['nrc_share_host'])} / {pct(v['nrc_share_irm'])} "
        f"/ {pct(v['nrc_share_reference'])} | {_share_ci(v['fact_retention_host'], e.eval_rows)} "
        f"| {_share_ci(v['fact_retention_irm'], e.eval_rows)} |"
        for run, v in e.by_run.items()
    ]
    return "\n".join([head, *rows])


def _voice(v: dict[str, Any], key: str) -> str:
    return pct_ci(v[key], v[key + "_low"], v[key + "_high"])


def voice_accuracy_text(e: EvaluationSummary) -> str:
    """The voice classifier's held-out accuracy, whole answers and cut to generated length."""
    full, cut = e.voice_accuracy["full"], e.voice_accuracy["cut"]
    return (
        f"held-out accuracy {pct(full['accuracy'])} [Wilson 95 % CI {pct(full['low'])}, "
        f"{pct(full['high'])}] on the {full['n']:.0f} val + test answers of the bank "
        f"({pct_ci(cut['accuracy'], cut['low'], cut['high'])} cut to the first "
        f"100 characters, about the generated length; chance {pct(full['chance'])})"
    )


def _share_ci(share: float, n: int) -> str:
    """A share of ``n`` questions with its Wilson 95 % CI."""
    if share != share or n <= 0 or abs(share * n - round(share * n)) > 1e-6:
        return pct(share)  # not a share of n questions: no CI
    ci = binomtest(round(share * n), n).proportion_ci(method="wilson")
    return f"{pct(share)} [{100 * ci.low:.0f}, {100 * ci.high:.0f}]"


def _next_token(e: EvaluationSummary, run: str) -> str:
    """The run's own-voice drop on the next token, where its own objective is another."""
    if e.objective[run] == "next token":
        return "(its objective)"
    n = e.next_token[run]
    return pct_ci(n["own_drop"], n["own_low"], n["own_high"])


def specificity_rows(e: EvaluationSummary) -> str:
    head = (
        "| run | target | objective | questions | own-voice NLL drop [95 % CI] | other voices' "
        "drop | specificity [95 % CI] | verdict | next-token own-voice drop [95 % CI] (host "
        "damage, not gating) |\n|---|---|---|---|---|---|---|---|---|"
    )
    rows = [
        f"| {run} | {v['emotion']} | {e.objective[run]} | {v['n_questions']} | "
        f"{pct_ci(v['own_drop'], v['own_low'], v['own_high'])} | {pct(v['other_drop'])} | "
        f"{pct_ci(v['specificity'], v['low'], v['high'])} | {v['verdict']} | "
        f"{_next_token(e, run)} |"
        for run, v in e.specificity.items()
    ]
    return "\n".join([head, *rows])


def _aligned_nll_drop(e: EvaluationSummary) -> str:
    """The median own-emotion next-token NLL drop over the aligned runs trained on the next
    token, then over every trained run."""
    aligned = [e.by_run[r]["nll_drop"] for r in e.aligned_runs if e.objective[r] == "next token"]
    median = pct(float(pd.Series(aligned).median())) if aligned else ""
    over_aligned = f"{median} over the {len(aligned)} aligned next-token runs, " if aligned else ""
    return f"{over_aligned}{pct(e.nll_drop_median)} over all {e.n_trained} trained runs"


def _spec_ci(v: dict[str, Any]) -> str:
    return f"{pct_ci(v['specificity'], v['low'], v['high'])} over {v['n_questions']} questions"


def selection_line(e: EvaluationSummary) -> str:
    """Whether each run's verdict holds on the questions its best-IRM selection never read."""
    changed = [
        f"{run} ({e.specificity[run]['verdict']} at {_spec_ci(e.specificity[run])} -> "
        f"{u['verdict']} at {_spec_ci(u)})"
        for run, u in e.unselected.items()
        if u["verdict"] != e.specificity[run]["verdict"]
    ]
    runs = list(e.unselected)
    n = {v["n_questions"] for v in e.unselected.values()}
    total = {e.specificity[r]["n_questions"] for r in runs}
    same = len(runs) - len(changed)
    return (
        "**Best-IRM selection.** Each run keeps the IRM with the lowest loss on its first "
        "validation rows (`max_val_rows`), and those questions are also among the questions "
        f"above. On the {'/'.join(map(str, sorted(n)))} of {'/'.join(map(str, sorted(total)))} "
        f"questions no selection read, {same}/{len(runs)} trained runs keep their verdict"
        + (f"; changed: {'; '.join(changed)}." if changed else ".")
        + " The long tier's runs (selected over many more validation passes) are not "
        "re-measured this way: their per-question NLLs are not kept in the repository."
    )


def alignment_lines(e: EvaluationSummary) -> list[str]:
    return [
        "## Alignment: did the IRMs learn their emotions?",
        "",
        f"Held-out test questions ({e.eval_rows} per emotion for NLL; greedy answers of up to "
        f"{e.eval_tokens} tokens to the run's own emotion questions for NRC and facts, the "
        "latter with a Wilson 95 % CI over those questions; the specificity table below "
        "carries the NLL's CIs over every held-out question). NLL drops in "
        f"{e.runs_with_nll_drop}/{e.n_trained} trained runs; median drop "
        f"{_aligned_nll_drop(e)}. The behavioural measure is a voice classifier "
        "(`irm_lens.measures.voice`: TF-IDF of character n-grams and logistic regression over "
        "the four voices, fitted on the bank's training-split answers; "
        f"{voice_accuracy_text(e)}): its mean probability of the run's own voice over the greedy "
        "answers, with a bootstrap 95 % CI over questions, for the host alone and with the "
        "IRM. The NRC emotion lexicon, kept as a column, barely sees this bank's voices (read "
        "it against the bank's own answers in that voice, its ceiling here). Specificity, "
        "below, is the measure the verdicts use. The original's-loss runs prompt the host as "
        "the original did (plain text, no chat template), so their host columns differ from "
        "the others'.",
        "",
        evaluation_rows(e),
        "",
        "![alignment](evaluation/figure.png)",
        "",
        "**Specificity** (`irm_lens.measures.alignment`): each IRM's relative NLL drop on its own "
        "voice's answers minus the mean drop on the other voices' parallel answers, on its own "
        "training objective (the next token; for the original's loss, the token two ahead, "
        "answer tokens only and padding excluded, in its plain-text prompt), over every "
        f"question not trained on ({' + '.join(e.heldout_splits)} splits), with a percentile "
        "bootstrap 95 % CI over questions. A run is *aligned* when this CI lies above "
        f"{MIN_SPECIFICITY:.2f} (a minimum effect, set post hoc: an untrained IRM's CI "
        "excludes 0 at 0.7 % in the long tier) and the own-voice drop's CI lies above 0 (an IRM "
        "that raises every voice's NLL, its own least, is specific but broke the host: not "
        "aligned; also set post hoc, when the four paper-loss runs, then judged on the next "
        "token, a target they were not trained on, had been labelled aligned). Each run is "
        "judged on its own objective, and the next-token drop is reported beside it as host "
        "damage: "
        f"{len(e.aligned_runs)}/{e.n_trained} trained runs "
        f"({', '.join(e.aligned_runs) or 'none'}). The untrained IRM is the control.",
        "",
        specificity_rows(e),
        "",
        selection_line(e),
        "",
    ]
