"""Tests of ``python -m gan`` in real processes: stop, kill, resume, locks, generation and exit codes.

Every trainer here trains a small DCGAN on the first few thousand real MNIST
digits. The tests wait for a trainer by polling the files of its run folder,
with a deadline that only guards against a hang.
"""

import contextlib
import csv
import io
import json
import os
import pty
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from gan import runs
from gan.checkpoints import list_checkpoints
from gan.data import MNIST_PATH_ENV

REPO_ROOT = Path(__file__).resolve().parents[1]

# 3200 digits in batches of 16 give 200 steps per epoch, a few seconds of training on a CPU.
SMALL_RUN = {
    "max_images": 3200,
    "epochs": 2,
    "batch_size": 16,
    "width": 8,
    "latent_dim": 16,
    "sample_count": 16,
    "log_every_steps": 10,
    "checkpoint_every_steps": 50,
    "eval_every_epochs": 0,  # the quality metrics add seconds per epoch
}
STEPS_PER_EPOCH = 200

# Limits that only catch a hung process. A trainer in these tests takes roughly 5 to 30 s on a 2-core CPU.
TRAINER_TIMEOUT = 150
COMMAND_TIMEOUT = 90

RESUMED_LINE = re.compile(r"resumed from ckpt-(\d+): epoch (\d+), step (\d+), optimizer iteration (\d+)")

GRID_PADDING = 2
DIGIT_SIZE = 28


def train_flags(settings: dict) -> list[str]:
    flags = []
    for name, value in settings.items():
        flags += ["--" + name.replace("_", "-"), str(value)]
    return flags


def make_env(mnist_path: Path, runs_dir: Path) -> dict[str, str]:
    """Return the environment of every subprocess: offline MNIST, this checkout, a private runs root."""
    env = dict(os.environ)
    env[MNIST_PATH_ENV] = str(mnist_path)
    env[runs.RUNS_DIR_ENV] = str(runs_dir)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


class Processes:
    """Starts ``python -m gan`` processes, with output in files, and kills leftovers at teardown."""

    def __init__(self, env: dict[str, str], work_dir: Path):
        self.env = env
        self.work_dir = work_dir
        self.started: list[subprocess.Popen] = []
        self.detached: list[tuple[int, Path]] = []
        self.output_files: dict[int, Path] = {}

    def start(self, *args, name: str) -> subprocess.Popen:
        return self.spawn([sys.executable, "-m", "gan", *map(str, args)], name=name)

    def spawn(self, command: list[str], *, name: str, stdin: int = subprocess.DEVNULL) -> subprocess.Popen:
        """Start ``command`` with its output in NAME.out; kill_leftovers stops it at teardown."""
        output = self.work_dir / f"{name}.out"
        with open(output, "wb") as handle:
            process = subprocess.Popen(
                command,
                stdin=stdin,
                stdout=handle,
                stderr=subprocess.STDOUT,
                cwd=self.work_dir,
                env=self.env,
            )
        self.started.append(process)
        self.output_files[process.pid] = output
        return process

    def output(self, process: subprocess.Popen) -> str:
        return self.output_files[process.pid].read_text(errors="replace")

    def run(self, *args, timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "gan", *map(str, args)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            cwd=self.work_dir,
            env=self.env,
            timeout=timeout,
        )

    def wait(self, process: subprocess.Popen) -> int:
        try:
            return process.wait(timeout=TRAINER_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"process {process.args} still running after {TRAINER_TIMEOUT} s")

    def kill_leftovers(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
                process.wait()
        # A detached trainer is killed only while its run still records it as live, so that a
        # recycled pid is never hit.
        for pid, run_dir in self.detached:
            status = runs.read_status(run_dir)
            if status["state"] in runs.LIVE_STATES and status.get("pid") == pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture
def processes(mnist_path, tmp_path):
    manager = Processes(make_env(mnist_path, tmp_path / "runs"), tmp_path)
    yield manager
    manager.kill_leftovers()


@pytest.fixture(scope="module")
def reference_run(mnist_path, tmp_path_factory) -> Path:
    """A SMALL_RUN trained without interruption to the end."""
    work_dir = tmp_path_factory.mktemp("reference")
    manager = Processes(make_env(mnist_path, work_dir / "runs"), work_dir)
    run_dir = work_dir / "reference"
    try:
        trainer = manager.start("train", "--run-dir", run_dir, *train_flags(SMALL_RUN), name="reference")
        assert manager.wait(trainer) == 0, manager.output(trainer)
    finally:
        manager.kill_leftovers()
    return run_dir


def wait_until(condition, description: str, process: subprocess.Popen | None = None):
    """Poll ``condition`` every 50 ms and return its first true value.

    Fail the test when ``process`` exits first or after TRAINER_TIMEOUT seconds.
    """
    deadline = time.monotonic() + TRAINER_TIMEOUT
    while True:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            pytest.fail(f"process exited with status {process.returncode} while waiting for {description}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {TRAINER_TIMEOUT} s waiting for {description}")
        time.sleep(0.05)


def read_rows(path: Path) -> list[dict[str, str]]:
    text, _ = runs.read_complete_lines(path)
    return list(csv.DictReader(io.StringIO(text)))


def metrics_steps(run_dir: Path) -> list[int]:
    return [int(row["step"]) for row in read_rows(run_dir / runs.METRICS_FILE)]


def last_metrics_step(run_dir: Path) -> int:
    return max(metrics_steps(run_dir), default=0)


def checkpoint_counters(prefix: Path) -> dict[str, int]:
    """Read the step, epoch and both Adam iteration counts stored in a TensorFlow checkpoint."""
    import tensorflow as tf

    names = [name for name, _ in tf.train.list_variables(str(prefix))]
    reader = tf.train.load_checkpoint(str(prefix))

    def scalar(owner: str, variable: str) -> int:
        keys = [name for name in names if name.split("/")[0] == owner and variable in name]
        assert len(keys) == 1, f"expected one {owner} {variable} variable in {prefix}, found {keys}"
        return int(reader.get_tensor(keys[0]))

    return {
        "step": scalar("step", "VARIABLE_VALUE"),
        "epoch": scalar("epoch", "VARIABLE_VALUE"),
        "g_iterations": scalar("g_optimizer", "iterations"),
        "d_iterations": scalar("d_optimizer", "iterations"),
    }


def resumed_from(output: str) -> dict[str, int]:
    match = RESUMED_LINE.search(output)
    assert match, f"no 'resumed from' line in the trainer output:\n{output[-3000:]}"
    checkpoint, epoch, step, iteration = map(int, match.groups())
    return {"checkpoint": checkpoint, "epoch": epoch, "step": step, "iteration": iteration}


def assert_complete_history(run_dir: Path, epochs: int, steps_per_epoch: int, log_every: int) -> None:
    """Check a finished run's files: one row per epoch, each logged step once, every sample grid."""
    status = runs.read_status(run_dir)
    assert status["state"] == "finished"
    assert status["step"] == epochs * steps_per_epoch

    epoch_rows = read_rows(run_dir / runs.EPOCHS_FILE)
    assert [int(row["epoch"]) for row in epoch_rows] == list(range(1, epochs + 1))
    assert [int(row["step"]) for row in epoch_rows] == [
        epoch * steps_per_epoch for epoch in range(1, epochs + 1)
    ]

    steps = metrics_steps(run_dir)
    assert len(steps) == len(set(steps)), f"duplicate metrics steps: {steps}"
    assert all(earlier < later for earlier, later in zip(steps, steps[1:], strict=False)), steps
    assert steps == list(range(log_every, epochs * steps_per_epoch + 1, log_every))
    for row in read_rows(run_dir / runs.METRICS_FILE):
        assert int(row["epoch"]) == (int(row["step"]) - 1) // steps_per_epoch + 1, row

    samples = sorted(path.name for path in (run_dir / runs.SAMPLES_DIR).iterdir())
    assert samples == [f"epoch_{epoch:04d}.png" for epoch in range(epochs + 1)]
    assert (run_dir / runs.GENERATOR_FILE).is_file()


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as picture:
        return np.asarray(picture.convert("L"))


def grid_tiles(grid: np.ndarray, count: int, columns: int) -> list[np.ndarray]:
    """Cut the 28x28 digits out of a grid written by ``gan.generate.grid_image``."""
    tiles = []
    for index in range(count):
        row, column = divmod(index, columns)
        top = GRID_PADDING + row * (DIGIT_SIZE + GRID_PADDING)
        left = GRID_PADDING + column * (DIGIT_SIZE + GRID_PADDING)
        tiles.append(grid[top : top + DIGIT_SIZE, left : left + DIGIT_SIZE])
    return tiles


# Stop and resume --------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("send_stop", ["stop_command", "sigterm"])
def test_sigterm_mid_epoch_then_resume(processes, tmp_path, send_stop):
    run_dir = tmp_path / "run"
    trainer = processes.start("train", "--run-dir", run_dir, *train_flags(SMALL_RUN), name="first")
    wait_until(
        lambda: last_metrics_step(run_dir) >= STEPS_PER_EPOCH + 50,
        "a metrics row in the middle of epoch 2",
        trainer,
    )

    if send_stop == "stop_command":
        stopped = processes.run("stop", "--run-dir", run_dir, "--wait", "60")
        assert stopped.returncode == 0, stopped.stderr
        assert "stopped at epoch 1" in stopped.stdout
    else:
        os.kill(trainer.pid, signal.SIGTERM)
    assert processes.wait(trainer) == 0, processes.output(trainer)

    status = runs.read_status(run_dir)
    stop_step = status["step"]
    assert status["state"] == "stopped"
    assert status["epoch"] == 1
    assert STEPS_PER_EPOCH < stop_step < 2 * STEPS_PER_EPOCH, "the stop did not land in the middle of epoch 2"
    assert last_metrics_step(run_dir) <= stop_step

    newest = list_checkpoints(run_dir / runs.CHECKPOINTS_DIR)[-1]
    assert newest.step == stop_step
    assert newest.epoch == 1
    counters = checkpoint_counters(newest.path)
    assert counters["step"] == stop_step
    assert counters["epoch"] == 1
    assert counters["g_iterations"] == stop_step
    assert counters["d_iterations"] == stop_step

    resumed = processes.start("train", "--run-dir", run_dir, "--resume", name="resumed")
    assert processes.wait(resumed) == 0, processes.output(resumed)

    restored = resumed_from(processes.output(resumed))
    assert restored["checkpoint"] == stop_step
    assert restored["step"] == stop_step
    assert restored["epoch"] == 1
    assert restored["iteration"] == stop_step
    assert_complete_history(run_dir, 2, STEPS_PER_EPOCH, SMALL_RUN["log_every_steps"])

    final = checkpoint_counters(list_checkpoints(run_dir / runs.CHECKPOINTS_DIR)[-1].path)
    assert final["g_iterations"] == 2 * STEPS_PER_EPOCH
    assert final["d_iterations"] == 2 * STEPS_PER_EPOCH


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigkill_mid_epoch_then_resume(processes, tmp_path):
    # Checkpoints every 60 steps land at 60, 120, 180, 200 (epoch end), 260, 320, 380 and 400.
    settings = {**SMALL_RUN, "checkpoint_every_steps": 60}
    run_dir = tmp_path / "run"
    checkpoint_dir = run_dir / runs.CHECKPOINTS_DIR
    trainer = processes.start("train", "--run-dir", run_dir, *train_flags(settings), name="killed")

    def rows_after_mid_epoch_checkpoint() -> bool:
        complete = list_checkpoints(checkpoint_dir)
        if not complete or complete[-1].step <= STEPS_PER_EPOCH:
            return False
        return last_metrics_step(run_dir) > complete[-1].step

    # Freeze the trainer once it has logged steps past a checkpoint in epoch 2, so that the
    # files inspected here are the files it leaves behind when killed.
    while True:
        wait_until(rows_after_mid_epoch_checkpoint, "metrics rows after a checkpoint in epoch 2", trainer)
        os.kill(trainer.pid, signal.SIGSTOP)
        if rows_after_mid_epoch_checkpoint():
            break
        os.kill(trainer.pid, signal.SIGCONT)
    newest = list_checkpoints(checkpoint_dir)[-1].step
    steps_before_kill = metrics_steps(run_dir)
    os.kill(trainer.pid, signal.SIGKILL)
    assert processes.wait(trainer) == -signal.SIGKILL

    status = processes.run("status", "--run-dir", run_dir, "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["state"] == "crashed"
    assert json.loads(status.stdout)["recorded_state"] == "running"
    described = processes.run("status", "--run-dir", run_dir)
    assert described.stdout.startswith("run: crashed")
    assert STEPS_PER_EPOCH < newest < 2 * STEPS_PER_EPOCH
    assert newest < max(steps_before_kill)

    resumed = processes.start("train", "--run-dir", run_dir, "--resume", name="resumed")
    assert processes.wait(resumed) == 0, processes.output(resumed)

    restored = resumed_from(processes.output(resumed))
    assert restored["checkpoint"] == newest
    assert restored["step"] == newest
    assert restored["epoch"] == 1
    assert restored["iteration"] == newest
    assert_complete_history(run_dir, 2, STEPS_PER_EPOCH, settings["log_every_steps"])


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_resumed_run_matches_uninterrupted(processes, tmp_path, reference_run):
    import tensorflow as tf

    from gan.generate import generate_images, load_generator

    run_dir = tmp_path / "interrupted"
    trainer = processes.start("train", "--run-dir", run_dir, *train_flags(SMALL_RUN), name="first")
    wait_until(lambda: last_metrics_step(run_dir) >= 60, "a metrics row in the middle of epoch 1", trainer)
    stopped = processes.run("stop", "--run-dir", run_dir, "--wait", "60")
    assert stopped.returncode == 0, stopped.stderr
    assert processes.wait(trainer) == 0, processes.output(trainer)
    stop_step = runs.read_status(run_dir)["step"]
    assert 0 < stop_step < STEPS_PER_EPOCH, "the stop did not land in the middle of epoch 1"

    resumed = processes.start("train", "--run-dir", run_dir, "--resume", name="resumed")
    assert processes.wait(resumed) == 0, processes.output(resumed)

    # Every saved variable: both networks, both Adam optimizers, the noise seed state, the counters.
    # They are bitwise equal on CPU (TensorFlow 2.21 with oneDNN) without TF_DETERMINISTIC_OPS.
    # NOTE: not run on a GPU, where some TensorFlow kernels are nondeterministic.
    final_step = 2 * STEPS_PER_EPOCH
    reference_prefix = str(reference_run / runs.CHECKPOINTS_DIR / f"ckpt-{final_step}")
    resumed_prefix = str(run_dir / runs.CHECKPOINTS_DIR / f"ckpt-{final_step}")
    reference_reader = tf.train.load_checkpoint(reference_prefix)
    resumed_reader = tf.train.load_checkpoint(resumed_prefix)
    names = [name for name, _ in tf.train.list_variables(reference_prefix)]
    assert names == [name for name, _ in tf.train.list_variables(resumed_prefix)]
    # save_counter counts checkpoint writes, and the stop wrote one more.
    different = [
        name
        for name in names
        if not name.startswith("save_counter")
        and not np.array_equal(reference_reader.get_tensor(name), resumed_reader.get_tensor(name))
    ]
    assert different == []
    assert any(name.startswith("epoch_means/") for name in names)

    # The epoch means of the interrupted epoch include the steps before the stop.
    columns = ["epoch", "step", "d_loss", "g_loss", "d_real", "d_fake"]
    reference_epochs = pd.read_csv(reference_run / runs.EPOCHS_FILE)[columns]
    resumed_epochs = pd.read_csv(run_dir / runs.EPOCHS_FILE)[columns]
    pd.testing.assert_frame_equal(resumed_epochs, reference_epochs)

    seeds = list(range(64))
    reference_images = generate_images(load_generator(reference_run), seeds)
    resumed_images = generate_images(load_generator(run_dir), seeds)
    assert np.array_equal(reference_images, resumed_images)


# Locks ----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_second_trainer_on_locked_run_rejected(processes, tmp_path):
    # 1600 digits give 100 steps per epoch. 500 epochs outlast the second trainer's
    # TensorFlow import and its 3 s wait for the lock on any machine; the test stops the run.
    settings = {**SMALL_RUN, "max_images": 1600, "epochs": 500, "checkpoint_every_steps": 1000}
    run_dir = tmp_path / "run"
    first = processes.start("train", "--run-dir", run_dir, *train_flags(settings), name="first")
    wait_until(lambda: last_metrics_step(run_dir) > 0, "the first trainer's first metrics row", first)

    second = processes.run("train", "--run-dir", run_dir, "--resume")

    assert first.poll() is None, "the first trainer ended before the second one tried the lock"
    assert second.returncode == 1, second.stderr
    assert "already being trained" in second.stderr
    assert f"pid {first.pid}" in second.stderr
    assert runs.read_status(run_dir)["pid"] == first.pid
    with pytest.raises(runs.RunError, match="already running"):
        runs.launch(run_dir, resume=True)

    stopped = processes.run("stop", "--run-dir", run_dir, "--wait", "60")
    assert stopped.returncode == 0, stopped.stderr
    assert processes.wait(first) == 0, processes.output(first)
    status = runs.read_status(run_dir)
    assert status["state"] == "stopped"
    assert status["pid"] == first.pid
    steps = pd.read_csv(run_dir / runs.METRICS_FILE)["step"]
    assert steps.is_monotonic_increasing
    assert steps.is_unique


# Generation ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_generate_same_seed_same_image(processes, tmp_path, reference_run):
    from gan.generate import generate_images, load_generator

    first_seed, count, columns = 7, 12, 4
    grid_args = ["--run-dir", reference_run, "--count", count, "--columns", columns]
    commands = {
        "first.png": ["--seed", first_seed, *grid_args, "--npz", tmp_path / "first.npz"],
        "again.png": ["--seed", first_seed, *grid_args],
        "shifted.png": ["--seed", first_seed + 1, *grid_args],
        "single.png": ["--run-dir", reference_run, "--seed", first_seed + 5, "--count", 1],
    }
    started = {
        output: processes.start("generate", *args, "--output", tmp_path / output, name=output)
        for output, args in commands.items()
    }
    for output, process in started.items():
        assert processes.wait(process) == 0, f"{output}: {processes.output(process)}"

    assert (tmp_path / "first.png").read_bytes() == (tmp_path / "again.png").read_bytes()

    first = read_png(tmp_path / "first.png")
    shifted = read_png(tmp_path / "shifted.png")
    tile_pitch = DIGIT_SIZE + GRID_PADDING
    assert first.shape == (3 * tile_pitch + GRID_PADDING, 4 * tile_pitch + GRID_PADDING)
    assert not np.array_equal(first, shifted)
    first_tiles = grid_tiles(first, count, columns)
    shifted_tiles = grid_tiles(shifted, count, columns)
    # Digit i of a grid from seed S is the digit of seed S+i, so the grids overlap by one.
    for index in range(count - 1):
        assert np.array_equal(shifted_tiles[index], first_tiles[index + 1]), f"tile {index}"

    single = grid_tiles(read_png(tmp_path / "single.png"), 1, 1)[0]
    assert np.array_equal(single, first_tiles[5])

    with np.load(tmp_path / "first.npz") as archive:
        assert archive["seeds"].tolist() == list(range(first_seed, first_seed + count))
        for index in range(count):
            assert np.array_equal(archive["images"][index], first_tiles[index]), f"npz image {index}"

    generator = load_generator(reference_run)
    for index in range(count):
        alone = generate_images(generator, [first_seed + index])[0]
        assert np.array_equal(alone, first_tiles[index]), f"seed {first_seed + index}"


# Command line --------------------------------------------------------------------------


def test_help_does_not_import_tensorflow(processes):
    result = processes.run("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m gan")

    # -X importtime reports every module the process imports on stderr.
    timed = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "gan", "--help"],
        capture_output=True,
        text=True,
        cwd=processes.work_dir,
        env=processes.env,
        timeout=COMMAND_TIMEOUT,
    )
    assert timed.returncode == 0
    imported = [line.rsplit("|", 1)[-1].strip() for line in timed.stderr.splitlines() if "|" in line]
    assert "gan.cli" in imported
    heavy = [name for name in imported if name.split(".")[0] in ("tensorflow", "keras")]
    assert heavy == []


def test_subcommand_help_does_not_import_tensorflow(processes):
    script = (
        "import json, sys\n"
        "from gan.cli import main\n"
        "codes = []\n"
        "for argv in (['train', '--help'], ['generate', '--help'], ['stop', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as error:\n"
        "        codes.append(error.code)\n"
        "loaded = sorted(name for name in sys.modules if name.split('.')[0] in ('tensorflow', 'keras'))\n"
        "print(json.dumps({'codes': codes, 'loaded': loaded}), file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=processes.work_dir,
        env=processes.env,
        timeout=COMMAND_TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stderr.strip().splitlines()[-1])
    assert report["codes"] == [0, 0, 0]
    assert report["loaded"] == []
    assert "--latent-dim" in result.stdout


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--epochs", "0"], "epochs must be an integer from 1 to 100000"),
        (["--batch-size", "-16"], "batch_size must be an integer from 1 to 65536"),
        (["--generator-lr", "nan"], "generator_lr must be a number greater than 0"),
        (["--beta-1", "1.5"], "beta_1 must be in [0, 1)"),
        (["--data", "/no/such/file.npz"], "data '/no/such/file.npz' is neither"),
        (["--epochs", "two"], "argument --epochs: must be an integer such as 20, got 'two'"),
        (["--model", "gan"], "argument --model: must be one of dcgan, conditional, got 'gan'"),
    ],
)
def test_train_bad_flag_exits_2(processes, tmp_path, flags, message):
    run_dir = tmp_path / "run"

    result = processes.run("train", "--run-dir", run_dir, *flags)

    assert result.returncode == 2
    assert message in result.stderr
    assert not run_dir.exists()


@pytest.mark.slow
def test_commands_on_finished_run_exit_2(processes, reference_run):
    config_before = (reference_run / runs.CONFIG_FILE).read_text()

    again = processes.run("train", "--run-dir", reference_run)
    assert again.returncode == 2
    assert "has already started (state: finished)" in again.stderr
    assert "--resume" in again.stderr

    changed = processes.run("train", "--run-dir", reference_run, "--resume", "--epochs", "5")
    assert changed.returncode == 2
    assert "remove --epochs" in changed.stderr

    stopped = processes.run("stop", "--run-dir", reference_run)
    assert stopped.returncode == 2
    assert "is not running (state: finished)" in stopped.stderr

    assert (reference_run / runs.CONFIG_FILE).read_text() == config_before
    assert runs.read_status(reference_run)["state"] == "finished"


def test_commands_on_non_run_folder_exit_2(processes, tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()

    for command in (["status", "--run-dir", folder], ["stop", "--run-dir", folder]):
        result = processes.run(*command)

        assert result.returncode == 2, command
        assert "is not a run folder: config.json not found" in result.stderr, command
        assert result.stdout == "", command

    listed = processes.run("list", "--runs-dir", tmp_path / "absent", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []


# Detached training --------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_detach_returns_while_trainer_runs(processes, tmp_path):
    # 800 digits in batches of 16 make one epoch of 50 steps.
    settings = {**SMALL_RUN, "max_images": 800, "epochs": 1}
    run_dir = tmp_path / "run"

    result = processes.run("train", "--run-dir", run_dir, *train_flags(settings), "--detach")

    assert result.returncode == 0, result.stderr
    match = re.search(r"started trainer pid (\d+)", result.stdout)
    assert match, result.stdout
    pid = int(match.group(1))
    processes.detached.append((pid, run_dir))
    os.kill(pid, 0)  # raises ProcessLookupError if the trainer is already gone
    assert runs.read_status(run_dir)["state"] in ("starting", "running")

    def final_state() -> str | None:
        state = runs.read_status(run_dir)["state"]
        return None if state in runs.LIVE_STATES else state

    assert wait_until(final_state, "the detached trainer to finish") == "finished"
    assert runs.read_status(run_dir)["pid"] == pid
    log = (run_dir / runs.LOG_FILE).read_text()
    assert "finished at epoch 1, step 50" in log
    assert "data: mnist, 800 images of 28x28, 50 steps per epoch" in log
    assert_complete_history(run_dir, 1, 50, settings["log_every_steps"])


@pytest.mark.timeout(300)
def test_stop_while_trainer_starts(processes, tmp_path):
    # The stop reaches the trainer while it imports TensorFlow, before its first step.
    settings = {**SMALL_RUN, "max_images": 800, "epochs": 1}
    run_dir = tmp_path / "run"
    started = processes.run("train", "--run-dir", run_dir, *train_flags(settings), "--detach")
    assert started.returncode == 0, started.stderr
    pid = int(re.search(r"started trainer pid (\d+)", started.stdout).group(1))
    processes.detached.append((pid, run_dir))

    stopped = processes.run("stop", "--run-dir", run_dir, "--wait", "60")

    assert stopped.returncode == 0, stopped.stderr
    status = runs.read_status(run_dir)
    assert status["state"] == "stopped"
    assert status["step"] == 0
    log = (run_dir / runs.LOG_FILE).read_text()
    assert "while starting; stopping before training" in log

    resumed = processes.run("train", "--run-dir", run_dir, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert runs.read_status(run_dir)["state"] == "finished"
    assert_complete_history(run_dir, 1, 50, settings["log_every_steps"])


@pytest.mark.timeout(300)
def test_foreground_progress_bar_on_terminal(mnist_path, tmp_path):
    # stderr on a pseudo-terminal, as in an interactive shell.
    run_dir = tmp_path / "run"
    controller, terminal = pty.openpty()
    settings = {**SMALL_RUN, "max_images": 640, "epochs": 3}
    command = [sys.executable, "-m", "gan", "train", "--run-dir", str(run_dir), *train_flags(settings)]
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=terminal,
        env=make_env(mnist_path, tmp_path),
        cwd=REPO_ROOT,
    )
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal closes when the trainer exits
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    assert process.wait(timeout=TRAINER_TIMEOUT) == 0, output.decode(errors="replace")[-2000:]

    text = output.decode(errors="replace")
    bars = re.findall(r"\r\[([#.]{30})\] epoch (\d+)/3 step (\d+)/120", text)
    assert bars, text[-2000:]
    assert bars[-1] == ("#" * 30, "3", "120")
    assert "finished" in process.stdout.read().decode()


def test_generate_gif_animates_interpolation(reference_run, tmp_path, capsys):
    from gan import cli

    output = tmp_path / "walk.gif"
    argv = ["generate", "--run-dir", str(reference_run), "--seed", "3", "--interpolate-to", "9"]
    assert cli.main([*argv, "--steps", "6", "--output", str(output)]) == 0
    with Image.open(output) as animation:
        assert animation.format == "GIF"
        assert animation.n_frames == 6
    # A grid is one picture, and other endings are not image formats the command writes.
    for wrong in (["--seed", "3", "--output", str(tmp_path / "grid.gif")], [*argv[3:], "--output", "x.jpg"]):
        assert cli.main(["generate", "--run-dir", str(reference_run), *wrong]) == 2
        assert "--output" in capsys.readouterr().err
    assert not (tmp_path / "grid.gif").exists()


def test_output_to_closed_pipe_exits_quietly(tmp_path, monkeypatch, capsys):
    from gan import cli

    class ClosedPipe(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert cli.main(["list", "--runs-dir", str(tmp_path), "--json"]) == 1
    assert "Traceback" not in capsys.readouterr().err
