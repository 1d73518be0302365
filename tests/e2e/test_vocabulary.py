"""One option vocabulary: the same option means the same thing, with the same default, on every command; errors
name only options of the command that printed them; `adapt`'s modes refuse options that are not theirs."""

import re

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from transferkit.cli import app
from transferkit.errors import TransferkitError

SHARED = {"--data": None, "--text-column": "text", "--label-column": None, "--on-bad-input": "fail",
          "--model": None, "--pooling": "default", "--image-size": None, "--max-length": None, "--device": "auto",
          "--precision": "auto", "--random-init": False, "--trust-pickle": False, "--trust-remote-code": False,
          "--seed": 0, "--val": 0.15, "--test": 0.15, "--json": False}
DATA = {"--text-column", "--label-column", "--on-bad-input"}
BACKBONE = {"--pooling", "--image-size", "--max-length", "--device", "--precision", "--random-init",
            "--trust-pickle", "--trust-remote-code"}


def commands() -> dict:
    group = typer.main.get_command(app)
    return {name: {o: p for p in cmd.params for o in p.opts} for name, cmd in group.commands.items()}


def test_shared_options_have_one_default_everywhere():
    seen = {}
    for name, opts in commands().items():
        for flag, default in SHARED.items():
            if flag in opts and flag != "--model":  # pretrain's --model is required: it names an architecture
                assert opts[flag].default == default, (name, flag, opts[flag].default)
                seen.setdefault(flag, []).append(name)
    assert set(seen["--device"]) >= {"extract", "finetune", "predict", "shift", "adapt", "compare", "fit", "rank"}


@pytest.mark.parametrize("name", ["extract", "rank", "finetune", "pretrain", "predict", "shift", "adapt",
                                  "compare", "fit"])
def test_every_command_that_reads_data_takes_the_whole_data_group(name):
    assert DATA <= set(commands()[name]), DATA - set(commands()[name])


@pytest.mark.parametrize("name", ["extract", "finetune", "pretrain", "shift", "adapt", "compare", "fit", "rank"])
def test_every_command_that_builds_a_backbone_takes_the_whole_backbone_group(name):
    want = BACKBONE | ({"--models"} if name == "rank" else {"--model"})  # rank names several candidates
    if name == "pretrain":
        want -= {"--random-init"}  # it always starts from random weights
    assert want <= set(commands()[name]), want - set(commands()[name])


@pytest.mark.parametrize("name", ["predict", "serve", "export"])
def test_commands_that_read_a_model_folder_take_the_trust_flags(name):
    """The folder names the backbone and its build; the trust flags are asked again (never read from it);
    predict and serve take the device and precision too (export traces in fp32 on the CPU)."""
    want = {"--trust-pickle", "--trust-remote-code"} | ({"--device", "--precision"} if name != "export" else set())
    assert want <= set(commands()[name]), want - set(commands()[name])


def _error(args):
    r = CliRunner().invoke(app, args)
    assert isinstance(r.exception, TransferkitError), (args, r.output, r.exception)
    msg = str(r.exception)
    assert "\n" not in msg
    return msg


def _named_options(msg):
    return set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", msg))


@pytest.fixture(scope="module")
def unlabelled_table(tmp_path_factory):
    path = tmp_path_factory.mktemp("t") / "notes.csv"
    pd.DataFrame({"text": ["a fine day", "a bad day", "rain again"]}).to_csv(path, index=False)
    return path


def test_errors_name_only_options_of_their_command(tmp_path, unlabelled_table):
    cases = [
        ["extract", "--data", "bundled:digits", "--precision", "fp8", "--out", str(tmp_path / "a")],
        ["extract", "--data", "bundled:digits", "--device", "tpu", "--out", str(tmp_path / "b")],
        ["extract", "--data", "bundled:digits", "--max-length", "12", "--out", str(tmp_path / "c")],
        ["shift", "--source", "bundled:digits", "--target", "bundled:digits", "--model", "timm:resnet18"],
        ["rank", "--models", "effnet:lite0", "--data", str(unlabelled_table)],
        ["finetune", "--data", str(unlabelled_table), "--out", str(tmp_path / "d")],
        ["compare", "--data", "bundled:digits", "--out", str(tmp_path / "e"), "--finetune-param", "lr=fast"],
        ["adapt", "--method", "dann", "--source", "bundled:digits", "--target", "bundled:digits", "--param",
         "steps=abc"],
        ["adapt", "--method", "shot", "--source-run", str(tmp_path), "--target", "bundled:digits", "--model",
         "effnet:lite0", "--out", str(tmp_path / "f")],
    ]
    table = commands()
    for args in cases:
        msg = _error(args)
        named = _named_options(msg)
        assert named, (args, msg)  # each of these errors says which option to change
        assert named <= set(table[args[0]]), (args[0], named - set(table[args[0]]), msg)


@pytest.mark.parametrize("args,refused", [
    (["--method", "shot", "--source-run", "R", "--target", "T", "--out", "O", "--model", "effnet:lite0"], "--model"),
    (["--method", "tent", "--source-run", "R", "--target", "T", "--out", "O", "--pooling", "mean"], "--pooling"),
    (["--method", "adabn", "--source-run", "R", "--target", "T", "--out", "O", "--epochs", "2"], "--epochs"),
    (["--method", "coral", "--source", "S", "--target", "T", "--source-run", "R"], "--source-run"),
    (["--method", "coral", "--source", "S", "--target", "T", "--epochs", "2"], "--epochs"),
    (["--method", "dann-e2e", "--source", "S", "--target", "T", "--out", "O", "--validator", "snd"], "--validator"),
    (["--benchmark", "digits", "--model", "effnet:lite0"], "--model"),
    (["--benchmark", "digits", "--target", "T"], "--target"),
    (["--benchmark", "digits", "--method", "coral"], "--method"),
    (["--method", "coral", "--source", "S", "--target", "T", "--validator", "snd"], "--validator"),
])
def test_adapt_modes_refuse_options_that_are_not_theirs(args, refused):
    msg = _error(["adapt", *args])
    assert msg.startswith(f"{refused} does not apply to"), msg


def test_end_to_end_settings_with_their_own_flags_are_refused_as_params():
    msg = _error(["adapt", "--method", "dann-e2e", "--source", "bundled:digits", "--target", "bundled:digits",
                  "--out", "o", "--param", "seed=3"])
    assert msg == "--param seed: set it with --seed"


def test_adapt_source_free_takes_its_own_settings(tmp_path):
    # shot takes --epochs and its --param settings (lr, beta, batch_size): the error is the missing run, not them
    msg = _error(["adapt", "--method", "shot", "--source-run", str(tmp_path / "none"), "--target", "bundled:digits",
                  "--out", str(tmp_path / "o"), "--epochs", "2", "--param", "beta=0.5", "--param", "lr=1e-4"])
    assert "not a transferkit run folder" in msg
    msg = _error(["adapt", "--method", "adabn", "--source-run", str(tmp_path / "none"), "--target",
                  "bundled:digits", "--out", str(tmp_path / "o"), "--param", "lr=1e-4"])
    assert msg.startswith("--param lr: --method adabn has no such setting; it takes batch_size, recentre")


def test_a_table_label_column_is_read_by_default_everywhere(tmp_path):
    path = tmp_path / "reviews.csv"
    pd.DataFrame({"text": ["good", "bad", "great", "awful"] * 3, "label": ["pos", "neg", "pos", "neg"] * 3}
                 ).to_csv(path, index=False)
    r = CliRunner().invoke(app, ["extract", "--data", str(path), "--out", str(tmp_path / "f")])
    assert r.exit_code == 0, r.output
    assert "12 labelled items" in r.output
    other = tmp_path / "other.csv"
    pd.read_csv(path).rename(columns={"label": "y"}).to_csv(other, index=False)
    r = CliRunner().invoke(app, ["extract", "--data", str(other), "--out", str(tmp_path / "g")])
    assert "12 unlabelled items" in r.output
    r = CliRunner().invoke(app, ["extract", "--data", str(other), "--label-column", "y", "--out", str(tmp_path / "h")])
    assert "12 labelled items" in r.output
