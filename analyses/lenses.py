"""Neuron-level lenses on the IRMs' dominant index (issue 6's methods, applied).

1. LM-head decoding of the dominant index and the host's top massive dim: which tokens a unit of
   each promotes and suppresses through the final gain and unembedding.
2. Head subspaces: how much of each index lies in what attention heads write (W_O) and read (W_V),
   against chance (d_head / d_model).
3. Log-probability attribution on the first paper prompt: the top "value" units for the predicted
   token, whether they write into the dominant index, and activation x gradient's agreement.
4. Clamp validation: the top value neuron clamped high on the prompt, and the probability of its
   own decoded tokens.
"""

from __future__ import annotations

import pandas as pd

from analyses._common import Context
from analyses.propagation import prompt_tokens
from irm_lens import lenses
from irm_lens.plotting.lenses import subspace_figure


def main(ctx: Context) -> dict[str, object]:
    host, tokens = ctx.host(), prompt_tokens(ctx)
    dominant, massive = ctx.dominant_index, ctx.massive_index
    indices = [dominant] + ([massive] if massive is not None and massive != dominant else [])
    decoded = pd.concat([lenses.decode_index(host, i, top=10) for i in indices])
    shares = {i: lenses.index_in_head_subspaces(host, i) for i in indices}
    values = lenses.log_prob_attribution(host, tokens)
    axg = lenses.activation_x_gradient(host, tokens)
    neurons = values[values["kind"] == "neuron"].head(10)
    w_out = host.W_out.detach().float()
    into = [
        float(
            w_out[int(r.layer), int(r.unit), dominant].abs()
            / w_out[int(r.layer), int(r.unit)].norm()
        )
        for r in neurons.itertuples()
    ]
    axg_rank = axg.set_index(["layer", "unit"])["rank"]
    best = neurons.iloc[0]
    clamp = lenses.clamp_effect(
        host, int(best["layer"]), int(best["unit"]), tokens, values=(0.0, 10.0, 30.0)
    )
    data = pd.concat(
        [
            decoded.assign(table="decode"),
            pd.concat([t.assign(target=i) for i, t in shares.items()]).assign(table="subspaces"),
            values.head(50).assign(table="attribution"),
            clamp.assign(table="clamp"),
        ],
        ignore_index=True,
    )
    fig = subspace_figure(
        shares[dominant],
        index=dominant,
        title=(
            f"Residual index {dominant} (IRMs' dominant index) in attention heads' write and "
            f"read subspaces, {ctx.figures.host_label} (1 = chance)"
        ),
    )
    chance = float(shares[dominant]["chance"].iloc[0])

    def promoted(i: int) -> list[str]:
        part = decoded[(decoded["unit"] == i) & (decoded["direction"] == "promoted")]
        return part.sort_values("rank")["token"].head(5).tolist()

    base = clamp[clamp["clamp"].isna()].set_index("decoded_rank")["prob"]
    high = clamp[clamp["clamp"] == 30.0].set_index("decoded_rank")["prob"]
    summary = {
        "dominant_index": dominant,
        "promoted_tokens": {str(i): promoted(i) for i in indices},
        "subspace_write_max_over_chance": {
            str(i): float(t["write"].max() / chance) for i, t in shares.items()
        },
        "subspace_read_v_max_over_chance": {
            str(i): float(t["read_v"].max() / chance) for i, t in shares.items()
        },
        "predicted_token": host.tokenizer.decode([values.attrs["predicted"]]),
        "top_value_units": [f"{r.kind} L{r.layer}.{r.unit}" for r in values.head(5).itertuples()],
        "top_value_neurons_weight_on_dominant": into,
        "uniform_weight_share": float(1 / host.cfg.d_model**0.5),
        "axg_rank_of_top_value_neuron": int(
            axg_rank.get((int(best["layer"]), int(best["unit"])), -1)
        ),
        "clamped_neuron": f"L{int(best['layer'])}.{int(best['unit'])}",
        "clamp_prob_before": float(base.iloc[0]),
        "clamp_prob_at_30": float(high.iloc[0]),
        "clamp_top_token": str(clamp.iloc[0]["token"]),
    }
    ctx.write("lenses", data, fig, summary=summary, runs=[], size=(1300, 650))
    return summary


if __name__ == "__main__":
    from analyses.__main__ import run_one

    run_one(main)
