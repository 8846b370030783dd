"""The irm-lens command line, on the tiny host."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from irm_lens import IRM
from irm_lens.cli import main


def test_info(capsys, tiny_host):
    assert main(["info", "tiny-random-llama", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    table = dict(line.split(None, 1) for line in out.splitlines() if line.strip())
    assert table["n_layers"].strip() == "4" and table["d_model"].strip() == "64"
    assert "blocks.0.hook_resid_mid" in out and "hook_attn_out" in out


def test_generate_with_and_without_irm(capsys, tiny_host, tmp_path):
    path = IRM.for_host(tiny_host, seed=1, init="torch").save(tmp_path / "irm.safetensors")
    base = ["generate", "--host", "tiny-random-llama", "--device", "cpu", "--prompt", "Why?"]
    base += ["--max-new-tokens", "6"]
    assert main([*base, "--greedy"]) == 0
    plain = capsys.readouterr().out
    assert main([*base, "--greedy", "--irm", str(path)]) == 0
    steered = capsys.readouterr().out
    assert plain.strip() and steered.strip() and plain != steered
    assert main([*base, "--temperature", "0.8", "--seed", "3"]) == 0
    first = capsys.readouterr().out
    assert main([*base, "--temperature", "0.8", "--seed", "3"]) == 0
    assert capsys.readouterr().out == first  # seeded sampling is reproducible


def test_bad_input_exits_2_with_message(capsys, tmp_path):
    code = main(
        [
            "generate",
            "--host",
            "tiny-random-llama",
            "--device",
            "cpu",
            "--prompt",
            "x",
            "--irm",
            str(tmp_path / "nope.safetensors"),
        ]
    )
    assert code == 2
    assert "nope.safetensors" in capsys.readouterr().err


def test_version_names_the_stack(capsys):
    from irm_lens import __version__

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"irm-lens {__version__} (torch ") and "transformer-lens" in out


def test_ctrl_c_in_any_verb_is_one_line_not_a_traceback(capsys, monkeypatch):
    cli_main = sys.modules["irm_lens.cli.main"]  # the module (the package exports the function)

    def interrupted(args):
        raise KeyboardInterrupt

    parser = cli_main.build_parser()
    args = parser.parse_args(["info", "tiny-random-llama"])
    monkeypatch.setattr(cli_main, "build_parser", lambda: parser)
    monkeypatch.setattr(args, "func", interrupted, raising=False)
    monkeypatch.setattr(parser, "parse_args", lambda argv=None: args)
    assert main(["info", "tiny-random-llama"]) == 130
    err = capsys.readouterr().err
    assert err.startswith("irm-lens info: interrupted") and "Traceback" not in err


def test_console_script_help():
    out = subprocess.run(
        [sys.executable, "-m", "irm_lens.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "info" in out.stdout and "generate" in out.stdout


def test_train_resume_and_evaluate_from_the_command_line(capsys, tmp_path):
    run = str(tmp_path / "run")
    common = ["--host", "tiny-random-llama", "--device", "cpu", "--preset", "smoke"]
    assert main(["train", run, *common, "--max-steps", "2"]) == 0
    assert "done: 2 steps" in capsys.readouterr().out
    assert main(["train", run, *common]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["train", run, "--resume"]) == 0  # a finished run stays finished
    assert "done: 2 steps" in capsys.readouterr().out
    assert main(["train", run, "--resume", "--max-steps", "1"]) == 2
    assert "max_steps 1 is not larger than the saved run's 2" in capsys.readouterr().err
    assert main(["train", run, "--resume", "--max-steps", "4"]) == 0  # extended by 2 steps
    assert "done: 4 steps (max_steps)" in capsys.readouterr().out
    assert main(["evaluate", run, "--max-rows", "2", "--max-new-tokens", "3"]) == 0
    out = capsys.readouterr().out
    assert "nll_drop" in out and "evaluation.csv" in out
    assert "specificity          not tested (2 questions in every voice)" in out
    # the report's measure, with its CI over questions, from the run's per-question table
    assert main(["evaluate", run, "--max-rows", "12", "--max-new-tokens", "2"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("specificity"))
    assert "[95 % CI" in line and "over 12 questions" in line, line
    assert line.endswith((": aligned", ": not aligned")), line
    table = pd.read_csv(Path(run) / "specificity.csv")
    assert set(table["condition"]) == {"host", "host+irm"} and table["target"].nunique() == 4


@pytest.mark.parametrize(
    ("mask", "message"),
    [("a,b", "comma-separated whole numbers"), ("-3", "indices >= 0")],
)
def test_train_mask_option_refuses_bad_indices(capsys, tmp_path, mask, message):
    with pytest.raises(SystemExit) as exc:
        main(["train", str(tmp_path / "run"), "--host", "tiny-random-llama", "--mask", mask])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--mask" in err and message in err
    assert not (tmp_path / "run").exists()


def test_help_and_argument_errors_load_neither_torch_nor_transformer_lens():
    """`irm-lens --help` answers at once: building the parser imports no heavy library (torch,
    TransformerLens) and the package's public names load on first use."""
    code = (
        "import sys, irm_lens, irm_lens.cli\n"
        "sys.modules['irm_lens.cli.main'].build_parser().format_help()\n"
        "heavy = [k for k in ('torch', 'transformer_lens', 'transformers') if k in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert irm_lens.IrmLensError and callable(irm_lens.load_host)\n"
        "assert 'torch' in sys.modules  # load_host pulled in the host stack on first use\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
