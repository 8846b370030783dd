"""What several results measure on the run set's runs: held-out rows, per-question NLLs
(cached) and dominance ratios per setting and basis."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from analyses._config import cache_key
from irm_lens.data.datasets import EMOTIONS, load_dataset
from irm_lens.evaluate import answer_nll_tables
from irm_lens.files import write_csv_atomic
from irm_lens.irm import IRM
from irm_lens.measures.alignment import ALIGNED
from irm_lens.measures.dominance import dominance_ratio
from irm_lens.rundir import RunDir
from irm_lens.training.runs import snapshot_path

if TYPE_CHECKING:
    from analyses._common import Context

HELDOUT_SPLITS = ("val", "test")


def heldout(voice: str) -> pd.DataFrame:
    """Every question of ``voice`` not trained on: the val and test splits."""
    parts = [load_dataset(voice, split=split) for split in HELDOUT_SPLITS]
    return pd.concat(parts, ignore_index=True)


def selection_questions(config: Any) -> list[str]:
    """The questions a run's best-IRM selection read: its first ``max_val_rows`` validation rows
    (the trainer keeps the IRM with the lowest loss on them). They are held out from training
    but also among the evaluation questions (``HELDOUT_SPLITS``)."""
    val = config.rows("val")
    rows = val if config.max_val_rows is None else val.iloc[: config.max_val_rows]
    return sorted(set(rows["question_id"]))


def own_offset(config: Any) -> int:
    """How far ahead the run's own objective predicts: the original's loss ``paper_offset`` (2
    as it ran, t+2), else 1."""
    return int(config.paper_offset) if config.loss == "paper" else 1


def nll_by_question(
    ctx: Context,
    run: str,
    memo: dict[Any, pd.DataFrame],
    *,
    step: int | None = None,
    offset: int | None = None,
) -> pd.DataFrame:
    """Per held-out question, voice and condition: summed answer NLL and token count (kept in
    the run's cache directory; the host-alone part is shared by all runs through ``memo``).
    ``step``: the run's IRM as saved after that many steps (``TrainConfig.snapshots``) instead
    of its best one; ``offset``: the target (1 next token, 2 the original's t+2; default the
    run's own objective, ``own_offset``). The next-token table and the run's own objective's
    come from one forward pass and are kept together."""
    config = ctx.specs[run].config
    offset = own_offset(config) if offset is None else offset
    offsets = sorted({1, own_offset(config), offset})
    paths = {o: _nll_path(ctx, run, step, o) for o in offsets}
    if not paths[offset].exists():
        for o, table in _nll_tables(ctx, run, memo, step, offsets).items():
            if not paths[o].exists():
                write_csv_atomic(paths[o], table)
    return pd.read_csv(paths[offset])


def _nll_path(ctx: Context, run: str, step: int | None, offset: int) -> Path:
    config = ctx.specs[run].config
    parts: list[Any] = ["nll_by_question", HELDOUT_SPLITS, config.prompt_mode, config.max_len]
    key = cache_key(*parts, *([offset] if offset != 1 else []))
    name = f"nll-{key}.csv" if step is None else f"nll-{key}-step{step}.csv"
    return ctx.runs[run] / "specificity" / name


def _nll_tables(
    ctx: Context,
    run: str,
    memo: dict[Any, pd.DataFrame],
    step: int | None,
    offsets: list[int],
) -> dict[int, pd.DataFrame]:
    config = ctx.specs[run].config
    host = ctx.host()
    best = RunDir(ctx.runs[run]).irm
    irm = IRM.load(best if step is None else snapshot_path(ctx.runs[run], step), host)
    settings = dict(mode=config.prompt_mode, max_len=config.max_len, offsets=offsets)
    parts: dict[int, list[pd.DataFrame]] = {o: [] for o in offsets}
    for voice in EMOTIONS:
        rows = heldout(voice)
        base_key = (voice, config.prompt_mode, config.max_len, tuple(offsets))
        if base_key not in memo:
            memo[base_key] = answer_nll_tables(host, rows, **settings)  # type: ignore[arg-type]
        with_irm = answer_nll_tables(host, rows, irm=irm, **settings)  # type: ignore[arg-type]
        for o in offsets:
            for condition, tables in (("host", memo[base_key]), ("host+irm", with_irm)):
                parts[o].append(tables[o].assign(target=voice, condition=condition))
    return {o: pd.concat(p, ignore_index=True) for o, p in parts.items()}


def dominance_rows(
    ctx: Context, setting: str, bases: dict[str, torch.Tensor | None]
) -> list[dict[str, Any]]:
    """Per next-token run and untrained baseline of ``ctx``, and per basis to read its outputs
    in (``outputs @ matrix``; None = as recorded): alignment (specificity) and the dominance
    ratio on the paper prompts (``rules.mechanism.dominance_ratio``)."""
    rows = []
    for run, spec in ctx.specs.items():
        if spec.trained and spec.kind != "next-token":
            continue
        if spec.trained:
            verdict = ctx.alignment[run]
            aligned, spec_value = verdict.verdict == ALIGNED, verdict.specificity
            spec_ci = (verdict.low, verdict.high)
        else:
            aligned, spec_value, spec_ci = False, float("nan"), (float("nan"), float("nan"))
        outputs = [r.outputs for r in ctx.recordings(run)]
        for basis, matrix in bases.items():
            d = dominance_ratio(outputs, matrix, seed=ctx.first_seed)
            rows.append(
                {
                    "setting": setting,
                    "basis": basis,
                    "run": run,
                    "emotion": spec.config.emotion if spec.trained else "untrained",
                    "trained": spec.trained,
                    "aligned": aligned,
                    "specificity": spec_value,
                    "specificity_low": spec_ci[0],
                    "specificity_high": spec_ci[1],
                    **dataclasses.asdict(d),
                }
            )
    return rows
