"""Every user error of the CLI is one line on stderr and exit code 2: no traceback (issue 9, item 12)."""

from __future__ import annotations

from pathlib import Path

import pytest

from spattern.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "experiments" / "train_tiny_cpu.toml")

CASES = [
    (["compile", "local(", "--seq", "10"], "column"),
    (["compile", "local(4)", "--seq", "0"], "--seq: expected a positive integer"),
    (["compile", "local(4)", "--seq", "100", "--block", "0"], "--block: expected B or BQxBK"),
    (["cost", "local(4)", "--seq", "abc"], "--seq: expected a positive integer, got 'abc'"),
    (["data", "prepare", "nocorpus"], "corpus: expected one of"),
    (["data", "prepare", "stdlib", "--fractions", "0.5", "0.5", "0.5"], "--fractions: expected three fractions"),
    (["train", "/nonexistent/x.toml"], "no such file"),
    (["train", TINY, "--set", "train.steps=abc"], "'train.steps': expected a valid integer"),
    (["train", TINY, "--set", "train.steps=-1"], "'train.steps': expected greater than or equal to 1"),
    (["train", TINY, "--set", "train.stpes=3"], "'train.stpes': unknown key"),
    (["train", TINY, "--set", "train.steps"], "--set: expected KEY=VALUE"),
    (["train", TINY, "--set", "model.pattern=7"], "model.pattern"),
    (["perplexity", "--checkpoint", "/nonexistent/ckpt.pt"], "no such file"),
    (["perplexity", "--smollm2", "--docs", "0"], "--docs: expected a positive integer"),
    (["perplexity", "--smollm2", "--window", "0"], "--window: expected a positive integer"),
    (["generate", "--prompt", "hi"], "one of the arguments --checkpoint --smollm2 is required"),
    (["run", "/nonexistent/x.toml"], "no such file"),
    (["compare", "/nonexistent/results"], "no such folder"),
    (["compare", "/nonexistent/results", "--average", "mean"], "--average: expected NAME=LABEL,LABEL"),
    (["compare", "/nonexistent/results", "--average", "m=a,b", "m=c,d"], "with a new NAME each time"),
    (["bench", "compile", "--repeats", "3"], "--repeats: expected >= 7"),
    (["nosuchcommand"], "invalid choice"),
]


@pytest.mark.parametrize("argv,message", CASES, ids=[" ".join(c[0])[:50] for c in CASES])
def test_user_error_is_one_line_and_exit_2(argv, message, capsys):
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own usage errors
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err, err
    assert "Traceback" not in err


def test_corrupt_checkpoint_is_one_line(tmp_path, capsys):
    bad = tmp_path / "ckpt.pt"
    bad.write_bytes(b"not a checkpoint at all")
    assert main(["generate", "--checkpoint", str(bad), "--prompt", "x"]) == 2
    err = capsys.readouterr().err
    assert "is damaged" in err and "Traceback" not in err


def test_device_cuda_without_cuda_is_one_line(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["train", TINY, "--set", 'train.device="cuda"']) == 2
    assert "sees no CUDA device" in capsys.readouterr().err


def test_every_option_has_help():
    """Every sub-command option says what it is for (`spattern <cmd> --help`)."""
    import argparse

    from spattern.cli import build_parser

    missing = []

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, path + [name])
            elif action.option_strings and action.help in (None, "") and action.dest != "help":
                missing.append(f"{' '.join(path)} {action.option_strings[0]}")

    walk(build_parser(), ["spattern"])
    assert not missing, missing
