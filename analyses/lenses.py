"""Neuron-level lenses on the IRMs' dominant index (the lens methods, applied).

1. LM-head decoding of the dominant index and the host's top massive dim: which tokens a unit of
   each promotes and suppresses through the final gain and unembedding.
2. Head subspaces: how much of each index lies in what attention heads write (W_O) and read (W_V),
   against chance (d_head / d_model).
3. Log-probability attribution on the first paper prompt: the top "value" units for the predicted
   token, whether they write into the dominant index, and activation x gradient's agreement; the
   same read at the final residual's scale (``base="final"``, the units' direct effects).
4. Clamp validation: the top value neuron clamped high on the prompt, and the probability of its
   own decoded tokens.
"""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import torch
from transformer_lens.model_bridge import TransformerBridge

from analyses._common import Context
from analyses._config import cache_key
from analyses._summaries import LensesSummary, from_dict
from analyses._written import write_result
from irm_lens import lenses
from irm_lens.files import write_csv_atomic, write_text_atomic
from irm_lens.plotting.lenses import SUBSPACE_COLUMNS, subspace_figure
from irm_lens.prompts import encode

PROMPT = "The capital of France is"
CONCEPT_PROMPT = "My favourite thing about the weekend is"


def main(ctx: Context) -> LensesSummary:
    """Compute (or reuse: the lenses depend only on the host and the two indices) and write."""
    dominant, massive = ctx.dominant_index, ctx.massive_index
    f = ctx.figures
    key = cache_key(f.host_label, f.dtype, dominant, massive, PROMPT, 3)
    cache = f.runs_dir / f"lenses-{key}"
    if (cache / "summary.json").exists():
        data = pd.read_csv(cache / "data.csv", keep_default_na=False, na_values=[""])
        raw = json.loads((cache / "summary.json").read_text())
        summary = from_dict(LensesSummary, raw, str(cache / "summary.json"))
    else:
        data, summary = compute(ctx, dominant, massive)
        write_csv_atomic(cache / "data.csv", data)
        write_text_atomic(cache / "summary.json", json.dumps(dataclasses.asdict(summary), indent=2))
    shares = data[data["table"] == "subspaces"]
    shares = shares[shares["target"] == dominant][list(SUBSPACE_COLUMNS)]
    fig = subspace_figure(
        shares.astype(float).astype({"layer": int, "head": int}),
        index=dominant,
        title=(
            f"Residual index {dominant} (the IRMs' top index) in attention heads' write and "
            f"read subspaces ({f.host_label}; 1 = chance)"
        ),
    )
    write_result(ctx, "lenses", data, fig, summary=summary, runs=[], size=(1300, 650))
    return summary


def concept_check(host: TransformerBridge) -> tuple[dict[str, object], pd.DataFrame]:
    """A coherent concept to validate decoding by clamping: a late neuron decoding to digits,
    clamped on a neutral prompt (its summary, and the clamp table; empty when none is found)."""
    digits = lenses.concept_neurons(
        host, lambda w: w.strip().isdigit(), top=8, min_hits=8, min_layer=host.cfg.n_layers // 2
    )
    concept: dict[str, object] = {"found": len(digits) > 0}
    concept_table = pd.DataFrame()
    if len(digits):
        layer, neuron = int(digits.iloc[0]["layer"]), int(digits.iloc[0]["neuron"])
        neutral = torch.tensor(
            [encode(host.tokenizer, CONCEPT_PROMPT, mode="plain").prompt_ids],
            device=host.W_E.device,
        )
        concept_table = lenses.clamp_effect(
            host, layer, neuron, neutral, values=(0.0, 10.0, 20.0, 40.0), top=8
        )
        mass = concept_table.groupby("clamp", dropna=False)["prob"].sum()
        concept.update(
            neuron=f"L{layer}.{neuron}",
            tokens=digits.iloc[0]["tokens"],
            n_found=len(digits),
            prompt=CONCEPT_PROMPT,
            mass_unclamped=float(concept_table.loc[concept_table["clamp"].isna(), "prob"].sum()),
            mass_by_clamp={f"{k:g}": float(v) for k, v in mass.dropna().items() if k == k},
        )
    return concept, concept_table


def compute(ctx: Context, dominant: int, massive: int | None) -> tuple[pd.DataFrame, LensesSummary]:
    host = ctx.host()
    ids = encode(host.tokenizer, PROMPT, mode="plain").prompt_ids
    tokens = torch.tensor([ids], device=host.W_E.device)
    indices = [dominant] + ([massive] if massive is not None and massive != dominant else [])
    decoded = pd.concat([lenses.decode_index(host, i, top=10) for i in indices])
    shares = {i: lenses.index_in_head_subspaces(host, i) for i in indices}
    values = lenses.log_prob_attribution(host, tokens)
    direct = lenses.log_prob_attribution(host, tokens, base="final")
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
    # Clamp check on a late-layer value neuron: its output weights reach the logits directly.
    late = values[(values["kind"] == "neuron") & (values["layer"] >= host.cfg.n_layers // 2)]
    best = late.iloc[0]
    clamp = lenses.clamp_effect(
        host, int(best["layer"]), int(best["unit"]), tokens, values=(0.0, 10.0, 30.0)
    )
    concept, concept_table = concept_check(host)
    data = pd.concat(
        [
            concept_table.assign(table="concept_clamp"),
            decoded.assign(table="decode"),
            pd.concat([t.assign(target=i) for i, t in shares.items()]).assign(table="subspaces"),
            values.head(50).assign(table="attribution"),
            direct.head(50).assign(table="attribution_final"),
            clamp.assign(table="clamp"),
        ],
        ignore_index=True,
    )
    chance = float(shares[dominant]["chance"].iloc[0])

    def promoted(i: int) -> list[str]:
        part = decoded[(decoded["unit"] == i) & (decoded["direction"] == "promoted")]
        return part.sort_values("rank")["token"].head(5).tolist()

    base = clamp[clamp["clamp"].isna()].set_index("decoded_rank")["prob"]
    high = clamp[clamp["clamp"] == 30.0].set_index("decoded_rank")["prob"]
    summary = LensesSummary(
        dominant_index=dominant,
        promoted_tokens={str(i): promoted(i) for i in indices},
        subspace_write_max_over_chance={
            str(i): float(t["write"].max() / chance) for i, t in shares.items()
        },
        subspace_read_v_max_over_chance={
            str(i): float(t["read_v"].max() / chance) for i, t in shares.items()
        },
        predicted_token=host.tokenizer.decode([values.attrs["predicted"]]),
        top_value_units=[f"{r.kind} L{r.layer}.{r.unit}" for r in values.head(5).itertuples()],
        top_direct_units=[f"{r.kind} L{r.layer}.{r.unit}" for r in direct.head(5).itertuples()],
        direct_top10_layers=[int(x) for x in direct.head(10)["layer"]],
        top_value_neurons_weight_on_dominant=into,
        uniform_weight_share=float(1 / host.cfg.d_model**0.5),
        prompt=PROMPT,
        axg_rank_of_top_value_neuron=int(
            axg_rank.get((int(neurons.iloc[0]["layer"]), int(neurons.iloc[0]["unit"])), -1)
        ),
        clamped_neuron=f"L{int(best['layer'])}.{int(best['unit'])}",
        clamp_prob_before=float(base.iloc[0]),
        clamp_prob_at_30=float(high.iloc[0]),
        clamp_top_token=str(clamp.iloc[0]["token"]),
        concept=concept,
    )
    return data, summary
