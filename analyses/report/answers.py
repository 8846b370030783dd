"""The report's first screen: one row per claim of the paper, with the paper's evidence, what this
host measured (with its CI), the verdicts, and what would change them; and the log of verdicts
that changed between invocations (``verdict_changes.json``), so a changed verdict is told with
its numbers even after the report is written again.
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from analyses._summaries import Rules
from analyses.rules.acting import EARLY, LEVER_PERCENTILE, MEDIATED
from analyses.rules.base import Verdict
from analyses.rules.paper import DOMINANT_GAP, MIN_SHARE_EFFECT, OVERLAP_OVER_CHANCE, STRONG_SHARE
from irm_lens.files import write_text_atomic

CHANGES = "verdict_changes.json"
"""Beside the report: every verdict that differed from the previous ``verdicts.json``."""


def _num(effects: Mapping[str, float], key: str, fmt: str = ".3f") -> str:
    value = effects.get(key, math.nan)
    return "n/a" if value != value else format(value, fmt)


def _ci(e: Mapping[str, float], key: str, fmt: str = ".3f") -> str:
    return f"{_num(e, key, fmt)} [{_num(e, key + '_low', fmt)}, {_num(e, key + '_high', fmt)}]"


def _striation(e: Mapping[str, float]) -> str:
    return (
        f"index share {_ci(e, 'index_share')} vs layer share {_num(e, 'layer_share')}; "
        f"null median {_num(e, 'control_share')}"
    )


def _consistency(e: Mapping[str, float]) -> str:
    return (
        f"index {_num(e, 'top1_index', '.0f')} top 1 in {_num(e, 'top1_runs', '.0f')}/"
        f"{_num(e, 'n_runs', '.0f')} runs; top-k overlap "
        f"{_num(e, 'overlap_over_chance', '.0f')}x chance"
    )


def _dominance(e: Mapping[str, float]) -> str:
    return (
        f"top / runner-up {_ci(e, 'gap', '.2f')}; ratio {_num(e, 'ratio', '.2f')} vs "
        f"null max {_num(e, 'null_max', '.2f')}"
    )


def _timing(e: Mapping[str, float]) -> str:
    return (
        f"{_num(e, 'true_order', '.0%')} before the midpoint (null "
        f"{_num(e, 'true_control', '.0%')}); original's order {_num(e, 'file_order', '.0%')}"
        f" (null {_num(e, 'file_control', '.0%')})"
    )


def _residual(e: Mapping[str, float]) -> str:
    return (
        f"index share of rotated deltas {_num(e, 'delta_share')}, own outputs "
        f"{_num(e, 'output_share')}, null {_num(e, 'control_share')}"
    )


def _lm_head(e: Mapping[str, float]) -> str:
    return (
        f"{_num(e, 'mediated', '.0%')} of the NLL gain via the final norm's scale; lever "
        f"beats {_num(e, 'lever_percentile', '.0%')} of indices"
    )


# claim title -> (the paper's evidence, what this host's row reads, what would change it)
ANSWERS: dict[str, tuple[str, Callable[[Mapping[str, float]], str], str]] = {
    "Large IRM outputs form vertical striations by residual index": (
        "Fig. 2 heatmaps of 24 runs: stripes by residual index, not by layer",
        _striation,
        f"reproduced if the index share reached {STRONG_SHARE} (CI of index minus layer above "
        f"0); not reproduced if the layer share overtook the index share or the share fell "
        f"within {MIN_SHARE_EFFECT} of the null",
    ),
    "The same residual index tops every alignment": (
        "1512 stands out in every alignment (Figs. 2, 4)",
        _consistency,
        f"one index top 1 in every aligned run; top-k overlap below {OVERLAP_OVER_CHANCE:g}x "
        "chance makes it not reproduced",
    ),
    "One residual index dominates every alignment (1512 on Llama-2-7B)": (
        "1512 visibly above every other index (Fig. 2)",
        _dominance,
        f"the top index at {DOMINANT_GAP:g}x the runner-up (CI) reproduces; ratios within the "
        "null's range make it not reproduced",
    ),
    "Most large outputs happen early in inference": (
        "Fig. 3: top-1000 values counted by token, most early",
        _timing,
        f"{EARLY:.0%} before the midpoint in both orders, beyond every untrained IRM",
    ),
    "The residual architecture explains the striations": (
        "the authors' explanation, not a measurement",
        _residual,
        "stripes in the IRM's own basis under a rotated injection make it partly; none in the "
        "residual basis, not reproduced",
    ),
    "The dominant index acts through the LM head / final norm, not as a feature": (
        "the authors' call to re-examine the LM head",
        _lm_head,
        f"needs a dominant index first; then {MEDIATED:.0%} of the gain through the norm's scale "
        f"and a lever above the {LEVER_PERCENTILE:.0%} percentile",
    ),
}


def answer_table(claims: list[tuple[str, Rules]], budget: str) -> list[str]:
    """One row per claim: the paper's evidence, this host's measurement (next-token runs at
    ``budget``), the verdict per column, and what would change it."""
    rows = [
        f"| claim | the paper's evidence | measured here (aligned next-token runs, {budget}; "
        "median [95 % CI]) | next-token | original's loss | long tier | what would change it |",
        "|---|---|---|---|---|---|---|",
    ]
    for title, rules in claims:
        evidence, measured, change = ANSWERS[title]
        effects = rules["next-token"].effects
        reading = (
            measured(effects)
            if "n_runs" in effects and len(effects) > 2
            else (rules["next-token"].reason)
        )
        long = rules["long"].verdict if "long" in rules else "not run"
        rows.append(
            f"| {title} | {evidence} | {reading} | **{rules['next-token'].verdict}** | "
            f"{rules['paper loss'].verdict} | {long} | {change} |"
        )
    return rows


def _flat(verdicts: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in verdicts.items():
        if isinstance(value, Mapping):
            flat.update(_flat(value, f"{prefix}{key} / "))
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat


def log_changes(out: Path, new: Mapping[str, Any], reasons: Mapping[str, Verdict]) -> None:
    """Append to ``verdict_changes.json`` every verdict of ``new`` that differs from the
    ``verdicts.json`` in ``out`` (nothing when there is none yet); ``reasons``: flat key ->
    the verdict whose reason explains the new value."""
    path = out / "verdicts.json"
    if not path.exists():
        return
    old, fresh = _flat(json.loads(path.read_text())), _flat(new)
    changed = [k for k in fresh if k in old and old[k] != fresh[k]]
    if not changed:
        return
    log = changes(out)
    today = datetime.date.today().isoformat()
    for key in changed:
        why = reasons[key].reason if key in reasons else ""
        log.append({"date": today, "claim": key, "was": old[key], "now": fresh[key], "why": why})
    write_text_atomic(out / CHANGES, json.dumps(log, indent=2))


def changes(out: Path) -> list[dict[str, str]]:
    path = out / CHANGES
    return list(json.loads(path.read_text())) if path.exists() else []


def change_lines(out: Path) -> list[str]:
    """The section listing every logged verdict change, newest first."""
    log = changes(out)
    if not log:
        return []
    lines = [
        "### Verdict changes",
        "",
        f"Verdicts that differ from an earlier report (`{CHANGES}`), with the numbers "
        "that decided the new one:",
        "",
    ]
    for c in reversed(log):
        why = f": {c['why']}" if c["why"] else ""
        lines.append(f"- {c['date']}, {c['claim']}: {c['was']} -> **{c['now']}**{why}.")
    return [*lines, ""]
