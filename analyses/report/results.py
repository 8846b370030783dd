"""The typed summaries the report reads from a figures directory, and the claims made of them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from analyses._summaries import (
    AblationSummary,
    DominanceSummary,
    EvaluationSummary,
    Fig4ComparisonSummary,
    HostProfileSummary,
    LogitAttributionSummary,
    PropagationSummary,
    StriationSummary,
    TimingSummary,
    read_typed,
)


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
