"""``REPORT.md``: each claim of the paper, what this run measured, and a plain verdict.

Reads only the ``summary`` of each result's config.json (written by the other scripts in the same
invocation), so every number in the report comes from the figures beside it. The verdict rules
live in ``analyses.rules.paper``; when and why they changed is told in the report itself
(``rules_account``), and a verdict that changes is kept in ``verdict_changes.json``.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

from analyses._common import Context
from analyses._summaries import (
    LensesSummary,
    MaskedSummary,
    MatrixSummary,
    MediationSummary,
    ResidualControlSummary,
    RotationSummary,
    read_typed,
)
from analyses._written import read_summary
from analyses.report.alignment import alignment_lines
from analyses.report.answers import answer_table, change_lines, log_changes
from analyses.report.claims import (
    LONG_TIER,
    ORIGINAL_LOSS,
    Claim,
    claim_sections,
    dominance_claims,
    lm_head_claim,
    residual_claim,
    rules_account,
    striation_claim,
    timing_claim,
)
from analyses.report.costs import budget, cost_rows, keep_cold_costs, timing_lines
from analyses.report.explain import explain_rules, explain_section, explain_verdicts
from analyses.report.lenses import ablation_text, lens_section
from analyses.report.mechanism import mechanism_rules, mechanism_section, mechanism_verdicts
from analyses.report.results import Results, read_results
from analyses.report.trajectory import long_tier_rules, long_verdict, trajectory_section
from irm_lens.files import write_text_atomic
from irm_lens.stack import describe

# The report reads only committed results (the run cache, where it is here, for per-run costs):
# `python -m analyses --only report` rewrites it on a fresh clone without training anything.
NEEDS_RUN_SET = False


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
        "Written by `make figures` (`analyses/report/`); every number below comes from the "
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
        f" {budget(ctx, 'next-token')}, seeds {list(f.seeds)}; original's loss "
        f"{budget(ctx, 'paper loss')}, seed {f.seeds[0]}), the long tier column applies the "
        "striation, consistency and dominance rules to the long tier's IRMs trained until their "
        "validation loss stopped improving (each run's best; first seed only), and says "
        "`not run` for the claims that tier does not measure.",
        "",
        *answer_table([(t, rules) for t, rules, _, _ in claims], budget(ctx, "next-token")),
        "",
        *rules_account(),
        *change_lines(ctx.out),
    ]


def closing_lines(ctx: Context, r: Results) -> list[str]:
    out = ctx.out
    return [
        "## Ablating the dominant index",
        "",
        ablation_text(r.ablation, r.dominance.dominant_index),
        "",
        "![ablation](ablation/figure.png)",
        "",
        "Interactive atlases (token slider, prompt dropdown): `atlas/<run>.html`, written by "
        "`make figures` (HTML is not committed).",
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
    summary[LONG_TIER] = {t: long_verdict(r) for t, r, _, _ in claims}
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
