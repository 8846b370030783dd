"""Does the host alone name the index an IRM pushes on? ``irm-lens predict`` against every trained
run whose top index is committed.

For each emotion and objective (next-token on chat rows; the original's t+2 loss on plain rows,
and each cell of the ``explain`` tier where it has run), the gradient of the alignment loss with
respect to a zero per-layer bias (``irm_lens.interventions.predict``) ranks the residual
indices; each trained run's top index (default tier, long tier, the mechanism tier's layer sets,
SGD, masked and rotated-host runs, the explain tier's loss quirks and its longer runs) is looked
up in the ranking of its own emotion, objective and injected layers. ``predictor_rule`` judges
the ranks against a random ranking.

Reads committed results only (no run cache). The committed ``predict`` result is the cache of
record: a run it holds with the same top index keeps its ranks when the settings it records
(``settings``: version, host, rows, fit steps, lens texts) are this invocation's, so only the
emotion-objective pairs of new runs are computed: the gradients, bias fits and the Jacobian lens
on the host (about 6 min a pair and 20 min for the lens on CPU), each kept in the run cache
(``predict/``, safetensors). ``data.csv``: one row per validated run; ``predictions.csv``: the
top 20 predicted indices per emotion and objective, with the host levers beside them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors.torch import load_file
from torch import Tensor

from analyses._common import Context
from analyses._config import cache_key
from analyses._summaries import PredictSummary
from analyses._written import read_summary, write_result
from analyses.plots.predict import predict_figure
from analyses.rules.explain import predictor_rule
from irm_lens.data.datasets import EMOTIONS, load_dataset
from irm_lens.files import save_tensors_atomic
from irm_lens.interventions.host_profile import host_profile
from irm_lens.interventions.predict import (
    FIT_STEPS,
    BiasFit,
    bias_gradients,
    fit_bias,
    host_levers,
    predict_index,
    transport_levers,
    validate_prediction,
)
from irm_lens.irm import parse_layers
from irm_lens.prompts import PAPER_PROMPTS, PromptMode
from irm_lens.training.config import Objective

NEEDS_RUN_SET = False  # reads committed results and the host only
ROWS = 64  # training rows per gradient
SMOKE_ROWS = 8
SMOKE_FIT_STEPS = 4
SHOWN = 20
MAX_LEN = 128
NEXT_TOKEN = "next-token"
PAPER = "t2-counted"  # the original's loss as it ran
# The predictors compared, by the rank column of ``predict_index`` they read: the summed bias
# gradient (where gradient descent pushes first), the rows' sign consistency (where Adam's
# per-coordinate step pushes at full rate), a bias-only fit with Adam (a steering vector per
# layer), and the host's logit and stop-token levers alone (no loss at all), the logit lever
# carried from each injected layer by TransformerLens's Jacobian lens (transport lever).
SCORES = {
    "gradient": "rank",
    "consistency": "consistency_rank",
    "bias fit": "fit_rank",
    "lever": "lever_rank",
    "transport lever": "transport_rank",
    "stop lever": "stop_rank",
}
LENS_TEXTS = 32  # bank rows (every voice) the Jacobian lens is averaged over
VERSION = 1  # of the tensors and ranks below: bump when their meaning changes
KEY = ["run", "source", "emotion", "objective", "layers", "top_index"]  # a validated run
RANKS = ["predicted_index", *(f"{score}_rank" for score in SCORES)]


def _objective(name: str) -> tuple[Objective, PromptMode]:
    """An objective by the name the tables use, and its prompt format."""
    if name == NEXT_TOKEN:
        return Objective(), "chat"
    offset, padding = int(name[1]), name.split("-", 1)[1]
    return Objective("paper", offset, padding), "plain"  # type: ignore[arg-type]


def trained_tops(out: Path) -> pd.DataFrame:
    """Every committed trained run's top index: ``run, source, emotion, objective, layers,
    top_index`` (one row per run; a run read by several results counted once)."""
    rows: list[dict[str, Any]] = []

    def add(run: str, source: str, emotion: str, objective: str, layers: str, top: int) -> None:
        rows.append(
            {
                "run": run,
                "source": source,
                "emotion": emotion,
                "objective": objective,
                "layers": layers,
                "top_index": int(top),
            }
        )

    path = out / "dominant_index" / "data.csv"
    if path.exists():
        tops = pd.read_csv(path)
        for r in tops[(tops["rank"] == 1) & (tops["run_kind"] != "untrained")].itertuples():
            objective = PAPER if r.run_kind == "paper loss" else NEXT_TOKEN
            add(r.run, "default", r.emotion, objective, "all", r.index)
    path = out / "trajectory" / "data.csv"
    if path.exists():
        long = pd.read_csv(path)
        for r in long[long["irm"] == "best"].itertuples():
            add(
                r.run,
                "long",
                r.emotion,
                PAPER if r.kind == "paper loss" else NEXT_TOKEN,
                "all",
                r.top_index,
            )
    for r in read_summary(out, "matrix").get("by_run", []):
        if r["trained"]:
            add(r["run"], "matrix", r["emotion"], NEXT_TOKEN, r["layer_set"], r["top1"])
    for r in read_summary(out, "rotation").get("by_run", []):
        if not r["trained"] or r["basis"] != "host basis":
            continue
        if "SGD" in r["setting"]:  # SGD on the original host
            add(r["run"], "sgd", r["emotion"], NEXT_TOKEN, "all", r["top1"])
        elif r["setting"].startswith("rotated host"):  # trained in another basis, read in ours
            add(r["run"], "rotated", r["emotion"], NEXT_TOKEN, "all", r["top1"])
    for r in read_summary(out, "masked").get("by_run", []):  # the top 5 or 5 random held at 0
        if r["trained"] and r["setting"] != "no mask":
            add(r["run"], "masked", r["emotion"], NEXT_TOKEN, "all", r["top1"])
    path = out / "explain" / "data.csv"
    if path.exists():
        explain = pd.read_csv(path)
        last = explain[explain["irm"] == "snapshot"].sort_values("step").groupby("run").tail(1)
        for r in last.itertuples():
            add(r.run, "explain", r.emotion, r.cell, "all", r.top_index)
    path = out / "longer" / "data.csv"
    if path.exists():
        longer = pd.read_csv(path)
        for r in longer[longer["irm"] == "best"].itertuples():
            layers = "q4" if "_layersq4_" in r.run else "all"
            add(r.run, "longer", r.emotion, NEXT_TOKEN, layers, r.top_index)
    table = pd.DataFrame(rows, columns=KEY)
    return table.drop_duplicates("run").reset_index(drop=True)


def _layers(spec: str, n_layers: int) -> list[int]:
    return list(parse_layers("all" if spec == "all + L1" else spec, n_layers))


def _kept(ctx: Context, name: str, parts: tuple[Any, ...], compute: Callable[[], Tensor]) -> Tensor:
    """``compute()``'s tensor, kept in the run cache under a key of ``parts`` and the host."""
    f = ctx.figures
    key = cache_key("predict", VERSION, f.host, f.dtype, *parts)
    path = f.runs_dir / "predict" / f"{name}-{key}.safetensors"
    if path.exists():
        return load_file(str(path))["value"]
    value = compute()
    save_tensors_atomic({"value": value.contiguous()}, path, {"what": name})
    return value


def _vectors_of(fit: Callable[[], BiasFit]) -> Callable[[], Tensor]:
    return lambda: fit().vectors


def _lens_texts(n: int) -> list[str]:
    """``n`` training rows, the voices taking turns, as plain question-and-answer text."""
    parts = [load_dataset(e, split="train") for e in EMOTIONS]
    rows = pd.concat([p.iloc[i : i + 1] for i in range(n) for p in parts]).head(n)
    return (rows["question"] + " " + rows["answer"]).tolist()


def _computed_with(ctx: Context) -> dict[str, Any]:
    """What the ranks depend on besides the runs, written to the result's settings: a later
    invocation reads a committed run's ranks only when these match."""
    f = ctx.figures
    return {
        "version": VERSION,
        "host": f.host,
        "dtype": f.dtype,
        "fast": f.fast,
        "rows_per_gradient": SMOKE_ROWS if f.fast else ROWS,
        "fit_steps": SMOKE_FIT_STEPS if f.fast else FIT_STEPS,
        "max_len": MAX_LEN,
        "lens_texts": SMOKE_ROWS if f.fast else LENS_TEXTS,
    }


def _settings_of(config: dict[str, Any]) -> dict[str, Any]:
    """The settings a committed result was computed with; a result written before they were
    recorded ran version 1 (128-token rows, the lens on 32 texts or the smoke run's 8)."""
    if config.get("settings"):
        return dict(config["settings"])
    s, f = config["summary"], config["figures_config"]
    return {
        "version": 1,
        "host": f["host"],
        "dtype": f["dtype"],
        "fast": f["fast"],
        "rows_per_gradient": s["rows_per_gradient"],
        "fit_steps": s["fit_steps"],
        "max_len": 128,
        "lens_texts": SMOKE_ROWS if f["fast"] else 32,
    }


def committed_ranks(
    out: Path, computed_with: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """The committed result's validated runs, predictions and summary when ``computed_with``
    computed them (the cache of record: a run found there with the same top index is not
    computed again); empty tables otherwise."""
    folder = out / "predict"
    paths = [folder / name for name in ("config.json", "data.csv", "predictions.csv")]
    if not all(p.exists() for p in paths):
        return pd.DataFrame(), pd.DataFrame(), {}
    config = json.loads(paths[0].read_text())
    if _settings_of(config) != computed_with:
        return pd.DataFrame(), pd.DataFrame(), {}
    data = pd.read_csv(paths[1], dtype={c: str for c in KEY if c != "top_index"})
    predictions = pd.read_csv(paths[2], dtype={"emotion": str, "objective": str})
    if not set(RANKS) <= set(data.columns):
        return pd.DataFrame(), pd.DataFrame(), {}
    return data[[*KEY, *RANKS]].drop_duplicates(KEY), predictions, dict(config["summary"])


@dataclasses.dataclass
class _Computed:
    ranks: pd.DataFrame  # RANKS for the given runs, on their index
    predictions: dict[tuple[str, str], pd.DataFrame]  # the top SHOWN per pair
    predicted: dict[tuple[str, str], int]
    fitted: dict[tuple[str, str], int]
    d_model: int


def _compute(ctx: Context, runs: pd.DataFrame, pairs: list[tuple[str, str]]) -> _Computed:
    """The host's gradients, bias fits and transport lever for ``pairs`` (each kept in the run
    cache), and the ranks of ``runs``' top indices in them."""
    settings = _computed_with(ctx)
    n_rows, fit_steps, n_texts = (
        settings["rows_per_gradient"],
        settings["fit_steps"],
        settings["lens_texts"],
    )
    host = ctx.host()
    n_layers, d_model = host.cfg.n_layers, host.cfg.d_model
    massive = host_profile(host, PAPER_PROMPTS, mode="plain")["massive"]["index"].tolist()
    levers = host_levers(host, massive)
    grads: dict[tuple[str, str], torch.Tensor] = {}
    fits: dict[tuple[str, str], torch.Tensor] = {}
    for emotion, objective in pairs:
        o, mode = _objective(objective)
        rows = load_dataset(emotion, split="train").head(n_rows)
        gradient = functools.partial(
            bias_gradients,
            host,
            rows,
            objective=o,
            mode=mode,
            max_len=MAX_LEN,
            progress=ctx.progress,
        )
        grads[(emotion, objective)] = _kept(
            ctx, "gradient", (emotion, objective, n_rows, MAX_LEN), gradient
        )
        fit = functools.partial(
            fit_bias,
            host,
            load_dataset(emotion, split="train"),
            objective=o,
            mode=mode,
            max_len=MAX_LEN,
            steps=fit_steps,
            progress=ctx.progress,
        )
        fits[(emotion, objective)] = _kept(
            ctx, "fit", (emotion, objective, fit_steps, MAX_LEN), _vectors_of(fit)
        )
    transport = _kept(
        ctx,
        "transport",
        (n_texts, MAX_LEN),
        lambda: transport_levers(
            host,
            _lens_texts(n_texts),
            max_seq_len=MAX_LEN,
            skip_first_positions=2 if ctx.figures.fast else 16,
            progress=ctx.progress,
        ),
    )
    ranks = []
    for r in runs.itertuples():
        key = (r.emotion, r.objective)
        layers = _layers(r.layers, n_layers)
        table = predict_index(grads[key], layers, levers, fits[key], transport)
        table = table.set_index("index")
        ranks.append(
            {
                "predicted_index": int(table["rank"].idxmin()),
                **{
                    f"{score}_rank": int(table.loc[r.top_index, col])
                    for score, col in SCORES.items()
                },
            }
        )
    return _Computed(
        ranks=pd.DataFrame(ranks, index=runs.index, columns=RANKS),
        predictions={
            pair: predict_index(g, levers=levers, fitted=fits[pair], transport=transport)
            .head(SHOWN)
            .assign(emotion=pair[0], objective=pair[1])
            for pair, g in grads.items()
        },
        predicted={pair: int(predict_index(g).iloc[0]["index"]) for pair, g in grads.items()},
        fitted={
            pair: int(predict_index(g, fitted=fits[pair]).sort_values("fit_rank").iloc[0]["index"])
            for pair, g in grads.items()
        },
        d_model=d_model,
    )


def _pairs_of(frame: pd.DataFrame) -> list[tuple[str, str]]:
    return list(frame[["emotion", "objective"]].itertuples(index=False, name=None))


def _name(pair: tuple[str, str]) -> str:
    return f"{pair[0]} / {pair[1]}"


def main(ctx: Context) -> PredictSummary:
    runs = trained_tops(ctx.out)
    if ctx.figures.fast:  # the smoke pipeline: its own runs' emotions only
        runs = runs[runs["emotion"].isin(ctx.figures.emotions)].reset_index(drop=True)
    settings = _computed_with(ctx)
    old, old_predictions, old_summary = committed_ranks(ctx.out, settings)
    data = runs.merge(old, on=KEY, how="left") if len(old) else runs.reindex(columns=[*KEY, *RANKS])
    pairs = list(dict.fromkeys(_pairs_of(runs)))  # in the runs' order, once each
    known = set(_pairs_of(old_predictions)) if len(old_predictions) else set()
    for field in ("predicted", "fitted"):
        known &= {p for p in pairs if _name(p) in old_summary.get(field, {})}
    missing = data[RANKS].isna().any(axis=1)
    todo = {p for p in pairs if p not in known} | set(_pairs_of(data[missing]))
    redo = pd.Series([p in todo for p in _pairs_of(data)], index=data.index, dtype=bool)
    print(
        f"predict: {int((~redo).sum())} of {len(data)} runs ranked by the committed result; "
        f"computing {len(todo)} of {len(pairs)} emotion-objective pairs"
    )
    computed = _compute(ctx, data[redo], [p for p in pairs if p in todo]) if todo else None
    if computed is not None:
        data.loc[redo, RANKS] = computed.ranks
        d_model = computed.d_model
    elif "d_model" in old_summary:
        d_model = int(old_summary["d_model"])
    else:  # no trained run to validate yet
        d_model = ctx.host().cfg.d_model
    data[RANKS] = data[RANKS].astype(int)
    kept = [p for p in pairs if p not in todo]  # read back from the committed result
    tables = {p: old_predictions[[q == p for q in _pairs_of(old_predictions)]] for p in kept}
    predicted = {p: int(old_summary["predicted"][_name(p)]) for p in kept}
    fitted = {p: int(old_summary["fitted"][_name(p)]) for p in kept}
    if computed is not None:
        tables |= computed.predictions
        predicted |= computed.predicted
        fitted |= computed.fitted
    predictions = (
        pd.concat([tables[p] for p in pairs], ignore_index=True) if pairs else pd.DataFrame()
    )
    validation = {
        score: validate_prediction(data[f"{score}_rank"].tolist(), d_model) for score in SCORES
    }
    by_objective = {
        score: {
            kind: dataclasses.asdict(validate_prediction(g[f"{score}_rank"].tolist(), d_model))
            for kind, g in data.groupby("objective")
        }
        for score in SCORES
    }
    summary = PredictSummary(
        n_runs=len(data),
        d_model=d_model,
        rows_per_gradient=settings["rows_per_gradient"],
        fit_steps=settings["fit_steps"],
        validation={s: dataclasses.asdict(v) for s, v in validation.items()},
        by_objective=by_objective,
        verdicts={s: predictor_rule(v) for s, v in validation.items()},
        predicted={_name(p): predicted[p] for p in pairs},
        fitted={_name(p): fitted[p] for p in pairs},
    )
    figure = predict_figure(data, predictions, summary)
    write_result(
        ctx,
        "predict",
        data,
        figure,
        summary=summary,
        runs=[],
        size=(1300, 650),
        settings=settings,
        tables={"predictions": predictions},
    )
    return summary
