"""``REPORT.md``: each claim of the paper, what this run measured, and a plain verdict.

Reads only the ``summary`` of each result's config.json (written by the other scripts in the same
invocation), so every number in the report comes from the figures beside it. The verdict rules
live in ``analyses.rules.paper``; when and why they changed is told in the report itself
(``rules_account``), and a verdict that changes is kept in ``verdict_changes.json``.
"""

from __future__ import annotations

import datetime
import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from scipy.stats import binomtest

from analyses._common import KINDS, Context, read_summary
from analyses._report_answers import answer_table, change_lines, log_changes
from analyses._report_explain import explain_rules, explain_section, explain_verdicts
from analyses._report_mechanism import (
    DOMINANCE_CI_NOTE,
    NOT_RUN,
    mechanism_rules,
    mechanism_section,
    mechanism_verdicts,
)
from analyses._runset import stage_done, stage_seconds
from analyses._summaries import (
    AblationSummary,
    DominanceSummary,
    EvaluationSummary,
    Fig4ComparisonSummary,
    HostProfileSummary,
    LensesSummary,
    LogitAttributionSummary,
    MaskedSummary,
    MatrixSummary,
    MediationSummary,
    PropagationSummary,
    ResidualControlSummary,
    RotationSummary,
    Rules,
    StriationSummary,
    TimingSummary,
    TrajectorySummary,
    read_typed,
)
from analyses.rules.base import Verdict
from analyses.rules.paper import (
    DOMINANT_GAP,
    NOT_TESTED,
    PARTLY,
    REPRODUCED,
    consistency_rule,
    dominant_rule,
    lm_head_rule,
    residual_rule,
    striation_rule,
    top_gap_bound,
)
from irm_lens.files import write_text_atomic
from irm_lens.measures.alignment import MIN_SPECIFICITY
from irm_lens.stack import describe

KIND_LABEL = {
    "next-token": "Next-token runs",
    "paper loss": "Original's loss",
    "long": "Next-token runs trained to early stop (long tier)",
}
ORIGINAL_LOSS = "original's loss (paper-loss runs)"
"""The key of ``verdicts.json`` holding the paper-loss runs' verdict per claim."""
LONG_TIER = "next-token runs trained to early stop (long tier)"
"""The key of ``verdicts.json`` holding the long tier's verdict per claim (``not run`` for the
claims it does not measure, or when ``make figures TIER=long`` has not run)."""


def rules_account() -> list[str]:
    """How the verdicts are decided, and when the rules were written (true as of writing)."""
    return [
        "### How the verdicts are decided",
        "",
        "Each claim is a rule in `analyses/rules/paper.py` with an effect size against a "
        "control (the untrained null: untrained IRMs of different init seeds, recorded like "
        "the trained runs; chance overlap; or a rotated injection), thresholds as module "
        "constants, and a verdict of *reproduced*, *partly reproduced*, *not reproduced*, or "
        "*not tested* when the evidence cannot decide (fewer than 2 aligned runs, or nothing "
        "for the claim to be about); `tests/test_verdicts.py` builds inputs that reach every "
        "verdict of every rule. Only aligned runs count (specificity CI above "
        f"{_pct(MIN_SPECIFICITY)} and own-voice NLL drop CI above 0: the alignment section). "
        "History, as it happened: the rules were first written on 2026-12-02 after the "
        "numbers of earlier reports had been read; the default tier's runs and the long "
        "tier's were trained after that, the mechanism tier's (2026-12-01) before. Rules "
        "changed after results had been seen, each in git history: the minimum specificity "
        "(2026-12-02, after an untrained IRM had passed a CI-above-0 rule); an earlier LM-head "
        'rule (after a run had printed "reproduced"); and on 2026-12-07, after a review of '
        "the committed data: striation needs the index share above the layer share (the "
        "paper's contrast), every rule reads a null of untrained IRMs instead of one, and "
        "dominance is the top index's share over the runner-up's (comparable across "
        "d_model) instead of 10x uniform. Verdicts that changed are listed under "
        '"Verdict changes".',
        "",
    ]


def _over(s: StriationSummary | DominanceSummary | TimingSummary) -> str:
    """Which runs a summary's medians are over."""
    n = s.n_headline
    return (
        f"the {n} aligned next-token runs"
        if s.headline_aligned
        else (f"the {n} next-token runs (none is aligned)")
    )


def _pct(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:.1f} %"  # NaN: e.g. NRC has no "neutral" category


def striation_claim(s: StriationSummary) -> tuple[Rules, str]:
    null = s.null_index_shares
    text = (
        f"Index share of the variance of mean |output| (median over {_over(s)}) "
        f"{s.index_share_median:.3f} vs layer share {s.layer_share_median:.3f} (index above "
        f"layer in {s.index_over_layer_runs}/{s.n_headline} runs); on the signed mean map (the "
        f"paper's Fig. 2) {s.signed_index_share_median:.3f} vs {s.signed_layer_share_median:.3f}"
        f". The untrained null ({len(null)} IRMs of different init seeds): index share "
        f"{min(null):.3f} to {max(null):.3f}, cross-layer correlation "
        f"{min(s.null_cross_layer_corrs):.3f} to {max(s.null_cross_layer_corrs):.3f}; "
        f"{s.above_untrained_runs}/{s.n_headline} runs above its largest index share. "
        f"Permutation p < 0.01 in {s.significant_runs}/{s.n_headline} runs (the smallest "
        f"possible p is {s.p_min_possible:.4f}, which any cross-layer alignment reaches with "
        f"this many indices: p alone decides nothing). Cross-layer correlation of index "
        f"profiles: median {s.cross_layer_corr_median:.3f}. The shares' CIs resample runs."
    )
    return s.rules, text


def dominance_claims(s: DominanceSummary, host: HostProfileSummary) -> tuple[Rules, Rules, str]:
    """Consistency (the same index in every run) and dominance (far above uniform), apart."""
    counted = s.aligned_runs.get("next-token", [])
    ranks = ", ".join(f"{r}: {k}" for r, k in s.dominant_rank_by_run.items() if r in counted)
    others = ", ".join(f"{r}: {k}" for r, k in s.dominant_rank_by_run.items() if r not in counted)
    held = s.dominant_index
    held_hits = sum(s.top1_heldout_by_run.get(r) == held for r in counted)
    paper = [i for r, i in s.top1_by_run.items() if "paperloss" in r]  # run_specs' names
    paper_text = ""
    if paper:
        shared = max(paper, key=paper.count)
        paper_text = (
            f" The original's-loss runs' top indices: {paper} (index {shared} in "
            f"{paper.count(shared)}/{len(paper)}; the rules read them only where aligned on "
            f"their own objective: {len(s.aligned_runs.get('paper loss', []))} of them)."
        )
    text = (
        f"Most frequent top index over {_over(s)}: {s.dominant_index}, ranked first in "
        f"{s.dominant_top1_runs}; its median share of total |output| "
        f"{_pct(s.dominant_share_median)} (uniform: {_pct(s.uniform_share)}); median top-1 "
        f"share {_pct(s.top1_share_median)}. Its rank per aligned next-token run: "
        f"{ranks or 'none'} (not counted: {others or 'none'}). The untrained null's top "
        f"indices ({len(s.null_top1)} init seeds): {s.null_top1}; their dominance ratios "
        f"{min(s.null_ratios):.2f} to {max(s.null_ratios):.2f}, top over runner-up "
        f"{min(s.null_gaps):.2f}x to {max(s.null_gaps):.2f}x. Dominance is judged by the top "
        f"index's share over the runner-up's, which means the same at any d_model: Llama-2's "
        f"1512 would need its |output| at least {DOMINANT_GAP:g}x the next index's in the "
        f"median aligned run (the top share x d_model grows with d_model for the same shape). "
        f"On held-out questions (chat format) the top index is {held} in "
        f"{held_hits}/{len(counted)} aligned next-token runs. Host's massive-activation dims: "
        f"{s.host_massive_dims}; dominant index is one of them: "
        f"{'yes' if host.dominant_is_massive else 'no'}.{paper_text}"
    )
    return s.consistency_rules, s.dominance_rules, text


def _direction(s: TimingSummary, key: str, null: list[float]) -> str:
    """How many counted runs put more of their top-k before the midpoint than the null's median."""
    runs = s.aligned_runs
    above = sum(s.by_run[r][key] > float(pd.Series(null).median()) for r in runs)
    return f"{above}/{len(runs)}"


def timing_claim(s: TimingSummary) -> tuple[Rules, str]:
    null_true = float(pd.Series(s.null_before_midpoint).median())
    null_file = float(pd.Series(s.null_before_midpoint_file_order).median())
    text = (
        f"Share of each run's top-{s.k} |output| values (per paper prompt, pooled) that fall "
        f"before the sequence's midpoint, over {_over(s)}: median "
        f"{_pct(s.trained_before_midpoint_median)} in sequence order, "
        f"{_pct(s.trained_before_midpoint_file_order_median)} in the order the original drew "
        f"its histogram (token files natural-sorted by name: the prompt's last token, the "
        f"generated tokens, then the prompt from BOS); the untrained null's median "
        f"{_pct(null_true)} and {_pct(null_file)}. Direction (runs above the null's median): "
        f"{_direction(s, 'before_midpoint', s.null_before_midpoint)} in sequence order, "
        f"{_direction(s, 'before_midpoint_file_order', s.null_before_midpoint_file_order)} in "
        f"the original's order. The rule reads the top-{s.k_scaled}, the same fraction of each "
        f"token's values as the top-{s.k} of 4096 x 32 on Llama-2-7B. On the first token alone: "
        f"median {_pct(s.trained_on_first_token_median)}; on prompt "
        f"tokens: median {_pct(s.trained_on_prompt_median)}. The paper prompts are recorded as "
        f"the original did (BOS + prompt, no chat template, sampled to 100 tokens); this chat "
        f"host often ends its answer early (generated tokens per prompt: median "
        f"{s.generated_tokens_median:.0f}, fewest {s.generated_tokens_min}). On held-out "
        f"questions in the chat format the IRMs were trained on, "
        f"{_pct(s.heldout_before_midpoint)} fall before the midpoint "
        f"({_pct(s.heldout_on_prompt)} on prompt tokens)."
    )
    return s.rules, text


def _linearity(ratio: float) -> str:
    """Whether persistence depends on the push's size (1 = linear)."""
    if abs(ratio - 1.0) <= 0.2:
        return " (the response is linear in the push's size)"
    return (
        f" (the later layers' response is not linear in the push's size: {ratio:.2f}x "
        f"per unit at a tenth of it: these hold for the push measured)"
    )


def residual_claim(
    p: PropagationSummary, control: ResidualControlSummary | None, striation: Rules
) -> tuple[Rules, str]:
    """The rotated-injection control decides (``rules.paper.residual_rule``); the
    propagation numbers describe the skip path, which carries any perturbation by construction."""
    dom = str(p.dominant_index)
    own, rand = p.persistence_median[dom], p.random_persistence_median
    rules: Rules = {}
    for kind in KINDS:
        striated = striation[kind].verdict in (REPRODUCED, PARTLY)
        shares = None if control is None else control.shares.get(kind)
        if control is None or shares is None:
            why = (
                "the rotated-injection control was not run"
                if striated
                else ("no stripes to explain")
            )
            rules[kind] = Verdict(NOT_TESTED, why, {})
            continue
        rules[kind] = residual_rule(
            shares["delta"], shares["output"], control.null_shares, striated=striated
        )
    text = (
        f"A perturbation added at layer 0 stays at the same index in later layers: median "
        f"persistence {own:.2f} for index {dom}, {rand:.2f} for random indices (1 = carried "
        f"unchanged; positions after the first; a push 10x smaller moves it "
        f"{p.linearity_median:.2f}x as much per unit). The first run's own output at index "
        f"{dom} is carried with a median coefficient {p.irm_carried_median:.2f} (leak to other "
        f"indices {p.irm_leak_median:.2f}). The skip path carries any layer-0 perturbation "
        f"forward before later layers respond, so staying at the same index is expected of "
        f"every index and cannot test the explanation{_linearity(p.linearity_median)}; the "
        f"control that can fail injects each layer's output "
        f"through a fixed random rotation (`residual_control`). That control separates the "
        f"host's residual basis from the IRM's own coordinates; it does not by itself separate "
        f"the skip path from other properties tied to that basis (the norm gains), which the "
        f"rotated-basis host of the mechanism tier addresses."
    )
    return rules, text


def lm_head_claim(
    h: HostProfileSummary,
    lg: LogitAttributionSummary,
    mediation: MediationSummary | None,
    dominance: Rules,
) -> tuple[Rules, str]:
    """Mediation through the final norm's scale and the index's entropy lever against every
    index (``rules.paper.lm_head_rule``); not tested when no index dominates."""
    dom = str(h.dominant_index)
    info = h.indices[dom]
    rules: Rules = {}
    for kind in KINDS:
        runs = {} if mediation is None else mediation.by_kind.get(kind, {})
        lever = float("nan") if mediation is None else mediation.lever_percentile
        rules[kind] = lm_head_rule(
            runs.get("gains", []),
            runs.get("frozen_gains", []),
            lever,
            dominated=dominance[kind].verdict == REPRODUCED,
        )
    shift, random_shift = lg.entropy_shift_x8[dom], lg.random_entropy_shift_x8_median
    text = (
        f"Index {dom} (the most frequent top index): final-norm gain {info['final_gain']:.3g} "
        f"(rank {info['final_gain_rank']} of {h.d_model} from the smallest; median gain "
        f"{h.median_final_gain:.3g}); largest |residual| {info['max_over_median']:.1f}x the "
        f"median index's. On the first paper prompt alone, scaling it before the final norm "
        f"x1 -> x8 moves next-token entropy by {shift:+.3f} nats and "
        f"{len(lg.random_indices)} random indices a median |{random_shift:.3f}| (an "
        f"illustration; the test over every index and held-out question follows). Its "
        f"direct share of the predicted token's logit, both "
        f"centred on their mean over the vocabulary: median "
        f"{lg.centred_share_of_predicted_logit_median[dom]:.3g}."
    )
    if mediation is not None:
        m = mediation
        massive = (
            f"; the massive dim {m.massive_index} beats "
            f"{_pct(m.lever_massive_percentile or float('nan'))}"
            if m.massive_index is not None
            else ""
        )
        text += (
            f" Against all {h.d_model} indices (x8 before the final norm, at the first "
            f"answer position of {m.n_positions} held-out questions), index {m.dominant_index}'s "
            f"entropy lever beats {_pct(m.lever_percentile)} of them (its mean |change| "
            f"{m.lever_dominant:.3g} nats, median index {m.lever_median:.3g}; strongest levers "
            f"{m.lever_top_indices}{massive})."
        )
    return rules, text


def ablation_text(a: AblationSummary, dominant: int) -> str:
    lines = []
    for index, table in a.by_index.items():
        nll, kl = table["nll"], table["kl_to_irm"]
        gap = nll["host"] - nll["irm"]
        undone = (nll["irm_zero"] - nll["irm"]) / gap if gap else float("nan")
        label = "the most frequent top index" if int(index) == dominant else "massive dim"
        line = (
            f"- index {index} ({label}), run `{a.run}`, {a.n_rows} held-out {a.emotion} "
            f"questions: {a.emotion} NLL host {nll['host']:.3f}, IRM {nll['irm']:.3f}; zeroed "
            f"in the IRM output {nll['irm_zero']:.3f} ({_pct(undone)} of the IRM's NLL gain "
            f"undone; KL to the IRM {kl['irm_zero']:.4f}); zeroed in the residual stream "
            f"{nll['resid_zero']:.3f} (KL {kl['resid_zero']:.4f}); IRM output x2 "
            f"{nll['scale_2']:.3f}."
        )
        if "nrc_share" in table:
            nrc, facts = table["nrc_share"], table["fact_retention"]
            line += (
                f" NRC {a.emotion} share of greedy answers: host {_pct(nrc['host'])}, IRM "
                f"{_pct(nrc['irm'])}, index zeroed in the IRM output {_pct(nrc['irm_zero'])}; "
                f"fact retention host {_pct(facts['host'])}, IRM {_pct(facts['irm'])}."
            )
        lines.append(line)
    each = "; ".join(
        f"{run}: index {o['index']} {_pct(o['undone'])} (controls "
        f"{_pct(o['controls_undone_median'])})"
        for run, o in a.own_top.items()
    )
    lines.append(
        f"- each aligned next-token run's own top index zeroed in its output undoes a median "
        f"{_pct(a.own_top_undone_median)} of its NLL gain on {a.n_rows} held-out "
        f"questions, against {_pct(a.own_controls_undone_median)} for random indices of "
        f"matched magnitude (5 among its next 20 largest): {each}."
    )
    return "\n".join(lines)


def concept_lines(c: dict[str, Any]) -> list[str]:
    """The clamp check on a neuron whose decoded tokens form one concept (digits)."""
    if not c.get("found"):
        return ["No late-layer neuron decodes to digits only on this host: no concept clamp.", ""]
    by = ", ".join(f"{k}: {v:.3g}" for k, v in c["mass_by_clamp"].items())
    return [
        f"Clamp validation on a concept neuron: {c['n_found']} neurons in the upper half of the "
        f"layers decode to digits only; the strongest, {c['neuron']}, promotes "
        f"{c['tokens']!r}. After {c['prompt']!r}, the total next-token probability of its 8 "
        f"decoded tokens is {c['mass_unclamped']:.3g} unclamped and, with the neuron clamped to "
        f"each value, {by}.",
        "",
    ]


def direct_units(s: LensesSummary) -> str:
    """The attribution read at the final residual's scale."""
    return (
        f" (read at the residual entering each unit's layer, as published; read instead as the "
        f"drop when a unit is taken out of the final residual, the top units are "
        f"{', '.join(s.top_direct_units)}, top 10 in layers "
        f"{', '.join(str(x) for x in s.direct_top10_layers)})"
    )


def lens_section(s: LensesSummary | None) -> list[str]:
    """The neuron-level lenses applied to the dominant index (empty if not run)."""
    if s is None:
        return []
    dom = str(s.dominant_index)
    tokens = "; ".join(
        f"index {i}: {', '.join(repr(t) for t in ts)}" for i, ts in s.promoted_tokens.items()
    )
    writes = ", ".join(f"{i}: {v:.1f}x" for i, v in s.subspace_write_max_over_chance.items())
    reads = ", ".join(f"{i}: {v:.1f}x" for i, v in s.subspace_read_v_max_over_chance.items())
    weights = ", ".join(f"{w:.3f}" for w in s.top_value_neurons_weight_on_dominant)
    return [
        "## Neuron-level lenses on the dominant index",
        "",
        f"LM-head decoding (tokens promoted per unit): {tokens}. Largest share of the index in "
        f"any head's write subspace (W_O), over chance: {writes}; in any head's value-read "
        f"subspace: {reads}. After {s.prompt!r} the host predicts "
        f"{s.predicted_token!r}; top value units by log-probability attribution: "
        f"{', '.join(s.top_value_units)}"
        + direct_units(s)
        + f". The top 10 value neurons' output weight on index "
        f"{dom}, as a fraction of their norm: {weights} (a random direction: about "
        f"{s.uniform_weight_share:.3f}). The top value neuron ranks "
        f"{s.axg_rank_of_top_value_neuron} by activation x gradient. Clamping the top "
        f"value neuron of the upper half of the layers ({s.clamped_neuron}) to 30 moves the "
        f"next-token probability of its first decoded token {s.clamp_top_token!r} from "
        f"{s.clamp_prob_before:.3g} to {s.clamp_prob_at_30:.3g}.",
        "",
        *concept_lines(s.concept),
        "![lenses](lenses/figure.png)",
        "",
    ]


def evaluation_rows(e: EvaluationSummary) -> str:
    head = (
        "| run | target | NLL host | NLL +IRM | drop (nats) | drop | P(own voice) host [95 % CI] | "
        "P(own voice) +IRM [95 % CI] | NRC share host / +IRM / bank | facts host [95 % CI] | "
        "facts +IRM [95 % CI] |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|"
    )
    rows = [
        f"| {run} | {v['target']} | {v['nll_host']:.3f} | {v['nll_irm']:.3f} | "
        f"{v['nll_host'] - v['nll_irm']:+.3f} | {_pct(v['nll_drop'])} | {_voice(v, 'voice_host')} "
        f"| {_voice(v, 'voice_irm')} | {_pct(v['nrc_share_host'])} / {_pct(v['nrc_share_irm'])} "
        f"/ {_pct(v['nrc_share_reference'])} | {_share_ci(v['fact_retention_host'], e.eval_rows)} "
        f"| {_share_ci(v['fact_retention_irm'], e.eval_rows)} |"
        for run, v in e.by_run.items()
    ]
    return "\n".join([head, *rows])


def _voice(v: dict[str, Any], key: str) -> str:
    return f"{_pct(v[key])} [{_pct(v[key + '_low'])}, {_pct(v[key + '_high'])}]"


def voice_accuracy_text(e: EvaluationSummary) -> str:
    """The voice classifier's held-out accuracy, whole answers and cut to generated length."""
    full, cut = e.voice_accuracy["full"], e.voice_accuracy["cut"]
    return (
        f"held-out accuracy {_pct(full['accuracy'])} [Wilson 95 % CI {_pct(full['low'])}, "
        f"{_pct(full['high'])}] on the {full['n']:.0f} val + test answers of the bank "
        f"({_pct(cut['accuracy'])} [{_pct(cut['low'])}, {_pct(cut['high'])}] cut to the first "
        f"100 characters, about the generated length; chance {_pct(full['chance'])})"
    )


def _share_ci(share: float, n: int) -> str:
    """A share of ``n`` questions with its Wilson 95 % CI."""
    if share != share or n <= 0 or abs(share * n - round(share * n)) > 1e-6:
        return _pct(share)  # not a share of n questions: no CI
    ci = binomtest(round(share * n), n).proportion_ci(method="wilson")
    return f"{_pct(share)} [{100 * ci.low:.0f}, {100 * ci.high:.0f}]"


def _next_token(e: EvaluationSummary, run: str) -> str:
    """The run's own-voice drop on the next token, where its own objective is another."""
    if e.objective[run] == "next token":
        return "(its objective)"
    n = e.next_token[run]
    return f"{_pct(n['own_drop'])} [{_pct(n['own_low'])}, {_pct(n['own_high'])}]"


def specificity_rows(e: EvaluationSummary) -> str:
    head = (
        "| run | target | objective | questions | own-voice NLL drop [95 % CI] | other voices' "
        "drop | specificity [95 % CI] | verdict | next-token own-voice drop [95 % CI] (host "
        "damage, not gating) |\n|---|---|---|---|---|---|---|---|---|"
    )
    rows = [
        f"| {run} | {v['emotion']} | {e.objective[run]} | {v['n_questions']} | "
        f"{_pct(v['own_drop'])} [{_pct(v['own_low'])}, {_pct(v['own_high'])}] | "
        f"{_pct(v['other_drop'])} | {_pct(v['specificity'])} [{_pct(v['low'])}, "
        f"{_pct(v['high'])}] | {v['verdict']} | {_next_token(e, run)} |"
        for run, v in e.specificity.items()
    ]
    return "\n".join([head, *rows])


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
        return [title, "", "Not run here: `make figures TIER=long`.", ""]
    data = _trajectory_data(out)
    rows = [
        f"| {r.run} | {r.step}{' (best)' if r.irm == 'best' else ''} | {_pct(r.specificity)} "
        f"[{_pct(r.specificity_low)}, "
        f"{_pct(r.specificity_high)}] | {_pct(r.own_drop)} [{_pct(r.own_low)}, "
        f"{_pct(r.own_high)}] | {r.verdict} | {r.top_index} | {r.dominance:.2f} "
        f"[{r.dominance_low:.2f}, {r.dominance_high:.2f}] | {r.index_share:.3f} | "
        f"{r.cross_layer_corr:.3f} |"
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
        f"A row is aligned when its specificity CI lies above {_pct(MIN_SPECIFICITY)} and its "
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


# The report reads only committed results (the run cache, where it is here, for per-run costs):
# `python -m analyses --only report` rewrites it on a fresh clone without training anything.
NEEDS_RUN_SET = False

COSTS = "costs.json"
"""Where the last cold invocation's wall-clock seconds per step are kept beside the report."""


def keep_cold_costs(ctx: Context) -> None:
    """A cold invocation (nothing cached) keeps its wall-clock costs in ``costs.json``, before
    any section of the report reads them."""
    if ctx.cold and ctx.timings:
        record = {
            "timings": ctx.timings,
            "threads": torch.get_num_threads(),
            "written": datetime.date.today().isoformat(),
            "stages": {n: stage_seconds(ctx.runs[n]) for n in ctx.specs},
        }
        write_text_atomic(ctx.out / COSTS, json.dumps(record, indent=2))


def cold_costs(out: Path) -> dict[str, Any]:
    """The last cold invocation's ``costs.json`` (empty where none was kept)."""
    path = out / COSTS
    return dict(json.loads(path.read_text())) if path.exists() else {}


def timing_lines(ctx: Context) -> list[str]:
    """The wall-clock cost of a cold ``make figures`` (kept in ``costs.json`` by the last
    invocation that found nothing cached), and of this invocation when it was not cold."""
    lines = []
    if cold := cold_costs(ctx.out):
        steps = ", ".join(f"{name} {sec:.0f} s" for name, sec in cold["timings"].items())
        total = sum(cold["timings"].values())
        lines.append(
            f"A cold `make figures` (nothing cached; {cold['written']}, {cold['threads']} CPU "
            f"threads), before the report: **{total / 60:.1f} min** ({steps}); add about 1.5 "
            f"min of `make install` on a fresh clone."
        )
    if ctx.timings and not ctx.cold:
        total = sum(ctx.timings.values())
        lines.append(f"This invocation (partly cached): {total / 60:.1f} min.")
    return [*lines, "", "Per run and stage (when it ran):", ""] if lines else []


def cost_rows(ctx: Context) -> str:
    """Seconds per run and stage: from the run cache, or where it is not here (a fresh clone
    writing the report from the committed results), as the cold invocation kept them."""
    dirs = {name: spec.directory(ctx.figures) for name, spec in ctx.specs.items()}
    if all(stage_done(d, "train") for d in dirs.values()):
        stages, source = {name: stage_seconds(d) for name, d in dirs.items()}, ""
        missing = "cached"  # the stage ran in an earlier invocation
    else:
        stages = cold_costs(ctx.out).get("stages", {})
        source = f"The run cache is not here: as `{COSTS}` kept them (its cold invocation).\n\n"
        missing = "not kept"
    rows = ["| run | kind | train s | record s | evaluate s |", "|---|---|---|---|---|"]
    for name, spec in ctx.specs.items():
        t = stages.get(name, {})
        cells = [
            f"{t[k + '_s']:.0f}" if k + "_s" in t else missing if k in spec.stages else "-"
            for k in ("train", "record", "evaluate")
        ]
        rows.append(f"| {name} | {spec.kind} | {' | '.join(cells)} |")
    return source + "\n".join(rows)


@dataclass(frozen=True)
class Results:
    """The typed summaries the report is written from (every one required)."""

    host: HostProfileSummary
    logits: LogitAttributionSummary
    ablation: AblationSummary
    evaluation: EvaluationSummary
    fig4: Fig4ComparisonSummary
    striation: StriationSummary
    dominance: DominanceSummary
    timing: TimingSummary
    propagation: PropagationSummary


def read_results(out: Path) -> Results:
    typed = {
        "host_profile": read_typed(out, "host_profile", HostProfileSummary),
        "logit_attribution": read_typed(out, "logit_attribution", LogitAttributionSummary),
        "ablation": read_typed(out, "ablation", AblationSummary),
        "evaluation": read_typed(out, "evaluation", EvaluationSummary),
        "fig4_comparison": read_typed(out, "fig4_comparison", Fig4ComparisonSummary),
        "striation": read_typed(out, "striation", StriationSummary),
        "dominant_index": read_typed(out, "dominant_index", DominanceSummary),
        "fig3_timing": read_typed(out, "fig3_timing", TimingSummary),
        "propagation": read_typed(out, "propagation", PropagationSummary),
    }
    missing = [k for k, v in typed.items() if v is None]
    if missing:
        raise FileNotFoundError(f"report needs the results {missing} in {out}; run them first.")
    return Results(*typed.values())  # type: ignore[arg-type]


Claim = tuple[str, Rules, str, list[str]]


def claims_of(out: Path, r: Results) -> list[Claim]:
    """Each claim of the paper: its title, verdict per loss kind, text and figures."""
    r_str, t_str = striation_claim(r.striation)
    r_con, r_dom, t_dom = dominance_claims(r.dominance, r.host)
    r_time, t_time = timing_claim(r.timing)
    control = read_typed(out, "residual_control", ResidualControlSummary)
    r_res, t_res = residual_claim(r.propagation, control, r_str)
    r_lm, t_lm = lm_head_claim(
        r.host, r.logits, read_typed(out, "mediation", MediationSummary), r_dom
    )
    long = long_tier_rules(out, r)
    if long is not None:  # the same rules at the long tier's IRMs trained to early stop
        r_dom, r_str = {**r_dom, "long": long.dominance}, {**r_str, "long": long.striation}
        r_con = {**r_con, "long": long.consistency}
    return [
        (
            "Large IRM outputs form vertical striations by residual index",
            r_str,
            t_str,
            ["fig2_heatmaps", "fig4_comparison", "striation"],
        ),
        ("The same residual index tops every alignment", r_con, t_dom, ["dominant_index"]),
        (
            "One residual index dominates every alignment (1512 on Llama-2-7B)",
            r_dom,
            "",
            ["host_profile"],
        ),
        ("Most large outputs happen early in inference", r_time, t_time, ["fig3_timing"]),
        (
            "The residual architecture explains the striations",
            r_res,
            t_res,
            ["propagation", "residual_control"],
        ),
        (
            "The dominant index acts through the LM head / final norm, not as a feature",
            r_lm,
            t_lm,
            ["mediation", "logit_attribution", "host_profile"],
        ),
    ]


def header_lines(ctx: Context, claims: list[Claim]) -> list[str]:
    f = ctx.figures
    return [
        "# irm_lens report: the IRM paper's claims on " + f.host_label,
        "",
        "Written by `make figures` (`analyses/report.py`); every number below comes from the "
        "results beside this file. Settings: "
        f"host `{f.host_label}`, preset `{f.preset}`, seeds {list(f.seeds)}, emotions "
        f"{list(f.emotions)}, dtype {f.dtype}; {len(ctx.specs)} runs "
        f"({len(ctx.trained('next-token'))} next-token, {len(ctx.trained('paper loss'))} paper "
        f"loss, {len(ctx.null)} untrained: the null). Verdict rules: "
        '`analyses/rules/paper.py`; see "How the verdicts are decided" below.',
        "",
        f"Software: {describe()}, Python {platform.python_version()} (`requirements.lock`); "
        "the host's KV-cache generation passed irm_lens's self-check (`irm_lens.canary`) "
        "before any run was trained or recorded.",
        "",
        "## Verdicts",
        "",
        "Over aligned runs only, next-token runs and the original's loss (paper-loss runs) apart; "
        f"the next-token and original's-loss columns judge the default budget's runs (next-token"
        f" {_budget(ctx, 'next-token')}, seeds {list(f.seeds)}; original's loss "
        f"{_budget(ctx, 'paper loss')}, seed {f.seeds[0]}), the long tier column applies the "
        "striation, consistency and dominance rules to the long tier's IRMs trained until their "
        "validation loss stopped improving (each run's best; first seed only), and says "
        "`not run` for the claims that tier does not measure.",
        "",
        *answer_table([(t, rules) for t, rules, _, _ in claims], _budget(ctx, "next-token")),
        "",
        *rules_account(),
        *change_lines(ctx.out),
    ]


def _budget(ctx: Context, kind: str) -> str:
    """The optimizer steps the run set trained its runs of ``kind`` for."""
    steps = sorted(
        {s.config.max_steps for s in ctx.specs.values() if s.kind == kind},
        key=lambda n: (n is None, n or 0),
    )
    if not steps:
        return "no runs"
    return ", ".join("to early stop" if n is None else f"{n} steps" for n in steps)


def _long_verdict(rules: Rules) -> str:
    return rules["long"].verdict if "long" in rules else NOT_RUN


def _aligned_nll_drop(e: EvaluationSummary) -> str:
    """The median own-emotion next-token NLL drop over the aligned runs trained on the next
    token, then over every trained run."""
    aligned = [e.by_run[r]["nll_drop"] for r in e.aligned_runs if e.objective[r] == "next token"]
    median = _pct(float(pd.Series(aligned).median())) if aligned else ""
    over_aligned = f"{median} over the {len(aligned)} aligned next-token runs, " if aligned else ""
    return f"{over_aligned}{_pct(e.nll_drop_median)} over all {e.n_trained} trained runs"


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
        f"{MIN_SPECIFICITY:.2f} (a minimum effect, added after the long tier showed an untrained "
        "IRM's CI excluding 0 at 0.7 %) and the own-voice drop's CI lies above 0 (an IRM that "
        "raises every voice's NLL, its own least, is specific but broke the host: not aligned; "
        "this condition was added after a first version of this table had labelled the four "
        "paper-loss runs aligned, which were then judged on the next token, a target they were "
        "not trained on; since 2026-12-07 each run is judged on its own objective and the "
        "next-token drop is reported beside it as host damage): "
        f"{len(e.aligned_runs)}/{e.n_trained} trained runs "
        f"({', '.join(e.aligned_runs) or 'none'}). The untrained IRM is the control.",
        "",
        specificity_rows(e),
        "",
    ]


def claim_sections(claims: list[Claim]) -> list[str]:
    lines: list[str] = []
    for title, rules, text, figures in claims:
        lines += [f"## {title}: {rules['next-token'].verdict}", ""]
        lines += [f"- {KIND_LABEL[k]}: **{r.verdict}**: {r.reason}." for k, r in rules.items()] + [
            ""
        ]
        lines += [text, ""] if text else []
        lines += [f"![{name}]({name}/figure.png)" for name in figures] + [""]
    return lines


def closing_lines(ctx: Context, r: Results) -> list[str]:
    out = ctx.out
    return [
        "## Ablating the dominant index",
        "",
        ablation_text(r.ablation, r.dominance.dominant_index),
        "",
        "![ablation](ablation/figure.png)",
        "",
        "Interactive atlases (token slider, prompt dropdown): `atlas/<run>.html`.",
        "",
        *lens_section(read_typed(out, "lenses", LensesSummary)),
        *trajectory_section(out),
        *explain_section(out),
        *mechanism_section(
            read_typed(out, "rotation", RotationSummary),
            read_summary(out, "index_profile"),
            read_typed(out, "masked", MaskedSummary),
            read_typed(out, "matrix", MatrixSummary),
        ),
        "## Cost of this run",
        "",
        *timing_lines(ctx),
        cost_rows(ctx),
        "",
    ]


def main(ctx: Context) -> dict[str, object]:
    out = ctx.out
    keep_cold_costs(ctx)
    results = read_results(out)
    claims = claims_of(out, results)
    summary: dict[str, object] = {t: r["next-token"].verdict for t, r, _, _ in claims}
    summary[ORIGINAL_LOSS] = {t: r["paper loss"].verdict for t, r, _, _ in claims}
    summary[LONG_TIER] = {t: _long_verdict(r) for t, r, _, _ in claims}
    summary.update(
        mechanism_verdicts(
            read_typed(out, "rotation", RotationSummary),
            read_typed(out, "masked", MaskedSummary),
            read_typed(out, "matrix", MatrixSummary),
        )
    )
    reasons = {
        f"{prefix}{t}": r[kind]
        for t, r, _, _ in claims
        for kind, prefix in (
            ("next-token", ""),
            ("paper loss", f"{ORIGINAL_LOSS} / "),
            ("long", f"{LONG_TIER} / "),
        )
        if kind in r
    }
    reasons.update(
        {
            claim: v
            for claim, v in mechanism_rules(
                read_typed(out, "rotation", RotationSummary),
                read_typed(out, "masked", MaskedSummary),
                read_typed(out, "matrix", MatrixSummary),
            ).items()
            if v is not None
        }
    )
    summary.update(explain_verdicts(out))
    reasons.update({claim: v for claim, v in explain_rules(out).items() if v is not None})
    log_changes(out, summary, reasons)
    write_text_atomic(out / "verdicts.json", json.dumps(summary, indent=2))
    lines = [
        *header_lines(ctx, claims),
        *alignment_lines(results.evaluation),
        *claim_sections(claims),
        *closing_lines(ctx, results),
    ]
    write_text_atomic(out / "REPORT.md", "\n".join(lines))
    return summary


if __name__ == "__main__":
    from analyses.__main__ import run_one

    run_one(main)
