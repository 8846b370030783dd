"""The report's host-side sections: the ablation of the top index and the neuron-level lenses."""

from __future__ import annotations

from typing import Any

from analyses._summaries import (
    AblationSummary,
    LensesSummary,
)
from analyses.report.claims import pct


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
            f"in the IRM output {nll['irm_zero']:.3f} ({pct(undone)} of the IRM's NLL gain "
            f"undone; KL to the IRM {kl['irm_zero']:.4f}); zeroed in the residual stream "
            f"{nll['resid_zero']:.3f} (KL {kl['resid_zero']:.4f}); IRM output x2 "
            f"{nll['scale_2']:.3f}."
        )
        if "nrc_share" in table:
            nrc, facts = table["nrc_share"], table["fact_retention"]
            line += (
                f" NRC {a.emotion} share of greedy answers: host {pct(nrc['host'])}, IRM "
                f"{pct(nrc['irm'])}, index zeroed in the IRM output {pct(nrc['irm_zero'])}; "
                f"fact retention host {pct(facts['host'])}, IRM {pct(facts['irm'])}."
            )
        lines.append(line)
    each = "; ".join(
        f"{run}: index {o['index']} {pct(o['undone'])} (controls "
        f"{pct(o['controls_undone_median'])})"
        for run, o in a.own_top.items()
    )
    lines.append(
        f"- each aligned next-token run's own top index zeroed in its output undoes a median "
        f"{pct(a.own_top_undone_median)} of its NLL gain on {a.n_rows} held-out "
        f"questions, against {pct(a.own_controls_undone_median)} for random indices of "
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
