"""The layout's rules, checked on the source: the toolkit never imports the paper's pipeline,
hook names are spelled only in ``irm_lens/inject.py``, a run's file names only in
``irm_lens/rundir.py``, and the final norm's gain and the unembedding are read only in
``irm_lens/anatomy.py``."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from irm_lens.rundir import RECORDING_INFO, RunDir

ROOT = Path(__file__).resolve().parents[1]
TOOLKIT = sorted((ROOT / "irm_lens").rglob("*.py"))
PIPELINE = sorted((ROOT / "analyses").rglob("*.py"))
HOOK_NAME = re.compile(
    r"((blocks\.\{\}|blocks\.\d+)\.)?([\w.]*\.)?hook_\w+|(irm|ln_final)\.hook_\w+"
)
# "config.json" and "summary.json" also name a Hugging Face model's config and other results'
# summaries, so only the names nothing else uses are held to their owner.
RUN_FILE_NAMES = {
    RunDir.IRM,
    RunDir.LAST,
    RunDir.METRICS,
    RunDir.EVALUATION,
    RunDir.GENERATIONS,
    RECORDING_INFO,
}


def _strings(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """Every string literal that is not a docstring, f-strings with ``{}`` for each field."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = [v.value if isinstance(v, ast.Constant) else "{}" for v in node.values]
            yield node.lineno, "".join(str(p) for p in parts)
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
        ):
            yield node.lineno, node.value


def _where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


def test_the_toolkit_never_imports_the_pipeline() -> None:
    offenders = []
    for path in TOOLKIT:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [_where(path, node.lineno) for n in names if n.split(".")[0] == "analyses"]
    assert offenders == [], f"irm_lens/ imports analyses/ at {offenders}"


@pytest.mark.parametrize(
    "owner, pattern, others",
    [
        ("irm_lens/inject.py", "hook", TOOLKIT + PIPELINE),
        ("irm_lens/rundir.py", "run file", TOOLKIT + PIPELINE),
    ],
)
def test_each_name_is_spelled_by_its_owner_alone(
    owner: str, pattern: str, others: list[Path]
) -> None:
    offenders = []
    for path in others:
        if path == ROOT / owner:
            continue
        for line, text in _strings(ast.parse(path.read_text(encoding="utf-8"))):
            hit = HOOK_NAME.fullmatch(text) if pattern == "hook" else text in RUN_FILE_NAMES
            if hit:
                offenders.append(f"{_where(path, line)} {text!r}")
    assert offenders == [], f"spell these through {owner}: {offenders}"


def test_no_private_name_is_imported_across_modules() -> None:
    """A name with a leading underscore stays in its module (private modules of the pipeline,
    ``analyses._common`` and friends, are imported by name, their names public)."""
    offenders = []
    for path in TOOLKIT + PIPELINE:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in (
                "irm_lens",
                "analyses",
            ):
                names = [
                    a.name
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")  # dunders are public
                ]
                offenders += [f"{_where(path, node.lineno)} {n}" for n in names]
    assert offenders == [], f"private names imported across modules: {offenders}"


# Arrows that would run backwards: the model knowing its training config, data running a host.
BACKWARDS = {
    "irm_lens/irm.py": ("irm_lens.training",),
    "irm_lens/data": ("irm_lens.host", "irm_lens.canary", "irm_lens.inject", "irm_lens.record"),
}


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.lineno, node.module


def test_no_arrow_runs_back_up() -> None:
    offenders = []
    for where, banned in BACKWARDS.items():
        base = ROOT / where
        for path in [base] if base.is_file() else sorted(base.rglob("*.py")):
            offenders += [
                f"{_where(path, line)} imports {module}"
                for line, module in _imports(path)
                if module.startswith(banned)
            ]
    assert offenders == [], offenders


ANATOMY = {"W_U", "ln_final"}


def _anatomy_reads(tree: ast.AST) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ANATOMY:
            yield node.lineno, node.attr


def test_the_host_anatomy_is_read_by_its_owner_alone() -> None:
    offenders = [
        f"{_where(path, line)} .{attr}"
        for path in TOOLKIT + PIPELINE
        if path != ROOT / "irm_lens/anatomy.py"
        for line, attr in _anatomy_reads(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert offenders == [], f"read these through irm_lens.anatomy: {offenders}"


def test_the_checks_catch_what_they_are_for() -> None:
    """The scans above see an f-string hook name and a bare run-file name (they can fail)."""
    tree = ast.parse('x = f"blocks.{layer}.hook_attn_out"\ny = "irm.safetensors"\n')
    found = dict(_strings(tree))
    assert HOOK_NAME.fullmatch(found[1])
    assert found[2] in RUN_FILE_NAMES
    assert not HOOK_NAME.fullmatch("the IRM writes at `blocks.L.hook_attn_out` (prose)")
    reads = list(_anatomy_reads(ast.parse("g = host.ln_final.weight\nw = host.W_U\n")))
    assert sorted(reads) == [(1, "ln_final"), (2, "W_U")]


def _layout_block() -> str:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    return text.split("## Layout", 1)[1].split("```")[1]


def test_the_folder_map_names_every_module_and_folder_and_nothing_else() -> None:
    block = _layout_block()
    words = set(re.findall(r"[A-Za-z_][\w.]*", block))
    flat = {p.stem for p in (ROOT / "irm_lens").glob("*.py")} - {"__init__", "__main__"}
    folders = {p.name for p in (ROOT / "irm_lens").iterdir() if (p / "__init__.py").exists()}
    folders |= {p.name for p in (ROOT / "analyses").iterdir() if (p / "__init__.py").exists()}
    missing = sorted((flat | folders) - words)
    assert missing == [], f"docs/architecture.md's layout does not name {missing}"
    named = set(re.findall(r"^  ([a-z_]+)/", block, re.M))
    gone = sorted(
        n for n in named if not any((ROOT / top / n).is_dir() for top in ("irm_lens", "analyses"))
    )
    assert gone == [], f"docs/architecture.md's layout names folders that do not exist: {gone}"
