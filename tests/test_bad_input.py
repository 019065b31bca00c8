"""Bad input on every surface: the CLI, TrainConfig, config.json files, the pages and data files.

Every case expects a message that names the value or the field and states
what is allowed, no traceback, and no change under the folder the case
works in. The tables below are the single list of cases; add a row to try
one more input. When the module ends it writes the number of bad inputs
tried per surface to test-output/reliability/bad-inputs.json.
"""

import builtins
import collections
import json
import math
import os
import pickle
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest
from test_pages import FAST, open_page, runs_dir, trained_run
from test_pages import messages as message_texts

from gan import cli, runs
from gan.config import INT_RANGES, ConfigError, TrainConfig

__all__ = ["runs_dir", "trained_run"]  # fixtures shared with the page tests

REPOSITORY = Path(__file__).resolve().parents[1]
APP = REPOSITORY / "streamlit_app.py"
COUNTS_FILE = REPOSITORY / "test-output" / "reliability" / "bad-inputs.json"
HUGE = str(10**30)
LONG = "x" * 10_000
# A message longer than this is not short; values in messages are shortened.
MAX_MESSAGE_LENGTH = 400

TRIED: collections.Counter = collections.Counter()


@pytest.fixture(scope="module", autouse=True)
def write_counts():
    """Write the number of bad inputs tried per surface once every test of the module has run."""
    yield
    COUNTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    counts = dict(sorted(TRIED.items()))
    COUNTS_FILE.write_text(json.dumps({**counts, "total": sum(counts.values())}, indent=2) + "\n")


# Helpers ------------------------------------------------------------------------------------------


def snapshot(folder: Path) -> dict[str, tuple]:
    """Map every path under ``folder`` to its kind, bytes and modification time."""
    state = {}
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        if path.is_symlink():
            state[str(path)] = ("link", os.readlink(path), info.st_mtime_ns)
        elif path.is_dir():
            state[str(path)] = ("dir", None, info.st_mtime_ns)
        else:
            state[str(path)] = ("file", path.read_bytes(), info.st_mtime_ns)
    return state


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """Run ``python -m gan`` in this process; return the exit status and stderr."""
    try:
        code = cli.main(argv)
    except SystemExit as exit:  # argparse exits on a usage error
        code = exit.code
    return code, capsys.readouterr().err


def assert_clear_message(message: str, expected: list[str]) -> None:
    assert "Traceback" not in message, message
    for part in expected:
        assert part in message, f"{part!r} missing from: {message}"
    last_line = message.strip().splitlines()[-1]
    assert len(last_line) <= MAX_MESSAGE_LENGTH, last_line


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@pytest.fixture
def no_training(monkeypatch):
    """Replace gan.train, so a case that wrongly passes the checks fails at once instead of training."""

    class Trainer:
        @staticmethod
        def train(*args, **kwargs):
            raise AssertionError("a rejected input reached training")

    monkeypatch.setitem(sys.modules, "gan.train", Trainer)


# CLI: train flags for every TrainConfig field ------------------------------------------------------


def integer_flag_cases():
    for name, (low, high) in INT_RANGES.items():
        allowed = f"from {low} to {high}"
        yield name, str(low - 1), [name, str(low - 1), allowed]
        yield name, HUGE, [name, HUGE, allowed]
        yield name, str(-(10**30)), [name, allowed]
        for text in ("abc", "", "1e999", "2.5", "nan", LONG):
            yield name, text, [flag(name), "an integer such as"]


FLOAT_FIELDS = (
    "generator_lr",
    "discriminator_lr",
    "beta_1",
    "beta_2",
    "checkpoint_every_minutes",
    "alert_d_loss_below",
    "alert_max_class_share",
    "alert_min_diversity_ratio",
)


def float_flag_cases():
    for name in ("generator_lr", "discriminator_lr", "checkpoint_every_minutes"):
        for text, shown in (("nan", "nan"), ("inf", "inf"), ("-inf", "-inf"), ("1e999", "inf"), ("0", "0")):
            yield name, text, [name, shown, "greater than 0 and at most"]
        yield name, "-1", [name, "-1", "greater than 0 and at most"]
        yield name, "1e30", [name, "1e+30", "greater than 0 and at most"]
    for name in ("beta_1", "beta_2"):
        for text, shown in (("nan", "nan"), ("inf", "inf"), ("-inf", "-inf"), ("1e999", "inf"), ("1", "1.0")):
            yield name, text, [name, shown, "must be in [0, 1)", "the default is"]
        yield name, "-0.5", [name, "-0.5", "must be in [0, 1)"]
    for name in ("alert_d_loss_below", "alert_max_class_share", "alert_min_diversity_ratio"):
        for text, shown in (("nan", "nan"), ("inf", "inf"), ("-inf", "-inf"), ("1e999", "inf"), ("-1", "-1")):
            yield name, text, [name, shown, "must be a number from 0 to", "the default is"]
        yield name, "1e30", [name, "1e+30", "must be a number from 0 to"]
    for name in FLOAT_FIELDS:
        for text in ("abc", "", LONG):
            yield name, text, [flag(name), "a number such as"]


def text_flag_cases():
    for text in ("wgan", "", LONG, "DCGAN"):
        yield "model", text, ["--model", "must be one of dcgan, conditional"]
    for name, choices in (("strategy", "auto, default"), ("precision", "auto, float32, mixed_float16")):
        for text in ("tpu", "", LONG):
            yield name, text, [name, f"must be one of {choices}"]
    yield "data", "", ["data", "must be one of mnist, fashion_mnist or a path"]
    yield "data", "   ", ["data", "must be one of mnist, fashion_mnist or a path"]
    for text in ("cifar10", "MNIST", LONG, "a\x00b", "~nosuchuser/digits.npz", "/no/such/digits.npz"):
        yield "data", text, ["data", "neither a known dataset (mnist, fashion_mnist) nor an existing path"]


def bool_flag_cases():
    # A bool field is a switch pair (--jit-compile, --no-jit-compile) that takes no value.
    for text in ("yes", "true", "", "1"):
        yield "jit_compile", text, ["--jit-compile", "ignored explicit argument"]


TRAIN_FLAG_CASES = [*integer_flag_cases(), *float_flag_cases(), *text_flag_cases(), *bool_flag_cases()]


def test_every_field_has_flag_cases():
    tried = {name for name, _, _ in TRAIN_FLAG_CASES}
    assert tried == {field.name for field in fields(TrainConfig)}


def short_id(value) -> str:
    return repr(value)[:40]


@pytest.mark.parametrize(("name", "text", "expected"), TRAIN_FLAG_CASES, ids=short_id)
def test_cli_train_rejects_flag(tmp_path, capsys, no_training, name, text, expected):
    before = snapshot(tmp_path)
    # The = form, so that argparse takes values such as -inf as values, not options.
    code, stderr = run_cli(["train", "--run-dir", str(tmp_path / "new"), f"{flag(name)}={text}"], capsys)
    TRIED["cli"] += 1

    assert code == 2, stderr
    assert_clear_message(stderr, expected)
    assert snapshot(tmp_path) == before


# CLI: other options and commands ---------------------------------------------------------------------


@pytest.fixture
def workspace(tmp_path):
    """A folder with a new run, a file, a .h5 file and an empty folder, for the command cases."""
    runs.create_run(tmp_path / "runs" / "made", TrainConfig(**FAST))
    (tmp_path / "plain.txt").write_text("not a folder")
    (tmp_path / "weights.h5").write_bytes(b"\x89HDF")
    (tmp_path / "empty").mkdir()
    return tmp_path


GENERATE = ["generate", "--generator", "{tmp}/missing.keras", "--output", "{tmp}/out/digits.png"]

COMMAND_CASES = [
    # train: the run folder and the options that go with it
    (["train", "--run-dir", ""], ["--run-dir", "is empty"]),
    (["train", "--run-dir", "{tmp}/" + LONG], ["--run-dir", "more than 255 bytes"]),
    (["train", "--run-dir", "{tmp}/a\x00b"], ["--run-dir", "NUL character"]),
    (["train", "--run-dir", "{tmp}/plain.txt"], ["--run-dir", "plain.txt is a file"]),
    (["train", "--run-dir", "{tmp}/.."], ["--run-dir", "must end in a folder name"]),
    (["train", "--run-dir", "{tmp}/runs/made", "--resume", "--epochs", "3"], ["--resume", "remove --epochs"]),
    (["train", "--run-dir", "{tmp}/runs/made", "--epochs", "3"], ["already has its config.json", "remove"]),
    (["train", "--run-dir", "{tmp}/runs/none", "--resume"], ["not a run folder", "python -m gan train"]),
    (["train", "--run-dir", "{tmp}/new", "--config", "{tmp}/missing.json"], ["missing.json not found"]),
    (["train", "--run-dir", "{tmp}/new", "--config", "{tmp}/empty"], ["empty is a folder", "JSON file"]),
    (["train", "--run-dir", "{tmp}/new", "--config", ""], ["--config", "is empty"]),
    (["train", "--run-dir", "{tmp}/new", "--bogus", "1"], ["unrecognized arguments: --bogus"]),
    # stop
    (["stop", "--run-dir", "{tmp}/runs/made", "--wait", "nan"], ["--wait", "nan", "from 0 to 86400"]),
    (["stop", "--run-dir", "{tmp}/runs/made", "--wait", "inf"], ["--wait", "inf", "from 0 to 86400"]),
    (["stop", "--run-dir", "{tmp}/runs/made", "--wait", "-1"], ["--wait", "-1", "from 0 to 86400"]),
    (["stop", "--run-dir", "{tmp}/runs/made", "--wait", HUGE], ["--wait", "from 0 to 86400"]),
    (["stop", "--run-dir", "{tmp}/runs/made", "--wait", "soon"], ["--wait", "'soon'", "a number such as"]),
    (["stop", "--run-dir", "{tmp}/runs/made", "--wait", ""], ["--wait", "a number such as"]),
    (["stop", "--run-dir", "{tmp}/runs/made"], ["made is not running", "nothing to stop"]),
    (["stop", "--run-dir", "{tmp}/runs/none"], ["not a run folder", "python -m gan train"]),
    (["stop", "--run-dir", ""], ["--run-dir", "is empty"]),
    (["stop", "--run-dir", "{tmp}/" + LONG], ["--run-dir", "more than 255 bytes"]),
    # status
    (["status", "--run-dir", "{tmp}/runs/none"], ["not a run folder", "python -m gan train"]),
    (["status", "--run-dir", "{tmp}/plain.txt"], ["not a run folder", "python -m gan train"]),
    (["status", "--run-dir", ""], ["--run-dir", "is empty"]),
    (["status", "--run-dir", "{tmp}/" + LONG], ["--run-dir", "more than 255 bytes"]),
    (["status", "--run-dir", "{tmp}/a\x00b"], ["--run-dir", "NUL character"]),
    (["status"], ["the following arguments are required: --run-dir"]),
    # list
    (["list", "--runs-dir", ""], ["--runs-dir", "is empty"]),
    (["list", "--runs-dir", "{tmp}/" + LONG], ["--runs-dir", "more than 255 bytes"]),
    (["list", "--runs-dir", "{tmp}/plain.txt"], ["--runs-dir", "is a file", "folder that contains the runs"]),
    (["list", "--json", "yes"], ["unrecognized arguments: yes"]),
    # generate: every option, checked before TensorFlow loads the generator
    ([*GENERATE, "--seed", "-1"], ["--seed", "-1", "from 0 to 4294967295"]),
    ([*GENERATE, "--seed", str(2**32)], ["--seed", str(2**32), "from 0 to 4294967295"]),
    ([*GENERATE, "--seed", "abc"], ["--seed", "'abc'", "an integer such as"]),
    ([*GENERATE, "--seed", str(2**32 - 10), "--count", "64"], ["--seed", "past the largest seed"]),
    ([*GENERATE, "--count", "0"], ["--count", "0", "from 1 to 10000"]),
    ([*GENERATE, "--count", "-5"], ["--count", "-5", "from 1 to 10000"]),
    ([*GENERATE, "--count", HUGE], ["--count", HUGE, "from 1 to 10000"]),
    ([*GENERATE, "--count", "1e999"], ["--count", "'1e999'", "an integer such as"]),
    ([*GENERATE, "--count", ""], ["--count", "an integer such as"]),
    ([*GENERATE, "--columns", "0"], ["--columns", "0", "from 1 to 1000"]),
    ([*GENERATE, "--columns", HUGE], ["--columns", HUGE, "from 1 to 1000"]),
    ([*GENERATE, "--columns", "nan"], ["--columns", "'nan'", "an integer such as"]),
    ([*GENERATE, "--latent-scale", "nan"], ["--latent-scale", "nan", "greater than 0 and at most 10"]),
    ([*GENERATE, "--latent-scale=-inf"], ["--latent-scale", "-inf", "greater than 0 and at most 10"]),
    ([*GENERATE, "--latent-scale", "1e999"], ["--latent-scale", "inf", "greater than 0 and at most 10"]),
    ([*GENERATE, "--latent-scale", "0"], ["--latent-scale", "0", "greater than 0 and at most 10"]),
    ([*GENERATE, "--latent-scale", "-1"], ["--latent-scale", "-1", "greater than 0 and at most 10"]),
    ([*GENERATE, "--latent-scale", HUGE], ["--latent-scale", "greater than 0 and at most 10"]),
    ([*GENERATE, "--latent-scale", "big"], ["--latent-scale", "'big'", "a number such as"]),
    ([*GENERATE, "--interpolate-to", "1", "--steps", "1"], ["--steps", "1", "from 2 to 1000"]),
    ([*GENERATE, "--interpolate-to", "1", "--steps", HUGE], ["--steps", HUGE, "from 2 to 1000"]),
    ([*GENERATE, "--interpolate-to", "-1"], ["--interpolate-to", "-1", "from 0 to 4294967295"]),
    ([*GENERATE, "--interpolate-to", HUGE], ["--interpolate-to", HUGE, "from 0 to 4294967295"]),
    ([*GENERATE, "--digit", "abc"], ["--digit", "'abc'", "a class number such as 3, or 'rows'"]),
    ([*GENERATE, "--digit", "-1"], ["--digit", "'-1'", "a class number such as 3, or 'rows'"]),
    ([*GENERATE, "--digit", ""], ["--digit", "''", "a class number such as 3, or 'rows'"]),
    ([*GENERATE, "--digit", LONG], ["--digit", "(10000 characters)", "or 'rows'"]),
    ([*GENERATE, "--checkpoint", "-1"], ["--checkpoint", "-1", "from 0 to"]),
    ([*GENERATE, "--checkpoint", "latest"], ["--checkpoint", "'latest'", "an integer such as"]),
    (["generate", "--generator", "{tmp}/missing.keras", "--output", ""], ["--output", "is empty"]),
    (["generate", "--generator", "{tmp}/g.keras", "--output", "{tmp}/a\nb.png"], ["--output", "'\\n'"]),
    (["generate", "--generator", "{tmp}/g.keras", "--output", "{tmp}/a\x1bb.png"], ["--output", "'\\x1b'"]),
    (["generate", "--generator", "{tmp}/g.keras", "--output", "{tmp}/a\tb.png"], ["--output", "'\\t'"]),
    (["generate", "--generator", "{tmp}/g.keras", "--output", "{tmp}/empty"], ["--output", "is a folder"]),
    (["generate", "--generator", "{tmp}/g.keras", "--output", "{tmp}/plain.txt/d.png"], ["is a file"]),
    (["generate", "--generator", "{tmp}/g.keras", "--output", "{tmp}/" + LONG], ["more than 255 bytes"]),
    ([*GENERATE, "--npz", "{tmp}/a\nb.npz"], ["--npz", "'\\n'", "without it"]),
    ([*GENERATE, "--npz", "{tmp}/empty"], ["--npz", "is a folder"]),
    (["generate", "--generator", "{tmp}/missing.keras", "--output", "{tmp}/d.png"], ["not found", ".keras"]),
    (["generate", "--generator", "{tmp}/weights.h5", "--output", "{tmp}/d.png"], ["must end in .keras"]),
    (["generate", "--generator", "", "--output", "{tmp}/d.png"], ["--generator", "is empty"]),
    (["generate", "--run-dir", "{tmp}/runs/none", "--output", "{tmp}/d.png"], ["not a run folder"]),
    (["generate", "--run-dir", "{tmp}/empty", "--output", "{tmp}/d.png"], ["not a run folder"]),
    (["generate", "--output", "{tmp}/d.png"], ["one of the arguments --run-dir --generator is required"]),
    ([*GENERATE, "--checkpoint", "8"], ["--checkpoint goes with --run-dir"]),
]


@pytest.mark.parametrize(("argv", "expected"), COMMAND_CASES, ids=short_id)
def test_cli_command_rejects_input(workspace, capsys, no_training, argv, expected):
    argv = [part.replace("{tmp}", str(workspace)) for part in argv]
    before = snapshot(workspace)
    code, stderr = run_cli(argv, capsys)
    TRIED["cli"] += 1

    assert code == 2, stderr
    assert_clear_message(stderr, expected)
    assert snapshot(workspace) == before


# The same in real processes: exit status, stderr, and no TensorFlow import on the fast path.

SUBPROCESS_CASES = [
    (["train", "--run-dir", "{tmp}/new", "--epochs", "0"], "epochs must be an integer from 1 to 100000"),
    (
        ["train", "--run-dir", "{tmp}/new", "--generator-lr", "nan"],
        "generator_lr must be a number greater than 0",
    ),
    (["train", "--run-dir", "{tmp}/new\x1b[2J"], "contains the control character '\\x1b'"),
    (["stop", "--run-dir", "{tmp}/none", "--wait", "nan"], "--wait must be a number of seconds from 0"),
    (
        ["generate", "--generator", "{tmp}/g.keras", "--count", "0", "--output", "{tmp}/d.png"],
        "--count must be",
    ),
    (
        ["generate", "--generator", "{tmp}/missing.keras", "--output", "{tmp}/d.png"],
        "missing.keras not found",
    ),
    (["status", "--run-dir", "{tmp}/none"], "not a run folder"),
]


def test_cli_subprocess_exit_status(tmp_path):
    for argv, expected in SUBPROCESS_CASES:
        argv = [part.replace("{tmp}", str(tmp_path)) for part in argv]
        completed = subprocess.run(
            [sys.executable, "-m", "gan", *argv], cwd=REPOSITORY, capture_output=True, text=True, timeout=120
        )
        TRIED["cli"] += 1
        assert completed.returncode == 2, (argv, completed.stderr)
        assert "Traceback" not in completed.stderr, completed.stderr
        assert expected in completed.stderr, completed.stderr
        assert completed.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_cli_rejects_before_tensorflow_import(tmp_path):
    # One process tries every case, then reports whether any of them imported TensorFlow.
    script = (
        "import sys\n"
        "from gan.cli import main\n"
        "for argv in ARGVS:\n"
        "    try:\n"
        "        code = main(argv)\n"
        "    except SystemExit as exit:\n"
        "        code = exit.code\n"
        "    assert code == 2, argv\n"
        "print('tensorflow' in sys.modules)\n"
    )
    argvs = [[part.replace("{tmp}", str(tmp_path)) for part in argv] for argv, _ in SUBPROCESS_CASES]
    completed = subprocess.run(
        [sys.executable, "-c", script.replace("ARGVS", repr(argvs))],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "False"


# TrainConfig built in Python ------------------------------------------------------------------------


def python_config_cases():
    for name, (low, high) in INT_RANGES.items():
        allowed = f"from {low} to {high}"
        values = [low - 1, 10**30, -(10**30), 2.5, float(low), math.nan, math.inf, True, "20", [1], {"a": 1}]
        if name != "max_images":
            values.append(None)
        for value in values:
            yield name, value, [name, allowed]
    for name in ("generator_lr", "discriminator_lr", "checkpoint_every_minutes"):
        for value in (0, 0.0, -1e-9, math.nan, math.inf, -math.inf, 1e30, 10**30, True, "2e-4", None, [0.1]):
            yield name, value, [name, "greater than 0 and at most"]
    for name in ("beta_1", "beta_2"):
        for value in (1, 1.0, -0.1, math.nan, math.inf, -math.inf, 10**30, False, "0.5", None, {}):
            yield name, value, [name, "must be in [0, 1)", "the default is"]
    for name, allowed in (
        ("model", "dcgan, conditional"),
        ("strategy", "auto, default, mirrored, multi_worker"),
        ("precision", "auto, float32, mixed_float16"),
    ):
        for value in ("", "other", LONG, None, 1, ["dcgan"]):
            yield name, value, [name, f"must be one of {allowed}"]
    for value in (1, 0, "true", "", None, [True]):
        yield "jit_compile", value, ["jit_compile", "must be true or false"]
    for value in ("", " ", None, 5, ["mnist"], {}):
        yield "data", value, ["data", "must be one of mnist, fashion_mnist or a path"]
    for value in ("cifar10", LONG, "a\x00b", "digits\n.npz"):
        yield "data", value, ["data", "neither a known dataset"]


PYTHON_CONFIG_CASES = list(python_config_cases())


@pytest.mark.parametrize(("name", "value", "expected"), PYTHON_CONFIG_CASES, ids=short_id)
def test_config_validate_rejects(name, value, expected):
    TRIED["config"] += 1
    with pytest.raises(ConfigError) as error:
        TrainConfig(**{name: value}).validate()
    assert_clear_message(str(error.value), expected)


def test_config_rejects_seed_range_past_largest_seed():
    TRIED["config"] += 1
    with pytest.raises(ConfigError) as error:
        TrainConfig(sample_seed=2**32 - 10, sample_count=64).validate()
    assert_clear_message(
        str(error.value), ["sample_seed 4294967286", "lower sample_seed to at most 4294967232"]
    )


def test_config_batch_larger_than_images():
    TRIED["config"] += 1
    with pytest.raises(ConfigError) as error:
        TrainConfig(batch_size=512, max_images=100).validate(num_images=60_000)
    assert_clear_message(str(error.value), ["batch_size 512", "at most 100"])


# config.json files ---------------------------------------------------------------------------------


def json_type_cases():
    """Wrong JSON types for every field, then values of the right type that validate rejects."""
    for field in fields(TrainConfig):
        annotation = str(field.type)
        if annotation == "bool":
            wrong = ['"true"', "1", "0", "[true]", "null"]
        elif "float" in annotation:
            wrong = ['"0.1"', "true", "[0.1]", '{"value": 0.1}', "null"]
        elif "int" in annotation:
            wrong = ['"20"', "20.0", "2.5", "true", "false", "[20]", "{}"]
            if "None" not in annotation:
                wrong.append("null")
        else:
            wrong = ["5", "true", '["mnist"]', "{}", "null"]
        for text in wrong:
            yield f'{{"{field.name}": {text}}}', ["config.json", field.name, text, "for example"]
    for name in ("generator_lr", "discriminator_lr", "checkpoint_every_minutes", "beta_1", "beta_2"):
        for text in ("NaN", "Infinity", "-Infinity", "1e999"):
            yield f'{{"{name}": {text}}}', [name]
    for name in INT_RANGES:
        yield f'{{"{name}": {HUGE}}}', [name, HUGE, "from"]
        yield f'{{"{name}": -1}}', [name, "-1", "from"]
    yield '{"data": "' + LONG + '"}', ["data", "(10000 characters)", "neither a known dataset"]
    yield '{"learning_rate": 0.1}', ["unknown config field(s) learning_rate", "known fields are"]
    yield "[1, 2]", ["must be an object such as", "got list"]
    yield '"epochs"', ["must be an object such as", "got str"]
    yield "null", ["must be an object such as", "got NoneType"]
    yield "{epochs: 20}", ["not valid JSON", "fix the syntax"]
    yield "", ["not valid JSON", "fix the syntax"]
    yield "[" * 100_000, ["nested too deeply"]


JSON_CASES = list(json_type_cases())


@pytest.mark.parametrize(("text", "expected"), JSON_CASES, ids=short_id)
def test_config_json_rejected(tmp_path, capsys, no_training, text, expected):
    path = tmp_path / "config.json"
    path.write_text(text)
    before = snapshot(tmp_path)
    code, stderr = run_cli(["train", "--run-dir", str(tmp_path / "new"), "--config", str(path)], capsys)
    TRIED["config.json"] += 1

    assert code == 2, stderr
    assert_clear_message(stderr, expected)
    assert snapshot(tmp_path) == before


def test_config_json_bytes_not_text(tmp_path, capsys, no_training):
    path = tmp_path / "config.json"
    path.write_bytes(b"\xff\xfe\x00binary")
    before = snapshot(tmp_path)
    code, stderr = run_cli(["train", "--run-dir", str(tmp_path / "new"), "--config", str(path)], capsys)
    TRIED["config.json"] += 1
    assert code == 2, stderr
    assert_clear_message(stderr, ["config.json", "not UTF-8 text"])
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("values", "expected"),
    [({"epochs": "20"}, "epochs must be an integer"), ({"width": None}, "width must be an integer")],
)
def test_run_config_json_wrong_type(tmp_path, capsys, values, expected):
    """A run's own config.json with a wrong type: status and resume report it instead of a TypeError."""
    run_dir = runs.create_run(tmp_path / "run", TrainConfig(**FAST))
    config = json.loads((run_dir / runs.CONFIG_FILE).read_text())
    (run_dir / runs.CONFIG_FILE).write_text(json.dumps({**config, **values}))
    before = snapshot(tmp_path)
    for command in (["status", "--run-dir", str(run_dir)], ["train", "--run-dir", str(run_dir), "--resume"]):
        code, stderr = run_cli(command, capsys)
        TRIED["config.json"] += 1
        assert code == 2, stderr
        assert_clear_message(stderr, [expected, "config.json"])
    assert snapshot(tmp_path) == before


# Data files -----------------------------------------------------------------------------------------


class Trace:
    """An object whose unpickling creates a file: proof that an archive was unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return builtins.open, (str(self.marker), "w")


def test_trace_unpickling_leaves_marker(tmp_path):
    # The check below can fail: unpickling a Trace does create its marker.
    marker = tmp_path / "unpickled"
    pickle.loads(pickle.dumps(Trace(marker))).close()
    assert marker.exists()


def write_npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def data_file_cases(folder: Path, marker: Path) -> list[tuple[Path, list[str]]]:
    """Create every bad data source under ``folder``; return each path with its expected message parts."""
    digits = np.zeros((64, 28, 28), np.uint8)
    labels = np.zeros(64, np.int64)
    cases = [
        (
            write_npz(folder / "shape.npz", x_train=np.zeros((64, 32, 32), np.uint8), y_train=labels),
            ["shape (64, 32, 32)", "Resize the images to 28x28"],
        ),
        (
            write_npz(folder / "flat.npz", x_train=np.zeros((64, 784), np.uint8), y_train=labels),
            ["shape (64, 784)", "(N, 28, 28)"],
        ),
        (
            write_npz(folder / "float.npz", x_train=np.full((64, 28, 28), 0.5), y_train=labels),
            ["dtype float64", "Convert the images to uint8"],
        ),
        (
            write_npz(folder / "negative.npz", x_train=np.full((64, 28, 28), -3, np.int16), y_train=labels),
            ["dtype int16", "Convert the images to uint8"],
        ),
        (
            write_npz(folder / "labels.npz", x_train=digits, y_train=np.zeros(10, np.int64)),
            ["64 images but 10 labels"],
        ),
        (
            write_npz(folder / "float-labels.npz", x_train=digits, y_train=np.full(64, 0.5)),
            ["non-negative integers", "class indices"],
        ),
        (write_npz(folder / "keys.npz", images=digits), ["lacks the arrays x_train, y_train", "x_test"]),
        (write_npz(folder / "empty-images.npz", x_train=digits[:0], y_train=labels[:0]), ["no images"]),
        (
            write_npz(
                folder / "objects.npz",
                x_train=np.array([Trace(marker)], dtype=object),
                y_train=np.array([Trace(marker)], dtype=object),
            ),
            ["object arrays", "not loaded"],
        ),
    ]
    pickled = folder / "pickle.npz"
    pickled.write_bytes(pickle.dumps(Trace(marker)))
    cases.append((pickled, ["not a readable .npz archive", "Keras-layout .npz"]))
    object_npy = folder / "object-array.npz"
    with open(object_npy, "wb") as handle:
        np.save(handle, np.array([Trace(marker)], dtype=object), allow_pickle=True)
    cases.append((object_npy, ["not a readable .npz archive"]))
    (folder / "text.npz").write_text("x_train,y_train\n")
    cases.append((folder / "text.npz", ["not a readable .npz archive"]))
    (folder / "zero.npz").write_bytes(b"")
    cases.append((folder / "zero.npz", ["not a readable .npz archive"]))

    png_folder = folder / "pngs"
    (png_folder / "0").mkdir(parents=True)
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(png_folder / "0" / "a.png")
    cases.append((png_folder, ["32x32 pixels", "Resize it to 28x28"]))
    broken_png = folder / "broken-png"
    (broken_png / "0").mkdir(parents=True)
    (broken_png / "0" / "a.png").write_bytes(b"not a png")
    cases.append((broken_png, ["not an image that Pillow can read", "remove or replace"]))
    idx = folder / "idx"
    idx.mkdir()
    (idx / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x01" + bytes(12))
    (idx / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01" + bytes(4))
    cases.append((idx, ["magic number 2049", "starts with 2051"]))
    (folder / "nothing").mkdir()
    cases.append((folder / "nothing", ["no MNIST IDX files", "class subfolders"]))
    return cases


def test_cli_rejects_bad_data_files(tmp_path, capsys, no_training):
    data_folder, marker = tmp_path / "data", tmp_path / "unpickled"
    data_folder.mkdir()
    cases = data_file_cases(data_folder, marker)
    before = snapshot(tmp_path)
    for path, expected in cases:
        code, stderr = run_cli(
            ["train", "--run-dir", str(tmp_path / "new"), "--data", str(path), "--batch-size", "1"], capsys
        )
        TRIED["data files"] += 1
        assert code == 2, (path, stderr)
        assert_clear_message(stderr, [path.name, *expected])
    assert not marker.exists()
    assert snapshot(tmp_path) == before


# Pages ----------------------------------------------------------------------------------------------


FORM_TEXT_FIELDS = FLOAT_FIELDS
FORM_INT_FIELDS = [name for name in INT_RANGES if name != "max_images"]


def form_rounds():
    """Yield rounds of form cases; every case of a round sets a different field, so one submit checks all."""
    text_values = [("", "must be a number such as"), ("abc", "must be a number such as")]
    text_values += [(LONG, "must be a number such as")]
    text_values += [(text, "") for text in ("nan", "inf", "-inf", "1e999", "-1", "1e30")]
    data_values = ["", "cifar10", LONG, "a\x00b", "~nosuchuser/x.npz", "/no/such/digits.npz", " ", "MNIST"]
    data_values.append("x")
    for (text, hint), data in zip(text_values, data_values, strict=True):
        round = [(name, text, [name, hint]) for name in FORM_TEXT_FIELDS]
        round.append(("data", data, ["data", "mnist, fashion_mnist"]))
        yield round
    for value in ("low", 10**15):
        round = []
        for name in FORM_INT_FIELDS:
            low, high = INT_RANGES[name]
            number = low - 1 if value == "low" else value
            round.append((name, number, [name, str(number), f"from {low} to {high}"]))
        number = 0 if value == "low" else value
        round.append(("max_images", number, ["max_images", str(number), "unset (empty)"]))
        yield round


FORM_ROUNDS = list(form_rounds())


def submit(at: AppTest) -> None:
    next(button for button in at.button if button.label == "Start training").click().run()
    assert not at.exception, at.exception


def set_form_value(at: AppTest, name: str, value) -> None:
    if isinstance(value, str):
        at.text_input(key=f"train_{name}").set_value(value)
    else:
        at.number_input(key=f"train_{name}").set_value(value)


def test_train_form_rejects_every_field(runs_dir):
    # One session for every round, which keeps the module fast; each round resets its fields after.
    at = open_page("pages/train.py")
    at.text_input(key="train_run_name").set_value("rejected")
    before = snapshot(runs_dir)
    for round in FORM_ROUNDS:
        defaults = {name: at.session_state[f"train_{name}"] for name, _, _ in round}
        for name, value, _ in round:
            set_form_value(at, name, value)
        submit(at)
        for name, value, expected in round:
            TRIED["pages"] += 1
            errors = [text for text in message_texts(at, "error") if text.startswith(name + " ")]
            assert errors, (name, value, message_texts(at, "error"))
            assert_clear_message(errors[0], expected)
        assert not message_texts(at, "success")
        for name, value in defaults.items():
            set_form_value(at, name, value)
    assert snapshot(runs_dir) == before
    tried_fields = {name for round in FORM_ROUNDS for name, _, _ in round}
    # A select box or a checkbox offers only valid values.
    choice_fields = {"model", "strategy", "precision", "jit_compile"}
    assert tried_fields == {field.name for field in fields(TrainConfig)} - choice_fields


def test_train_form_rejects_bad_data_files(runs_dir, tmp_path):
    data_folder, marker = tmp_path / "data", tmp_path / "unpickled"
    data_folder.mkdir()
    cases = data_file_cases(data_folder, marker)
    # The CLI tries every file; the page tries one of each kind.
    chosen = ("shape.npz", "float.npz", "objects.npz", "pickle.npz", "pngs")
    at = open_page("pages/train.py")
    at.text_input(key="train_run_name").set_value("rejected")
    at.number_input(key="train_batch_size").set_value(1)
    before = snapshot(tmp_path)
    for path, expected in cases:
        if path.name not in chosen:
            continue
        at.text_input(key="train_data").set_value(str(path))
        submit(at)
        TRIED["data files"] += 1
        errors = [text for text in message_texts(at, "error") if path.name in text]
        assert errors, (path, message_texts(at, "error"))
        assert_clear_message(errors[0], expected)
    assert not marker.exists()
    assert snapshot(tmp_path) == before


# The bound number inputs of the Generate page, each given the same bad value in one URL.
GENERATE_QUERY_KEYS = ("seed", "count", "columns", "latent_scale", "from_seed", "to_seed", "steps")
GENERATE_QUERY_VALUES = ("abc", "-1", HUGE, "1e999", "nan", "inf", "2.5e999", LONG, "0x10")


@pytest.mark.parametrize("value", GENERATE_QUERY_VALUES, ids=short_id)
def test_generate_link_rejects_numbers(runs_dir, trained_run, value):
    shutil.copytree(trained_run, runs_dir / "linked")
    before = snapshot(runs_dir)
    at = open_page("pages/generate.py", query=dict.fromkeys(GENERATE_QUERY_KEYS, value))
    warnings = message_texts(at, "warning")
    for key in GENERATE_QUERY_KEYS:
        TRIED["pages"] += 1
        about_key = [text for text in warnings if f"The link sets {key} to" in text]
        assert about_key, (key, warnings)
        assert_clear_message(about_key[0], [key, "must be", "the page uses the default"])
        assert key not in at.query_params
    assert at.number_input(key="count").value == 64
    assert "generate_grid_png" in at.session_state
    assert snapshot(runs_dir) == before


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"run": "../../etc", "checkpoint": "../x"}, "run '../../etc'"),
        ({"run": "/etc/passwd"}, "run '/etc/passwd'"),
        ({"run": "linked/../linked"}, "run 'linked/../linked'"),
        ({"run": LONG}, "(10000 characters)"),
        ({"run": "linked\n"}, "run 'linked\\n'"),
        ({"run": "linked", "checkpoint": "../x"}, "checkpoint '../x' of run 'linked'"),
        ({"run": "linked", "checkpoint": "-1"}, "checkpoint '-1'"),
        ({"run": "linked", "checkpoint": ""}, "checkpoint ''"),
        ({"run": "linked", "checkpoint": LONG}, "(10000 characters)"),
    ],
    ids=short_id,
)
def test_generate_link_rejects_generator(runs_dir, trained_run, query, expected):
    shutil.copytree(trained_run, runs_dir / "linked")
    before = snapshot(runs_dir)
    at = open_page("pages/generate.py", query=query)
    TRIED["pages"] += 1
    warnings = message_texts(at, "warning")
    assert any(expected in text for text in warnings), warnings
    assert_clear_message(warnings[0], ["The link asks for", "showing"])
    assert at.query_params["run"] == "linked"
    assert snapshot(runs_dir) == before


def test_losses_smoothing_out_of_range(runs_dir, trained_run):
    shutil.copytree(trained_run, runs_dir / "curves")
    at = open_page("pages/losses.py")
    before = snapshot(runs_dir)
    for value in (5.0, -1.0):
        at.slider(key="losses_smoothing").set_value(value).run()
        TRIED["pages"] += 1
        # The browser cannot send these; Streamlit puts the slider back in range without a message.
        assert not at.exception, at.exception
        assert 0 <= at.slider(key="losses_smoothing").value <= 0.99
        assert at.get("vega_lite_chart")
    assert snapshot(runs_dir) == before


SIDEBAR_CASES = [
    ("a\nb", ["Runs folder", "'\\n'", "without it"]),
    ("runs\x1b[2J", ["Runs folder", "'\\x1b'", "without it"]),
    ("runs\tx", ["Runs folder", "'\\t'"]),
    ("a\x00b", ["Runs folder", "'\\x00'"]),
    ("/" + LONG, ["Runs folder", "more than 255 bytes", "shorter"]),
    ("{tmp}/plain.txt", ["Runs folder", "plain.txt", "is a file", "enter a folder path"]),
]


def test_sidebar_runs_folder_rejects(runs_dir, tmp_path):
    (tmp_path / "plain.txt").write_text("not a folder")
    before = snapshot(tmp_path)
    at = open_page("pages/train.py")
    for text, expected in SIDEBAR_CASES:
        at.sidebar.text_input(key="runs_dir").set_value(text.replace("{tmp}", str(tmp_path))).run()
        TRIED["pages"] += 1
        assert not at.exception, at.exception
        errors = message_texts(at, "error")
        assert errors, text
        assert_clear_message(errors[0], expected)
        # The page stops at the message, so nothing reads the folder.
        assert not at.get("form")
    assert snapshot(tmp_path) == before


def test_sidebar_runs_folder_missing_or_empty(runs_dir, tmp_path):
    at = open_page("pages/train.py")
    at.sidebar.text_input(key="runs_dir").set_value(str(tmp_path / "later")).run()
    TRIED["pages"] += 1
    assert not at.exception
    assert any("does not exist yet" in text for text in message_texts(at.sidebar, "caption"))
    at.sidebar.text_input(key="runs_dir").set_value("").run()
    TRIED["pages"] += 1
    assert not at.exception
    assert message_texts(at, "error") == []
    assert not (tmp_path / "later").exists()


def test_sidebar_runs_folder_fixed_in_demo_mode(runs_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("GAN_DEMO", "1")
    elsewhere = tmp_path / "elsewhere"
    runs.create_run(elsewhere / "outside", TrainConfig(**FAST))
    at = open_page("pages/train.py", runs_dir=str(elsewhere))
    TRIED["pages"] += 1
    assert at.sidebar.text_input(key="runs_dir").disabled
    assert at.sidebar.text_input(key="runs_dir").value == str(runs_dir)
    assert "run" not in at.session_state
    assert not any("outside" in text for text in message_texts(at, "markdown"))


def test_counts_cover_every_surface():
    # Runs last in this module: every surface has been tried at least once.
    if len(TRIED) < 5:
        pytest.skip("only part of the module ran")
    assert set(TRIED) == {"cli", "config", "config.json", "pages", "data files"}
    assert all(count > 0 for count in TRIED.values())
