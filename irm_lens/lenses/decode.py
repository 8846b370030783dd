"""LM-head decoding: read a residual direction, a residual index or an MLP neuron as tokens.

A vector ``v`` written into the residual stream reaches the logits (to first order, at a fixed
norm scale) as ``(v * g) @ W_U``, with ``g`` the final norm's gain. Decoding a unit = ranking the
vocabulary by that score: the top tokens are the ones it promotes, the bottom ones those it
suppresses. An MLP neuron writes its down-projection row ``W_out[layer, neuron]``; a residual
index ``i`` is the one-hot direction ``e_i``. Clamping a neuron during generation
(``clamp_neuron``) checks that the decoded tokens really become likelier.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from irm_lens.anatomy import AnatomyError, decoding_matrix, unembedding
from irm_lens.inject import mlp_post_hook, patch, set_at


class LensError(AnatomyError):
    """A lens asked for something the host does not have (layer, neuron, final norm)."""


def _check_layer(host: TransformerBridge, layer: int) -> None:
    if not 0 <= layer < host.cfg.n_layers:
        raise LensError(
            f"layer {layer} is out of range: the host has layers 0..{host.cfg.n_layers - 1}."
        )


def d_mlp(host: TransformerBridge) -> int:
    """The host's MLP width (LensError for hosts without MLPs)."""
    if host.cfg.d_mlp is None:
        raise LensError("This host has no MLP layers (cfg.d_mlp is None): no neurons to read.")
    return int(host.cfg.d_mlp)


def _check_neurons(host: TransformerBridge, neurons: Sequence[int]) -> None:
    width = d_mlp(host)
    bad = [n for n in neurons if not 0 <= n < width]
    if bad:
        raise LensError(f"neurons {bad} are out of range: MLP layers have neurons 0..{width - 1}.")


def _table(
    host: TransformerBridge, scores: Tensor, units: Sequence[object], top: int, kind: str
) -> pd.DataFrame:
    """Long table of the top promoted and suppressed tokens of each row of ``scores``."""
    top = min(top, scores.shape[1])
    high = scores.topk(top, dim=1)
    low = (-scores).topk(top, dim=1)
    rows = []
    for direction, values, ids in (
        ("promoted", high.values, high.indices),
        ("suppressed", -low.values, low.indices),
    ):
        for u, unit in enumerate(units):
            for rank in range(top):
                token_id = int(ids[u, rank])
                rows.append((kind, unit, direction, rank + 1, token_id, float(values[u, rank])))
    table = pd.DataFrame(rows, columns=["kind", "unit", "direction", "rank", "token_id", "score"])
    vocab = {int(t): host.tokenizer.decode([int(t)]) for t in table["token_id"].unique()}
    table.insert(5, "token", table["token_id"].map(vocab))
    return table


def decode_directions(
    host: TransformerBridge,
    directions: Float[Tensor, "unit d_model"],
    *,
    names: Sequence[object] | None = None,
    top: int = 10,
    through_norm: bool = True,
) -> pd.DataFrame:
    """Top promoted and suppressed tokens of residual directions.

    Args:
        directions: one residual-stream vector per row.
        names: a label per row (default 0..n-1).
        through_norm: fold the final norm's gain in (else ``W_U`` alone).

    Returns:
        Columns ``kind, unit, direction, rank, token_id, token, score`` (``direction``:
        ``promoted`` / ``suppressed``; ``score``: the logit change per unit of the direction).
    """
    if directions.ndim != 2 or directions.shape[1] != host.cfg.d_model:
        raise LensError(
            f"directions must be [unit, d_model={host.cfg.d_model}], got {list(directions.shape)}."
        )
    matrix = decoding_matrix(host) if through_norm else unembedding(host)
    scores = directions.float().to(matrix.device) @ matrix
    names = list(range(len(directions))) if names is None else list(names)
    return _table(host, scores, names, top, "direction")


def decode_index(host: TransformerBridge, index: int, *, top: int = 10) -> pd.DataFrame:
    """Decode residual index ``index`` (a one-hot direction), e.g. the paper's 1512."""
    if not 0 <= index < host.cfg.d_model:
        raise LensError(f"index {index} is out of range 0..{host.cfg.d_model - 1}.")
    scores = decoding_matrix(host)[index][None]
    return _table(host, scores, [index], top, "index")


def decode_neurons(
    host: TransformerBridge, layer: int, neurons: Sequence[int] | None = None, *, top: int = 10
) -> pd.DataFrame:
    """Decode MLP neurons of one layer through their output weights (down-projection rows).

    Returns:
        As ``decode_directions``, with ``kind`` ``neuron`` and ``unit`` ``"L{layer}N{neuron}"``.
    """
    _check_layer(host, layer)
    neurons = list(range(d_mlp(host))) if neurons is None else list(neurons)
    _check_neurons(host, neurons)
    w_out = host.W_out[layer].detach().float()[neurons]  # [neuron, d_model]
    scores = w_out @ decoding_matrix(host).to(w_out.device)
    return _table(host, scores, [f"L{layer}N{n}" for n in neurons], top, "neuron")


class WholeModelDecoding(NamedTuple):
    """Every unit's top tokens (``top_tokens_all``): rows ordered as ``names``."""

    ids: Int[Tensor, "unit top"]
    scores: Float[Tensor, "unit top"]
    names: list[str]
    suppressed_ids: Int[Tensor, "unit top"] | None = None
    suppressed_scores: Float[Tensor, "unit top"] | None = None


def top_tokens_all(
    host: TransformerBridge, *, top: int = 5, chunk: int = 2048, suppressed: bool = False
) -> WholeModelDecoding:
    """Top promoted (and, with ``suppressed``, most suppressed) tokens of every MLP neuron and
    every residual index, at once.

    Vectorised over units in chunks of ``chunk`` rows (one matrix product each, both ends of the
    ranking read off the same product), so a whole model's decoding takes seconds. Units are
    ordered layer by layer (``L{l}N{n}``), then the residual indices (``R{i}``).

    Returns:
        ``WholeModelDecoding``: token ids and scores ``[unit, top]`` (best first; suppressed:
        lowest score first), unit names.
    """
    matrix = decoding_matrix(host)
    n_layers, width, d_model = host.cfg.n_layers, d_mlp(host), host.cfg.d_model
    w_out = host.W_out.detach().float().reshape(n_layers * width, d_model)
    parts: dict[str, list[Tensor]] = {"ids": [], "scores": [], "low_ids": [], "low_scores": []}

    def keep(scores: Tensor) -> None:
        best = scores.topk(top, dim=1)
        parts["ids"].append(best.indices)
        parts["scores"].append(best.values)
        if suppressed:
            worst = scores.topk(top, dim=1, largest=False)
            parts["low_ids"].append(worst.indices)
            parts["low_scores"].append(worst.values)

    with torch.no_grad():
        for start in range(0, len(w_out), chunk):
            keep(w_out[start : start + chunk] @ matrix)
        keep(matrix)  # one-hot residual directions: the rows themselves
    names = [f"L{layer}N{n}" for layer in range(n_layers) for n in range(width)]
    names += [f"R{i}" for i in range(d_model)]
    return WholeModelDecoding(
        torch.cat(parts["ids"]),
        torch.cat(parts["scores"]),
        names,
        torch.cat(parts["low_ids"]) if suppressed else None,
        torch.cat(parts["low_scores"]) if suppressed else None,
    )


def whole_model_table(host: TransformerBridge, decoded: WholeModelDecoding) -> pd.DataFrame:
    """``top_tokens_all``'s result as one long table, like ``decode_directions``'s: columns
    ``unit, direction, rank, token_id, token, score``."""
    parts = [("promoted", decoded.ids, decoded.scores)]
    if decoded.suppressed_ids is not None and decoded.suppressed_scores is not None:
        parts.append(("suppressed", decoded.suppressed_ids, decoded.suppressed_scores))
    frames = []
    for direction, ids, scores in parts:
        n_units, top = ids.shape
        frames.append(
            pd.DataFrame(
                {
                    "unit": [name for name in decoded.names for _ in range(top)],
                    "direction": direction,
                    "rank": list(range(1, top + 1)) * n_units,
                    "token_id": ids.reshape(-1).tolist(),
                    "score": scores.reshape(-1).tolist(),
                }
            )
        )
    table = pd.concat(frames, ignore_index=True)
    vocab = {int(t): host.tokenizer.decode([int(t)]) for t in table["token_id"].unique()}
    table.insert(4, "token", table["token_id"].map(vocab))
    return table


@contextlib.contextmanager
def clamp_neuron(host: TransformerBridge, layer: int, neuron: int, value: float) -> Iterator[None]:
    """Within the block, MLP neuron ``neuron`` of ``layer`` is set to ``value`` at every position.

    The activation is clamped at ``blocks.{layer}.mlp.hook_post`` (after the gate, before the
    down-projection), so the neuron writes ``value * W_out[layer, neuron]`` into the stream.
    """
    _check_layer(host, layer)
    _check_neurons(host, [neuron])

    with patch(host, [mlp_post_hook(layer)], set_at(neuron, value)):
        yield


def clamp_effect(
    host: TransformerBridge,
    layer: int,
    neuron: int,
    tokens: Tensor,
    *,
    values: Sequence[float] = (0.0, 5.0, 10.0, 20.0),
    top: int = 5,
) -> pd.DataFrame:
    """Validate a decoding by clamping: the next-token probability of the neuron's top decoded
    tokens at the last position of ``tokens``, unclamped and with the neuron clamped to each of
    ``values``.

    Returns:
        Columns ``clamp`` (NaN = unclamped), ``token_id``, ``token``, ``decoded_rank``, ``prob``.
    """
    decoded = decode_neurons(host, layer, [neuron], top=top)
    promoted = decoded[decoded["direction"] == "promoted"].sort_values("rank")
    ids = torch.tensor(promoted["token_id"].to_numpy())
    rows = []
    for value in [None, *values]:
        with torch.no_grad(), contextlib.ExitStack() as stack:
            if value is not None:
                stack.enter_context(clamp_neuron(host, layer, neuron, float(value)))
            probs = host(tokens)[0, -1].float().softmax(-1)[ids.to(tokens.device)].cpu()
        for rank, (token_id, token) in enumerate(
            zip(promoted["token_id"], promoted["token"], strict=True), start=1
        ):
            rows.append(
                (
                    float("nan") if value is None else float(value),
                    int(token_id),
                    token,
                    rank,
                    float(probs[rank - 1]),
                )
            )
    return pd.DataFrame(rows, columns=["clamp", "token_id", "token", "decoded_rank", "prob"])


def concept_neurons(
    host: TransformerBridge,
    is_concept: Callable[[str], bool],
    *,
    top: int = 8,
    min_hits: int | None = None,
    min_layer: int = 0,
) -> pd.DataFrame:
    """MLP neurons whose top decoded tokens belong to one concept (e.g. digits).

    Args:
        is_concept: token text -> whether it belongs to the concept.
        top: decoded tokens per neuron that are checked.
        min_hits: how many of them must belong (default: all ``top``).
        min_layer: skip layers below this one (late layers write to the logits most directly).

    Returns:
        Columns ``layer, neuron, hits, top_score, tokens`` (the decoded tokens joined by " | "),
        best first (most hits, then the largest top score).
    """
    min_hits = top if min_hits is None else min_hits
    ids, scores, _, _, _ = top_tokens_all(host, top=top)
    width = d_mlp(host)
    vocab: dict[int, str] = {}
    rows = []
    for unit in range(min_layer * width, host.cfg.n_layers * width):
        words = []
        for token_id in ids[unit].tolist():
            if token_id not in vocab:
                vocab[token_id] = host.tokenizer.decode([token_id])
            words.append(vocab[token_id])
        hits = sum(bool(is_concept(w)) for w in words)
        if hits >= min_hits:
            rows.append(
                (unit // width, unit % width, hits, float(scores[unit, 0]), " | ".join(words))
            )
    table = pd.DataFrame(rows, columns=["layer", "neuron", "hits", "top_score", "tokens"])
    return table.sort_values(["hits", "top_score"], ascending=False, ignore_index=True)
