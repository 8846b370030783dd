"""The dominant residual index ("1512"): indices ranked by IRM output, consistency across runs."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from irm_lens.measures.maps import Recorded, check_outputs

_TABLE_COLUMNS = ("index", "rank")


def dominant_indices(outputs: Recorded, *, top: int | None = None) -> pd.DataFrame:
    """Residual indices ranked by mean ``|output|`` over tokens and layers.

    Args:
        outputs: ``[token, inject, d_model]`` recorded IRM outputs (one prompt, or several
            concatenated along ``token``).
        top: keep only the ``top`` highest-ranked indices (default: all ``d_model``).

    Returns:
        One row per index, by rank: ``index`` (residual index), ``mean_abs`` (mean ``|output|``),
        ``share`` (the index's sum of ``|output|`` over the total; NaN if all outputs are zero),
        ``rank`` (1 = largest; ties go to the lower index).
    """
    check_outputs(outputs)
    if top is not None and top < 1:
        raise ValueError(f"top must be >= 1 or None, got {top}.")
    mags = outputs.detach().abs().double()
    sums = mags.sum(dim=(0, 1)).cpu().numpy()
    mean_abs = mags.mean(dim=(0, 1)).cpu().numpy()
    total = float(sums.sum())
    share = sums / total if total > 0 else np.full_like(sums, np.nan)
    order = np.lexsort((np.arange(len(mean_abs)), -mean_abs))
    table = pd.DataFrame(
        {
            "index": order.astype(np.int64),
            "mean_abs": mean_abs[order],
            "share": share[order],
            "rank": np.arange(1, len(order) + 1, dtype=np.int64),
        }
    )
    return table if top is None else table.head(top).reset_index(drop=True)


def _check_table(table: pd.DataFrame, name: str = "table") -> None:
    missing = [c for c in _TABLE_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(
            f"{name} lacks columns {missing}: pass a table made by dominant_indices "
            f"(columns index, mean_abs, share, rank), got columns {list(table.columns)}."
        )
    if table.empty:
        raise ValueError(f"{name} has no rows: pass a table made by dominant_indices.")


def index_rank(table: pd.DataFrame, index: int) -> int:
    """The rank (1 = most dominant) of residual ``index`` in a ``dominant_indices`` table.

    Args:
        table: a table from ``dominant_indices``.
        index: residual index to look up (e.g. 1512 on Llama-2-7B, 507 on SmolLM2-135M).

    Returns:
        Its rank.
    """
    _check_table(table)
    hits = table.loc[table["index"] == index, "rank"]
    if len(hits) == 0:
        n = len(table)
        if set(table["index"].tolist()) == set(range(n)):
            raise ValueError(
                f"index {index} is out of range: this table ranks residual indices 0..{n - 1}."
            )
        raise ValueError(
            f"index {index} is not in this table, which holds only {n} indices (the top {n}); "
            "rebuild it with dominant_indices(outputs) (top=None) to rank every index."
        )
    return int(hits.iloc[0])


def dominance_consistency(
    tables: Mapping[str, pd.DataFrame], *, k: int = 5
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """How consistently the same residual indices dominate across runs (seeds, emotions, prompts).

    Args:
        tables: ``dominant_indices`` tables keyed by run name (each with at least ``k`` rows).
        k: size of each run's top set.

    Returns:
        ``(frequencies, overlap)``. ``frequencies`` has one row per index in some run's top ``k``:
        ``index``, ``top1_count`` (runs where it ranks 1), ``topk_count`` (runs where it ranks
        <= k), ``n_runs``, ``top1_freq`` and ``topk_freq`` (the counts over ``n_runs``), sorted by
        ``top1_count`` then ``topk_count`` descending (then index). ``overlap`` has one row per
        unordered pair of runs: ``run_a``, ``run_b``, ``jaccard`` (of their top-``k`` sets).
    """
    if not tables:
        raise ValueError("tables is empty: pass at least one dominant_indices table.")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}.")
    tops: dict[str, list[int]] = {}
    for run, table in tables.items():
        _check_table(table, f"tables[{run!r}]")
        if len(table) < k:
            raise ValueError(
                f"tables[{run!r}] has {len(table)} rows but k={k}: build it with top >= {k} "
                "(or top=None), or lower k."
            )
        ranked = table.sort_values("rank", kind="stable")
        tops[run] = [int(i) for i in ranked["index"].head(k)]

    n_runs = len(tops)
    top1 = pd.Series([ids[0] for ids in tops.values()]).value_counts()
    topk = pd.Series([i for ids in tops.values() for i in ids]).value_counts()
    freq = pd.DataFrame({"index": topk.index.astype(np.int64), "topk_count": topk.to_numpy()})
    freq["top1_count"] = freq["index"].map(top1).fillna(0).astype(np.int64)
    freq["topk_count"] = freq["topk_count"].astype(np.int64)
    freq["n_runs"] = n_runs
    freq["top1_freq"] = freq["top1_count"] / n_runs
    freq["topk_freq"] = freq["topk_count"] / n_runs
    freq = freq.sort_values(
        ["top1_count", "topk_count", "index"], ascending=[False, False, True], kind="stable"
    ).reset_index(drop=True)
    freq = freq[["index", "top1_count", "topk_count", "n_runs", "top1_freq", "topk_freq"]]

    pairs = [
        (a, b, len(set(tops[a]) & set(tops[b])) / len(set(tops[a]) | set(tops[b])))
        for a, b in itertools.combinations(tops, 2)
    ]
    overlap = pd.DataFrame(pairs, columns=["run_a", "run_b", "jaccard"])
    return freq, overlap


@dataclass(frozen=True)
class Dominance:
    """One run's dominance in one basis."""

    top1: int
    ratio: float
    low: float
    high: float


def dominance_ratio(
    outputs: Sequence[Tensor], basis: Tensor | None = None, *, n_boot: int = 1000, seed: int = 0
) -> Dominance:
    """The top index's share of total |output| times ``d_model``, with a bootstrap 95 % CI.

    Args:
        outputs: one ``[token, inject, d_model]`` tensor per prompt.
        basis: ``[d_model, d_model]``; outputs are read as ``outputs @ basis`` (None: as they are).
        n_boot: bootstrap resamples of the prompts.
    """
    if not outputs:
        raise ValueError("dominance_ratio needs the outputs of at least one prompt.")
    per_prompt = []
    for out in outputs:
        values = out.double() if basis is None else out.double() @ basis.double()
        per_prompt.append(values.abs().sum(dim=(0, 1)))
    sums = torch.stack(per_prompt).numpy()  # [prompt, d_model]
    d_model = sums.shape[1]

    def ratio(rows: np.ndarray) -> float:
        total = rows.sum(axis=0)
        return float(total.max() / total.sum() * d_model)

    rng = np.random.default_rng(seed)
    draws = [ratio(sums[rng.integers(0, len(sums), len(sums))]) for _ in range(n_boot)]
    low, high = np.percentile(draws, [2.5, 97.5])
    return Dominance(int(sums.sum(axis=0).argmax()), ratio(sums), float(low), float(high))


@dataclass(frozen=True)
class TopTwo:
    """The two indices with the largest summed |output| and the top one's lead over the
    runner-up (``gap`` = top / runner-up: 1 when two indices tie)."""

    top: int
    runner_up: int
    gap: float


def top_two(outputs: Sequence[Tensor]) -> TopTwo:
    """``TopTwo`` of an IRM's outputs over every token and injected layer of the rows."""
    if not outputs:
        raise ValueError("top_two needs the outputs of at least one row.")
    total = torch.stack([o.double().abs().sum(dim=(0, 1)) for o in outputs]).sum(0)
    values, indices = torch.topk(total, 2)
    gap = float(values[0] / values[1]) if values[1] > 0 else math.inf
    return TopTwo(int(indices[0]), int(indices[1]), gap)
