"""Why one index? Every candidate explanation side by side (``TIER=explain``).

Reads the tier's committed results (``explain``, ``steering``, ``baselines``, ``subspace``,
``predict``, ``longer``; computes nothing on the host) and writes one row per explanation: the
experiment that tests it, its effect with the 95 % CI, the control it is read against and the
verdict its rule gave, with one figure that shows them side by side. An explanation whose
result has not been written is listed as not run. The tier's last step: it rewrites the report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from scipy.stats import binomtest

from analyses._common import Context
from analyses._summaries import (
    BaselinesSummary,
    PredictSummary,
    SteeringSummary,
    SubspaceSummary,
    WhySummary,
    read_typed,
)
from analyses._written import write_result
from analyses.plots.explain import why_figure
from analyses.report.baselines import longer_judged
from analyses.report.explain import judged
from analyses.rules.base import Verdict
from analyses.rules.explain import MIN_GROWTH
from analyses.rules.steering import EQUIVALENT

NEEDS_RUN_SET = False  # reads committed results only
NOT_RUN = "not run"
NAN = float("nan")


def _row(
    explanation: str,
    experiment: str,
    measure: str,
    verdict: Verdict | None,
    effect: float = NAN,
    low: float = NAN,
    high: float = NAN,
    control: float = NAN,
    control_label: str = "",
) -> dict[str, Any]:
    return {
        "explanation": explanation,
        "experiment": experiment,
        "measure": measure,
        "effect": effect,
        "low": low,
        "high": high,
        "control": control,
        "control_label": control_label,
        "verdict": verdict.verdict if verdict else NOT_RUN,
        "reason": verdict.reason if verdict else "",
    }


def _ci_row(
    explanation: str,
    experiment: str,
    measure: str,
    verdict: Verdict | None,
    effect: str,
    control: float,
    control_label: str,
    scale: float = 1.0,
) -> dict[str, Any]:
    """A row whose effect and CI are the verdict's ``effects[effect]``, ``low`` and ``high``
    (times ``scale``); NaN where the verdict is missing."""
    e = verdict.effects if verdict else {}
    return _row(
        explanation,
        experiment,
        measure,
        verdict,
        scale * e.get(effect, NAN),
        scale * e.get("low", NAN),
        scale * e.get("high", NAN),
        control,
        control_label,
    )


def explanation_rows(out: Path) -> pd.DataFrame:
    """One row per candidate explanation (and per predictor of the index)."""
    rows = []
    j = judged(out)
    if j is not None:
        effects = j.padding_learned.effects
        counted = [v for k, v in effects.items() if "counted shared" in k]
        masked = [v for k, v in effects.items() if "masked shared" in k]
        rows.append(
            _row(
                "the original's padding objective gives every emotion one index",
                "2 x 2 {t+1, t+2} x {padding counted, masked}, anger and sadness, 2 seeds",
                "largest share of a cell's runs with one top index, padding counted",
                j.padding_learned,
                max(counted, default=NAN),
                control=max(masked, default=NAN),
                control_label="the same, padding masked",
            )
        )
    else:
        rows.append(
            _row(
                "the original's padding objective gives every emotion one index",
                "2 x 2 loss quirks",
                "",
                None,
            )
        )
    st = read_typed(out, "steering", SteeringSummary)
    rows.append(
        _ci_row(
            "the IRM is a fixed steering vector",
            "each IRM's outputs split into their mean over tokens plus the rest",
            "share of the outputs' sum of squares in the constant part",
            st.verdict if st else None,
            "median",
            st.verdict.effects.get("null max", NAN) if st else NAN,
            "untrained IRMs' largest share",
        )
    )
    b = read_typed(out, "baselines", BaselinesSummary)
    for baseline in ("contrastive vector", "prompt", "bias-only IRM"):
        rows.append(
            _ci_row(
                f"a {baseline if baseline != 'prompt' else 'system prompt'} steers as the IRM",
                f"{baseline} beside the IRM, the same yardsticks",
                "specificity minus the IRM's (points), median over emotions",
                b.specificity.get(baseline) if b else None,
                "median",
                100 * EQUIVALENT,
                "alike within +-2 points",
                scale=100,
            )
        )
    sub = read_typed(out, "subspace", SubspaceSummary)
    v = sub.verdicts.get("same emotion, two seeds") if sub else None
    rows.append(
        _ci_row(
            "two seeds push in the same directions, not on the same index",
            "top output subspaces compared (TransformerLens projection kernel)",
            "normalized projection kernel, one emotion's two seeds",
            v,
            "median",
            v.effects.get("null max", NAN) if v else NAN,
            "untrained IRMs in their place, largest",
        )
    )
    p = read_typed(out, "predict", PredictSummary)
    for score, pv in p.verdicts.items() if p else [("gradient", None)]:
        rows.append(
            _ci_row(
                f"the host alone names the index ({score})",
                "irm-lens predict against every committed trained run",
                "median rank percentile of the trained top index",
                pv,
                "median percentile",
                0.5,
                "a random ranking",
            )
        )
    lj = longer_judged(out)
    rows.append(
        _ci_row(
            "the index concentrates with training",
            "all + L1, q4 and a second seed trained to early stop",
            "best IRM's dominance over the first trained snapshot's",
            lj.concentration["all settings"] if lj else None,
            "median growth",
            1 + MIN_GROWTH,
            "the growth that counts",
        )
    )
    seeds = lj.seeds if lj else None
    pairs, agree = (
        (seeds.effects.get("pairs", 0.0), seeds.effects.get("agree", 0.0)) if seeds else (0, 0)
    )
    share = (NAN, NAN, NAN)
    if pairs:  # exact (Clopper-Pearson) 95 % interval of the share of emotions that agree
        ci = binomtest(int(agree), int(pairs)).proportion_ci()
        share = (agree / pairs, ci.low, ci.high)
    rows.append(
        _row(
            "the host fixes the index, whatever the init",
            "a second init seed of the long tier's sadness and anger, trained to early stop",
            "share of emotions whose two seeds' best IRMs share the top index",
            seeds,
            *share,
            control=1 / p.d_model if p else NAN,
            control_label="two uniform draws agree (1 / d_model)",
        )
    )
    return pd.DataFrame(rows)


def main(ctx: Context) -> WhySummary:
    """Write ``why``, then rewrite the report with the tier's section where the default tier's
    results exist (the last step of ``TIER=explain``)."""
    from analyses import report

    data = explanation_rows(ctx.out)
    summary = WhySummary(
        verdicts={r.explanation: r.verdict for r in data.itertuples()},
    )
    write_result(ctx, "why", data, why_figure(data), summary=summary, runs=[], size=(1400, 1100))
    try:
        report.read_results(ctx.out)
    except FileNotFoundError:
        print(f"why: no report in {ctx.out} yet; `make figures` writes it with this section.")
        return summary
    report.main(ctx)
    return summary
