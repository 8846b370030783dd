"""Logit attribution of the dominant index: direct (through the unembedding) and norm-mediated.

Direct: the tokens index i promotes and suppresses per unit (final-norm gain x W_U row) and its
share of the predicted token's logit per position (TransformerLens's ``apply_ln_to_stack``).
Norm-mediated: next-token entropy and top-1 probability when x[i] entering the final norm is
scaled, for the dominant index and the host's top massive dim (the "temperature knob" hypothesis:
a large, low-gain dim moves the RMS denominator, not any one logit).
"""

from __future__ import annotations

import pandas as pd
import torch

from analyses._common import Context, prompt_tokens
from analyses._summaries import LogitAttributionSummary
from analyses._written import write_result
from analyses.plots import runset
from irm_lens.interventions import causal
from irm_lens.lenses import decoding_matrix

N_RANDOM = 8


def norm_shift(table: pd.DataFrame) -> float:
    """Change of next-token entropy (nats) when the index is scaled x8 instead of x1."""
    by = table.set_index("scale")["entropy"]
    return float(by.loc[8.0] - by.loc[1.0])


def main(ctx: Context) -> LogitAttributionSummary:
    host, tokens = ctx.host(), prompt_tokens(ctx)
    dominant, massive = ctx.dominant_index, ctx.massive_index
    indices = [dominant] + ([massive] if massive is not None and massive != dominant else [])
    parts = {i: causal.logit_attribution(host, tokens, index=i) for i in indices}
    data = pd.concat(
        [
            pd.concat([t.assign(table=name) for name, t in tables.items()]).assign(target=i)
            for i, tables in parts.items()
        ],
        ignore_index=True,
    )
    fig = runset.logit_attribution_figure(
        {i: tables["direct"] for i, tables in parts.items()},
        {i: tables["norm"] for i, tables in parts.items()},
        title=(
            "Logit attribution of the IRMs' top index and the host's massive dim<br><sup>"
            "left: direct effect per unit through final gain and W_U; right: next-token entropy "
            f"when the index is scaled before the final norm; {ctx.figures.host_label}</sup>"
        ),
    )

    def norm_numbers(table: pd.DataFrame) -> dict[str, float]:
        by = table.set_index("scale")
        return {
            "entropy_at_0": float(by.loc[0.0, "entropy"]),
            "entropy_at_1": float(by.loc[1.0, "entropy"]),
            "entropy_at_8": float(by.loc[8.0, "entropy"]),
            "rms_at_1": float(by.loc[1.0, "rms"]),
            "rms_at_8": float(by.loc[8.0, "rms"]),
        }

    # Controls: the same scaling for random indices, and where the index's direct effect ranks.
    generator = torch.Generator().manual_seed(0)
    randoms = [
        int(i)
        for i in torch.randperm(host.cfg.d_model, generator=generator)[:N_RANDOM]
        if int(i) not in indices
    ]
    random_shift = [norm_shift(causal.norm_mediated_effect(host, tokens, index=i)) for i in randoms]
    direct_max = decoding_matrix(host).abs().max(dim=1).values
    direct_rank = {str(i): int((direct_max > direct_max[i]).sum()) + 1 for i in indices}
    summary = LogitAttributionSummary(
        dominant_index=dominant,
        d_model=host.cfg.d_model,
        entropy_shift_x8={str(i): norm_shift(t["norm"]) for i, t in parts.items()},
        random_indices=randoms,
        random_entropy_shift_x8_median=float(pd.Series(random_shift).abs().median()),
        direct_effect_rank=direct_rank,
        massive_index=massive,
        direct_max_abs_effect={
            str(i): float(t["direct"]["effect"].abs().max()) for i, t in parts.items()
        },
        direct_top_promoted={
            str(i): t["direct"][t["direct"]["direction"] == "promoted"]["token"].head(5).tolist()
            for i, t in parts.items()
        },
        share_of_predicted_logit_median={
            str(i): float(t["per_position"]["share"].median()) for i, t in parts.items()
        },
        centred_share_of_predicted_logit_median={
            str(i): float(t["per_position"]["centred_share"].median()) for i, t in parts.items()
        },
        norm={str(i): norm_numbers(t["norm"]) for i, t in parts.items()},
    )
    write_result(ctx, "logit_attribution", data, fig, summary=summary, runs=[], size=(1300, 650))
    return summary
