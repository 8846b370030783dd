"""How fast the command line answers: ``irm-lens --help`` and a verb's ``--help`` against a bare
interpreter start, interleaved in one run (target: under 1 s; the parser imports no torch).

    python -m benchmarks.bench_cli
"""

from __future__ import annotations

import subprocess
import sys

from benchmarks._timing import interleaved_medians


def _run(*args: str) -> None:
    subprocess.run([sys.executable, *args], check=True, capture_output=True)


def main() -> None:
    medians = interleaved_medians(
        {
            "python -c pass": lambda: _run("-c", "pass"),
            "irm-lens --help": lambda: _run("-m", "irm_lens.cli", "--help"),
            "irm-lens train --help": lambda: _run("-m", "irm_lens.cli", "train", "--help"),
        },
        repeats=7,
    )
    base = medians["python -c pass"]
    for name, seconds in medians.items():
        print(f"{name:<24} median {seconds:.3f} s   ({seconds / base:.1f}x a bare interpreter)")
    worst = max(medians["irm-lens --help"], medians["irm-lens train --help"])
    print(f"target: under 1 s -> {'met' if worst < 1.0 else 'NOT met'} ({worst:.3f} s)")


if __name__ == "__main__":
    main()
