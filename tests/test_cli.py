"""The command line end to end: the issue's done criterion, re-export, evaluation, errors."""

import argparse
import json
import re
from pathlib import Path

import pytest
import torch

import ddoq
from ddoq.cli import build_parser, main

COMMANDS = ["train-prior", "distill", "train", "evaluate", "export", "train-teacher", "app"]


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "ddoq10"
    assert main(["distill", "--dataset", "mnist", "--ipc", "10", "--method", "ddoq",
                 "--decode", "vae", "--out", str(out), "--quiet"]) == 0  # fmt: skip
    return out


@pytest.fixture(scope="module")
def trained(distilled):
    run = distilled.parent / "run"
    assert main(["train", "--distilled", str(distilled), "--student", "convnet",
                 "--out", str(run), "--quiet"]) == 0  # fmt: skip
    return run


def test_distill_then_train_reaches_90_percent(distilled, trained):
    """The issue's done criterion, with the default settings."""
    manifest = json.loads((distilled / "manifest.json").read_text())
    assert manifest["config"]["ipc"] == 10 and manifest["metrics"]["num_images"] == 100
    run = json.loads((trained / "manifest.json").read_text())
    accuracy = run["metrics"]["test_accuracy"]
    assert 0.9 <= accuracy <= 1.0
    assert run["config"]["protocol"] == "precomputed" and run["config"]["temperature"] == 20.0


def test_train_again_resumes_from_the_last_checkpoint(distilled, trained, capsys):
    before = json.loads((trained / "manifest.json").read_text())["metrics"]
    assert main(["train", "--distilled", str(distilled), "--out", str(trained), "--quiet"]) == 0
    after = json.loads((trained / "manifest.json").read_text())["metrics"]
    assert after["resumed_from_epoch"] == before["epochs_done"]
    assert after["test_accuracy"] == before["test_accuracy"]


def test_evaluate_run_and_teacher(trained, capsys):
    assert main(["evaluate", str(trained)]) == 0
    expected = json.loads((trained / "manifest.json").read_text())["metrics"]["test_accuracy"]
    assert f"{expected:.4f}" in capsys.readouterr().out
    assert main(["evaluate", "--teacher", "embedded"]) == 0
    assert "top-1 accuracy 0.98" in capsys.readouterr().out


def test_export_re_tempers_weights(distilled, tmp_path):
    from ddoq.export import load

    out = tmp_path / "uniform"
    assert main(["export", str(distilled), "--out", str(out), "--alpha", "0", "--quiet"]) == 0
    src, new = load(distilled), load(out)
    assert src.weights.std() > 0 and float(new.weights.std()) < 1e-6
    assert (new.images == src.images).all() and (new.masses == src.masses).all()
    assert json.loads((out / "manifest.json").read_text())["config"]["alpha"] == 0


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "app"])  # app: Streamlit's
def test_help_explains_every_option(command, capsys):
    """Every option of the sub-command is in its --help, with a description."""
    subparsers = next(
        a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    )
    assert sorted(subparsers.choices) == sorted(COMMANDS)  # no sub-command left out here
    parser = subparsers.choices[command]
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    # argparse wraps lines, also after the hyphen of a word like "fine-tuning"
    text = re.sub(r"- ", "-", " ".join(capsys.readouterr().out.split()))
    options = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert options
    for action in options:
        assert action.help and action.help != argparse.SUPPRESS, action.option_strings
        described = re.sub(
            r"- ", "-", " ".join(parser._get_formatter()._expand_help(action).split())
        )
        assert len(described) >= 8, f"{action.option_strings}: {described!r} explains nothing"
        for flag in action.option_strings:
            assert flag in text, f"{command} --help does not show {flag}"
        assert described in text, f"{command} --help lacks the description of {action.dest}"


@pytest.mark.parametrize(
    "argv,message",
    [
        (["distill", "--ipc", "0"], "ipc"),
        (["distill", "--ipc", "100000"], "larger than class"),
        (["distill", "--method", "magic"], "unknown method"),
        (["train", "--distilled", "/nonexistent/set"], "does not exist"),
        (["evaluate", "/nonexistent/run"], "not a finished"),
        (["export", "/nonexistent/set"], "does not exist"),
    ],
)
def test_bad_input_exits_2_with_one_line(argv, message, tmp_path, capsys):
    argv = argv + ["--out", str(tmp_path / "o")] if argv[0] != "evaluate" else argv
    assert main(argv + ["--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_export_re_tempers_with_the_distillation_formula(distilled, tmp_path):
    """`ddoq export --alpha a` gives the weights a distillation at alpha a assembles."""
    from ddoq.export import image_weights, load

    out = tmp_path / "alpha03"
    assert main(["export", str(distilled), "--out", str(out), "--alpha", "0.3", "--quiet"]) == 0
    src, new = load(distilled), load(out)
    counts = src.manifest["dataset"]["class_counts"]
    expected = image_weights(src.masses.double().numpy(), src.labels.numpy(), counts, 0.3)
    assert torch.equal(new.weights, expected)
    assert not torch.allclose(new.weights, src.weights)


def test_train_writes_one_run_schema_that_rebuilds_the_student(distilled, trained, tmp_path):
    from ddoq.export import load
    from ddoq.train.runs import KIND, held_out_split, load_student, read_run

    run = read_run(trained)
    assert run["kind"] == KIND == "ddoq-train" and run["status"] == "done"
    assert run["distilled"]["method"] == "ddoq" and run["distilled"]["metrics"]["num_images"] == 100
    test = held_out_split(load(distilled).manifest)
    assert run["test_split"] == {"dataset": "mnist", "fingerprint": test.fingerprint, "size": 1000}
    student = load_student(trained)
    assert not student.training and sum(p.numel() for p in student.parameters()) > 0
    with pytest.raises(ValueError, match="names no dataset"):
        held_out_split({"config": {}})
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.safetensors").write_bytes(b"")
    (other / "manifest.json").write_text(json.dumps({"kind": "ddoq-app-train"}))
    with pytest.raises(ValueError, match="not 'ddoq-train'"):
        read_run(other)
    with pytest.raises(ValueError, match="not a finished"):
        read_run(tmp_path)


def test_app_command_runs_the_packaged_script_with_the_options_given():
    import tomllib

    from ddoq.ui import APP_SCRIPT, CONFIG, app_command

    root = Path(__file__).resolve().parents[1]
    # one set of settings: the checkout's .streamlit/config.toml is the package's
    assert tomllib.loads(CONFIG.read_text()) == tomllib.loads(
        (root / ".streamlit" / "config.toml").read_text()
    )
    assert APP_SCRIPT.is_file() and APP_SCRIPT.is_relative_to(Path(ddoq.__file__).parent)
    given = ["--server.port", "8599", "--server.headless=false"]
    cmd = app_command(given)
    assert cmd[1:5] == ["-m", "streamlit", "run", str(APP_SCRIPT)] and cmd[-3:] == given
    settings = cmd[5:-3]
    assert settings[settings.index("--runner.postScriptGC") + 1] == "false"
    assert "--server.headless" not in settings and "--server.port" not in settings
