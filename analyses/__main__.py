"""``make figures``: train (or reuse) the run set, then write every result and the report.

    python -m analyses                 # everything, settings from HOST, SEEDS, PRESET, FAST, ...
    python -m analyses --only striation,report
    python -m analyses --list
    TIER=mechanism python -m analyses  # what makes one index dominate: profile, rotated host, SGD
    TIER=explain python -m analyses    # why one index: the original's loss quirks separated

Settings come from environment variables (``make figures HOST=... SEEDS=...`` passes them); see
``analyses._config.FiguresConfig.from_env``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

from analyses._common import Context
from analyses._config import FiguresConfig
from analyses._runset import run_specs, stage_done
from analyses._written import check_writable
from irm_lens.errors import IrmLensError
from irm_lens.training.distributed import launched

# In order: later results reuse what earlier ones computed (the dominant index, host profile).
RESULTS = (
    "fig2_heatmaps",
    "fig3_timing",
    "fig4_comparison",
    "striation",
    "dominant_index",
    "host_profile",
    "propagation",
    "logit_attribution",
    "residual_control",
    "mediation",
    "ablation",
    "evaluation",
    "atlas",
    "lenses",
    "report",
)
# The heavier experiments, run apart: `make figures TIER=mechanism` (it trains the
# first seed's runs again on the rotated-basis host, with SGD, with masked indices, on the paper's
# layer sets and with L1: 75 minutes on 2 CPU cores, measured).
MECHANISM = ("index_profile", "rotation", "masked", "matrix", "report")
# The long trajectory: five IRMs trained up to 480 steps (the original's loss 240),
# measured at a schedule of steps; it picks the default budget. Hours on 2 CPU cores, minutes on
# a GPU.
LONG = ("trajectory",)
# Why one index: the original's loss quirks separated, 16 runs of 60 steps, and six runs
# trained to early stop where concentration was largest (hours on 2 CPU cores). It rewrites the
# report when the default tier's results are there.
# `predict` reads the top index of every run trained before it (the tier's own included) and
# `why` every result before it; `why` then rewrites the report.
EXPLAIN = ("steering", "baselines", "subspace", "longer", "explain", "predict", "why")
TIERS = {"default": RESULTS, "mechanism": MECHANISM, "long": LONG, "explain": EXPLAIN}
KNOWN = tuple(dict.fromkeys(RESULTS + MECHANISM + LONG + EXPLAIN))


def _fail(message: str, code: int) -> int:
    print(f"make figures: {message}", file=sys.stderr)
    return code


def tier_results(env: dict[str, str] | None = None) -> tuple[str, ...]:
    """The results of the tier named by ``TIER`` (default: the paper's figures)."""
    tier = (os.environ if env is None else env).get("TIER", "").strip() or "default"
    if tier not in TIERS:
        raise IrmLensError(f"TIER={tier!r}; use one of {list(TIERS)}.")
    return TIERS[tier]


def run(names: tuple[str, ...] | None = None, *, progress: bool = True) -> int:
    """Run the named results (default: the ``TIER``'s) after making sure the run set exists;
    returns an exit code."""
    started = time.monotonic()
    try:
        names = tier_results() if names is None else names
        figures = FiguresConfig.from_env()
        check_writable(figures.runs_dir)
        check_writable(figures.out_path)
        ctx = Context(figures, progress=progress)
        print(
            f"make figures: host {figures.host_label}, preset {figures.preset}, seeds "
            f"{list(figures.seeds)}, {len(ctx.specs)} runs -> {figures.out_path}",
            flush=True,
        )
        ctx.host()  # loads the host and checks its generation before anything is written
        modules = [importlib.import_module(f"analyses.{name}") for name in names]
        if any(getattr(m, "NEEDS_RUN_SET", True) for m in modules):
            ctx.cold = not any(
                stage_done(s.directory(figures), "train") for s in run_specs(figures)
            )
            ctx.runs  # noqa: B018 (trains, records and evaluates what is not cached)
            ctx.timings["run set"] = time.monotonic() - started
            print(
                f"make figures: run set ready after {time.monotonic() - started:.0f} s", flush=True
            )
        world = launched()
        if not world.is_main:  # under torchrun the ranks share the runs; rank 0 writes results
            print(f"make figures: rank {world.rank} done; rank 0 writes the results", flush=True)
            return 0
        for i, (name, module) in enumerate(zip(names, modules, strict=True), start=1):
            t0 = time.monotonic()
            module.main(ctx)
            ctx.timings[name] = time.monotonic() - t0
            print(f"[{i}/{len(names)}] {name}: {ctx.timings[name]:.1f} s", flush=True)
    except KeyboardInterrupt:
        return _fail("interrupted. Finished runs and stages are cached; run again to resume.", 130)
    except IrmLensError as exc:
        return _fail(f"error: {exc}", 2)
    except OSError as exc:  # a full disk or vanished directory mid-run: nothing half-written
        return _fail(f"error: {exc}. Cached runs are consistent; fix this and run again.", 2)
    print(f"make figures: done in {time.monotonic() - started:.0f} s", flush=True)
    return 0


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analyses",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--only", help="comma-separated results to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list results and runs, then exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.list:
        for tier, results in TIERS.items():
            print(f"results (TIER={tier}):", ", ".join(results))
        try:
            specs = run_specs(FiguresConfig.from_env())
        except IrmLensError as exc:
            return _fail(f"error: {exc}", 2)
        print("runs:", ", ".join(s.name for s in specs))
        return 0
    names = None
    if args.only:
        names = tuple(n.strip() for n in args.only.split(",") if n.strip())
        unknown = [n for n in names if n not in KNOWN]
        if unknown:
            return _fail(f"error: unknown results {unknown}; choose from {list(KNOWN)}.", 2)
    return run(names, progress=not args.no_progress)


if __name__ == "__main__":
    sys.exit(cli())
