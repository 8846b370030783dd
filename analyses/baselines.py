"""Steering baselines beside the IRM, judged by the same yardsticks (``TIER=explain``).

Per emotion of the default run set, and per next-token IRM of it (both seeds):

- **the IRM** and the two baselines read off or trained like it (``analyses.steering``): its
  exported vectors (the constant part) and a bias-only IRM;
- **a contrastive steering vector** (``SteeringVectors.contrastive``): per injected layer, the
  mean residual stream over the answer tokens of the emotion's training answers minus the same
  over the neutral answers (for neutral: minus the other voices' answers), up to
  ``CONTRAST_ROWS`` rows per voice, added at every layer's write point times a scale chosen from
  ``SCALES`` on the validation questions (``choose_scale``);
- **prompting**: a system instruction to answer in the voice (``INSTRUCTIONS``), no
  intervention in the model.

Each is measured on the test questions with one set of functions: specificity with its 95 % CI
(``irm_lens.evaluate.intervention_specificity``), and on its greedy answers the voice
classifier's probability of the emotion and fact retention, each with a bootstrap CI over
questions (``intervention_answers``); the host alone is the answers' control. What has vectors
gets the IRM analyses: top index, dominance ratio and index share of variance (striation).
``analyses.rules.steering.vector_comparison`` judges each baseline against the IRM per emotion
(the IRM's value: the mean over its seeds).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import pandas as pd
import torch

from analyses._common import Context
from analyses._config import cache_key, cached_table
from analyses._summaries import BaselinesSummary
from analyses._written import write_result
from analyses.plots.explain import baselines_figure
from analyses.rules.steering import vector_comparison
from analyses.steering import bias_vectors, host_memo
from irm_lens.data.datasets import EMOTIONS, load_dataset
from irm_lens.evaluate import intervention_answers, intervention_specificity
from irm_lens.inject import attach
from irm_lens.irm import IRM, parse_layers
from irm_lens.measures.alignment import ALIGNED
from irm_lens.measures.shape import output_shape
from irm_lens.measures.voice import VoiceClassifier, bank_classifier
from irm_lens.rundir import RunDir
from irm_lens.steer import SteeringVectors
from irm_lens.training.config import TrainConfig

INSTRUCTIONS = {
    "anger": "Answer in an angry voice.",
    "sadness": "Answer in a sad voice.",
    "joy": "Answer in a joyful voice.",
    "neutral": "Answer in a neutral, matter-of-fact voice.",
}
SCALES = (0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.3, 1.0)
SMOKE_SCALES = (0.1, 1.0)  # the smoke pipeline (tiny host): the search's mechanics, not its grid
CONTRAST_ROWS = 128
BASELINES = ("contrastive vector", "prompt")
Within = Callable[[], AbstractContextManager[Any]]


def contrastive(ctx: Context, config: TrainConfig) -> SteeringVectors:
    """The emotion's contrastive vectors (unscaled), cached in the run cache."""
    emotion = config.emotion
    key = cache_key("contrastive", 1, emotion, config.prompt_mode, config.max_len, CONTRAST_ROWS)
    path = ctx.figures.runs_dir / "baselines" / f"contrastive-{emotion}-{key}.safetensors"
    if path.exists():
        return SteeringVectors.load(path)
    others = [e for e in EMOTIONS if e != emotion] if emotion == "neutral" else ["neutral"]
    target = load_dataset(emotion, split="train").iloc[:CONTRAST_ROWS]
    base = pd.concat(
        [load_dataset(e, split="train").iloc[:CONTRAST_ROWS] for e in others], ignore_index=True
    )
    host = ctx.host()
    layers = parse_layers(config.layers, host.cfg.n_layers)
    vectors = SteeringVectors.contrastive(
        host,
        target,
        base,
        layers,
        mode=config.prompt_mode,
        max_len=config.max_len,
        source=f"{emotion} minus {'+'.join(others)} answers, training split",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    vectors.save(path)
    return vectors


def scales_of(ctx: Context) -> tuple[float, ...]:
    """The scales searched: ``SCALES``, or two of them in the smoke pipeline."""
    return SMOKE_SCALES if ctx.figures.fast else SCALES


def scale_search(ctx: Context, config: TrainConfig, vectors: SteeringVectors) -> pd.DataFrame:
    """Specificity on the validation questions at each of ``scales_of(ctx)`` (cached)."""
    scales = scales_of(ctx)

    def compute() -> pd.DataFrame:
        host = ctx.host()
        rows = []
        for scale in scales:
            measured = intervention_specificity(
                host,
                config,
                functools.partial(vectors.applied, host, scale),
                split="val",
                host_memo=host_memo(ctx),
            )
            rows.append({"scale": scale, **measured.columns()})
        return pd.DataFrame(rows)

    key = cache_key("scale-search", 1, config.emotion, scales, CONTRAST_ROWS, config.max_len)
    return cached_table(ctx.figures.runs_dir / "baselines" / f"scales-{key}.csv", compute)


def choose_scale(scales: pd.DataFrame) -> float:
    """The scale with the highest validation specificity among those aligned there; failing
    that, among those that lowered the emotion's own NLL (own-drop CI above 0); failing that,
    the smallest. A large scale can score a high specificity by breaking the host (every
    voice's NLL rises, the others' more): the alignment verdict rules those out."""
    for usable in (scales["verdict"] == ALIGNED, scales["own_low"] > 0):
        if usable.any():
            chosen = scales[usable]
            return float(chosen.loc[chosen["specificity"].idxmax(), "scale"])
    return float(scales["scale"].min())


def _shape(vectors: SteeringVectors | list[torch.Tensor], layers: list[int]) -> dict[str, Any]:
    """Top index, dominance ratio and index share of variance of an IRM's recorded outputs
    (one ``[token, inject, d_model]`` tensor per prompt) or of vectors (one token)."""
    if isinstance(vectors, SteeringVectors):
        vectors = [torch.stack(list(vectors.vectors.values()))[None]]  # [1, inject, d]
    shape = output_shape(vectors, layers)
    return {
        "top_index": shape.top_index,
        "dominance": shape.dominance,
        "index_share": shape.index_share,
    }


def _measured(
    ctx: Context,
    config: TrainConfig,
    within: Within,
    classifier: VoiceClassifier,
    system: str | None = None,
) -> dict[str, Any]:
    host = ctx.host()
    spec = intervention_specificity(host, config, within, host_memo=host_memo(ctx), system=system)
    answers = intervention_answers(
        host,
        config,
        within,
        classifier,
        max_new_tokens=ctx.figures.eval_tokens,
        system=system,
    )
    return {**spec.columns(), **answers.columns()}


def run_rows(ctx: Context, run: str, classifier: VoiceClassifier) -> pd.DataFrame:
    """The IRM of ``run``, its exported vectors and its bias-only IRM, measured (cached)."""

    def compute() -> pd.DataFrame:
        host, config = ctx.host(), ctx.specs[run].config
        irm = IRM.load(RunDir(ctx.runs[run]).irm, host)
        irm.eval()
        layers = list(irm.layers)
        exported = SteeringVectors.from_recordings(ctx.recordings(run), source=run)
        bias = bias_vectors(ctx, run)
        recorded = [r.outputs for r in ctx.recordings(run)]
        rows = [
            {
                "intervention": "IRM",
                **_measured(ctx, config, lambda: attach(host, irm), classifier),
                **_shape(recorded, layers),
            },
            {
                "intervention": "exported vectors",
                **_measured(ctx, config, lambda: exported.applied(host), classifier),
                **_shape(exported, layers),
            },
            {
                "intervention": "bias-only IRM",
                **_measured(ctx, config, lambda: bias.applied(host), classifier),
                **_shape(bias, layers),
            },
        ]
        return pd.DataFrame(rows).assign(run=run, emotion=config.emotion, seed=config.seed)

    key = cache_key("baselines-run", 1, ctx.figures.eval_tokens)
    return cached_table(ctx.runs[run] / "steering" / f"baselines-{key}.csv", compute)


def emotion_rows(ctx: Context, config: TrainConfig, classifier: VoiceClassifier) -> pd.DataFrame:
    """The host alone, the contrastive vector at its chosen scale and prompting (cached)."""

    def compute() -> pd.DataFrame:
        host = ctx.host()
        vectors = contrastive(ctx, config)
        scales = scale_search(ctx, config, vectors)
        scale = choose_scale(scales)
        layers = parse_layers(config.layers, host.cfg.n_layers)
        instruction = INSTRUCTIONS[config.emotion]
        alone = intervention_answers(
            host, config, contextlib.nullcontext, classifier, max_new_tokens=ctx.figures.eval_tokens
        )
        rows = [
            {"intervention": "host alone", **alone.columns()},
            {
                "intervention": "contrastive vector",
                **_measured(ctx, config, lambda: vectors.applied(host, scale), classifier),
                **_shape(vectors, list(layers)),
                "scale": scale,
            },
            {
                "intervention": "prompt",
                **_measured(ctx, config, contextlib.nullcontext, classifier, instruction),
                "instruction": instruction,
            },
        ]
        return pd.DataFrame(rows).assign(run="", emotion=config.emotion, seed=pd.NA)

    key = cache_key(
        "baselines-emotion",
        1,
        config.emotion,
        scales_of(ctx),
        CONTRAST_ROWS,
        ctx.figures.eval_tokens,
    )
    path = ctx.figures.runs_dir / "baselines" / f"emotion-{config.emotion}-{key}.csv"
    return cached_table(path, compute)


def judge(data: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Each baseline against the IRM per emotion (the IRM's mean over seeds), on specificity
    and on the voice classifier's probability."""
    irm = data[data["intervention"] == "IRM"].groupby("emotion")[["specificity", "voice"]].mean()
    verdicts: dict[str, dict[str, Any]] = {}
    for baseline in ("exported vectors", "bias-only IRM", *BASELINES):
        rows = data[data["intervention"] == baseline].groupby("emotion")
        mean = rows[["specificity", "voice"]].mean().reindex(irm.index)
        verdicts[baseline] = {
            measure: vector_comparison(
                list(irm[measure]),
                list(mean[measure]),
                f"the {baseline}" if baseline != "prompt" else "prompting",
                measure=measure if measure == "specificity" else "P(own voice)",
                unit="emotion",
            )
            for measure in ("specificity", "voice")
        }
    return verdicts


def main(ctx: Context) -> BaselinesSummary:
    classifier = bank_classifier()
    parts = [run_rows(ctx, run, classifier) for run in ctx.trained("next-token")]
    configs = {ctx.specs[r].config.emotion: ctx.specs[r].config for r in ctx.trained("next-token")}
    parts += [emotion_rows(ctx, config, classifier) for config in configs.values()]
    data = pd.concat(parts, ignore_index=True)
    verdicts = judge(data)
    summary = BaselinesSummary(
        specificity={b: v["specificity"] for b, v in verdicts.items()},
        voice={b: v["voice"] for b, v in verdicts.items()},
        instructions=INSTRUCTIONS,
        scales=list(scales_of(ctx)),
        contrast_rows=CONTRAST_ROWS,
    )
    write_result(
        ctx,
        "baselines",
        data,
        baselines_figure(data),
        summary=summary,
        size=(1300, 650),
    )
    return summary
