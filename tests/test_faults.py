"""Crash tests: a real trainer killed with SIGKILL at 20 points of one run, resumed after each.

One small run (8 epochs of 10 steps, a checkpoint every 4 steps, one
checkpoint kept) is trained by a chain of ``python -m gan train`` processes.
Each process but the last dies by SIGKILL: at a fault point of the trainer
(``GAN_FAULT``, see gan/faults.py), or from this test once its metrics reach
a step. The next process resumes the run. The test checks each resume
against the checkpoints on disk at the kill, and the finished run against
the files an uninterrupted run writes. The kill points and the steps lost at
each are written to test-output/reliability/kills.json.

Importing TensorFlow takes most of a small trainer's life, so each process
is started while its predecessor trains: it imports ``gan.cli``, then waits
for its command line and environment on stdin and runs ``gan.cli.main``, the
function behind ``python -m gan``. It touches nothing before that line.
"""

import csv
import io
import json
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from test_processes import TRAINER_TIMEOUT, Processes, make_env, train_flags

from gan import faults, history, runs
from gan.checkpoints import list_checkpoints
from gan.generate import load_generator_file

REPORT_DIR = Path(__file__).resolve().parents[1] / "test-output" / "reliability"

CHECKPOINT_EVERY = 4
STEPS_PER_EPOCH = 10
EPOCHS = 8
TOTAL_STEPS = EPOCHS * STEPS_PER_EPOCH
KILL_RUN = {
    "max_images": 320,
    "batch_size": 32,
    "epochs": EPOCHS,
    "width": 8,
    "latent_dim": 16,
    "sample_count": 16,
    "log_every_steps": 1,
    "checkpoint_every_steps": CHECKPOINT_EVERY,
    "checkpoints_kept": 1,
    "eval_every_epochs": 0,  # the quality metrics add seconds per epoch to each of 21 processes
}

RESUMED = re.compile(r"resumed from ckpt-(\d+): epoch (\d+), step (\d+), optimizer iteration (\d+)")
FROM_ZERO = "no complete checkpoint yet; starting the run from step 0"


@dataclass
class Resumed:
    step: int
    epoch: int


@dataclass(frozen=True)
class Kill:
    """Where one trainer process of the chain dies.

    ``fault`` is a GAN_FAULT value, or a function of the step the process
    resumes from that returns one. ``after_steps`` instead has this test kill
    the process once its metrics are that many steps past the resume.
    """

    label: str
    fault: str | Callable[[Resumed], str] | None = None
    after_steps: int | None = None

    def fault_for(self, resumed: Resumed) -> str | None:
        return self.fault(resumed) if callable(self.fault) else self.fault


def _last_epoch_end(resumed: Resumed) -> str:
    # The epoch end of the final epoch: after its checkpoint, before the run records "finished".
    return f"epoch_end:{EPOCHS - resumed.epoch}"


KILLS = [
    Kill("at start, before anything is loaded", "start:1"),
    Kill("during the epoch 0 sample grid write", "write:epoch_0000.png:1"),
    Kill("after step 2, before the first checkpoint", "step:2:1"),
    Kill("during a metrics.csv append, before the first checkpoint", "append:metrics.csv:3"),
    Kill("during a checkpoint write: files written, marker not", "checkpoint_files:1"),
    Kill("during a checkpoint write: marker half written", "write:ckpt-*.json:1"),
    Kill("after step 6", "step:6:1"),
    Kill("during an epochs.csv append at an epoch end", "append:epochs.csv:1"),
    Kill("during an epoch-end sample grid write", "write:epoch_*.png:1"),
    Kill("during the generator.keras export", "export:1"),
    Kill("between epochs, after the epoch's checkpoint", "epoch_end:1"),
    Kill("by this test, 3 steps after the resume", after_steps=3),
    Kill("during a status.json write", "write:status.json:2"),
    Kill("during the second checkpoint write of a process", "checkpoint_files:2"),
    Kill("during the second marker write of a process", "write:ckpt-*.json:2"),
    Kill("during the fifth metrics.csv append of a process", "append:metrics.csv:5"),
    Kill("by this test, 2 steps after the resume", after_steps=2),
    Kill("during the next sample grid write", "write:epoch_*.png:1"),
    Kill("after the third step of a process", "step:*:3"),
    Kill("after the last epoch's checkpoint, before the run is finished", _last_epoch_end),
]


def trained_steps(run_dir: Path) -> int:
    """Return the last step with a complete metrics.csv row: the steps the killed trainer had done."""
    text, _ = runs.read_complete_lines(run_dir / runs.METRICS_FILE)
    steps = [int(row["step"]) for row in csv.DictReader(io.StringIO(text)) if row.get("step")]
    return max(steps, default=0)


def resumed_from(output: str) -> Resumed | None:
    """Return where a process resumed, from its log, or None if it died before it got there."""
    match = RESUMED.search(output)
    if match:
        return Resumed(step=int(match.group(3)), epoch=int(match.group(2)))
    return Resumed(0, 0) if FROM_ZERO in output else None


def wait_for_step(process: subprocess.Popen, output: Path, run_dir: Path, step: int) -> None:
    """Wait until the resumed trainer has trained ``step`` steps of the run.

    The trainer logs its resume after it has dropped the rows that its
    predecessor wrote past the checkpoint, so rows counted after that line
    are its own.
    """
    deadline = time.monotonic() + TRAINER_TIMEOUT
    while resumed_from(output.read_text(errors="replace")) is None or trained_steps(run_dir) < step:
        if process.poll() is not None:
            pytest.fail(f"the trainer exited with {process.returncode} before step {step}")
        if time.monotonic() > deadline:
            pytest.fail(f"no step {step} after {TRAINER_TIMEOUT} s")
        time.sleep(0.005)


WAITING_TRAINER = textwrap.dedent(
    """
    import json
    import os
    import sys

    import gan.cli
    import gan.train  # noqa: F401  (the seconds of TensorFlow and Keras imports, spent early)

    command = json.loads(sys.stdin.readline())
    os.environ.update(command["env"])
    sys.exit(gan.cli.main(command["argv"]))
    """
)


def start_waiting(chain: Processes, name: str) -> subprocess.Popen:
    """Start a trainer process that imports the package, then waits for its command on stdin."""
    return chain.spawn([sys.executable, "-c", WAITING_TRAINER], name=name, stdin=subprocess.PIPE)


def send_command(process: subprocess.Popen, argv: list, fault: str | None = None) -> None:
    """Give a waiting trainer its command line (as after ``python -m gan``) and GAN_FAULT."""
    env = {faults.FAULT_VARIABLE: fault} if fault else {}
    process.stdin.write(json.dumps({"argv": [str(arg) for arg in argv], "env": env}).encode() + b"\n")
    process.stdin.close()


@pytest.fixture
def chain(mnist_path, tmp_path):
    manager = Processes(make_env(mnist_path, tmp_path / "runs"), tmp_path)
    yield manager
    manager.kill_leftovers()


def test_twenty_kills_then_resume_finishes_the_run(chain, tmp_path):
    run_dir = tmp_path / "runs" / "killed"
    report = []
    start = Resumed(0, 0)  # where the next process resumes: the newest complete checkpoint
    waiting = start_waiting(chain, "kill-01")
    for number, kill in enumerate(KILLS, start=1):
        args = ["train", "--run-dir", run_dir]
        args += ["--resume"] if number > 1 else train_flags(KILL_RUN)
        fault = kill.fault_for(start)
        process = waiting
        send_command(process, args, fault)
        waiting = start_waiting(chain, f"kill-{number + 1:02d}" if number < len(KILLS) else "final")
        if kill.after_steps is not None:
            fault = f"SIGKILL from the test at step {start.step + kill.after_steps} or later"
            wait_for_step(process, chain.output_files[process.pid], run_dir, start.step + kill.after_steps)
            process.send_signal(signal.SIGKILL)
        returncode = chain.wait(process)
        output = chain.output(process)
        assert returncode == -signal.SIGKILL, f"kill {number} ({kill.label}) was not reached:\n{output}"
        if number > 1:
            # Step and epoch continue from the checkpoint that the previous kill left complete.
            assert resumed_from(output) == start, f"kill {number}: wrong resume:\n{output}"

        trained = trained_steps(run_dir)
        complete = list_checkpoints(run_dir / runs.CHECKPOINTS_DIR)
        state = runs.read_status(run_dir)["state"]
        assert state in ("new", "crashed"), f"kill {number}: the run reads {state!r}"
        following = Resumed(complete[-1].step, complete[-1].epoch) if complete else Resumed(0, 0)
        entry = {
            "kill": number,
            "point": kill.label,
            "fault": fault,
            "resumed_at_step": start.step,
            "trained_steps": trained,
            "last_complete_checkpoint": following.step,
            "steps_lost": trained - following.step,
            "state_after_kill": state,
        }
        report.append(entry)
        assert 0 <= entry["steps_lost"] <= CHECKPOINT_EVERY, entry
        assert following.step >= start.step, f"kill {number}: the newest checkpoint went backwards"
        start = following

    # The last process resumes and finishes the run.
    final = waiting
    send_command(final, ["train", "--run-dir", run_dir, "--resume"])
    assert chain.wait(final) == 0, chain.output(final)
    assert resumed_from(chain.output(final)) == start
    check_finished_run(run_dir)
    write_report(report)


def check_finished_run(run_dir: Path) -> None:
    """The run of 20 crashes ends with the files of an uninterrupted run, all readable."""
    status = runs.read_status(run_dir)
    assert (status["state"], status["step"], status["epoch"]) == ("finished", TOTAL_STEPS, EPOCHS)

    # Each step and epoch once, in order: rows past a crash's checkpoint were dropped and replayed.
    metrics = history.read_history(run_dir / runs.METRICS_FILE)
    assert metrics["step"].tolist() == list(range(1, TOTAL_STEPS + 1))
    assert np.isfinite(metrics[["d_loss", "g_loss"]].to_numpy()).all()
    epochs = history.read_history(run_dir / runs.EPOCHS_FILE, key="epoch")
    assert epochs["epoch"].tolist() == list(range(1, EPOCHS + 1))
    assert epochs["step"].tolist() == [STEPS_PER_EPOCH * e for e in range(1, EPOCHS + 1)]

    samples = sorted((run_dir / runs.SAMPLES_DIR).iterdir())
    assert [path.name for path in samples] == [f"epoch_{e:04d}.png" for e in range(EPOCHS + 1)]
    for path in samples:
        with Image.open(path) as image:
            image.load()

    # No temporary file or checkpoint without a marker is left, and one checkpoint is kept.
    leftovers = [path.name for path in run_dir.rglob(".*tmp*")]
    assert leftovers == []
    checkpoint_files = sorted(path.name for path in (run_dir / runs.CHECKPOINTS_DIR).iterdir())
    assert checkpoint_files == [
        f"ckpt-{TOTAL_STEPS}.data-00000-of-00001",
        f"ckpt-{TOTAL_STEPS}.index",
        f"ckpt-{TOTAL_STEPS}.json",
    ]

    # The optimizers took exactly one update per step: no step was applied twice.
    reader = tf.train.load_checkpoint(str(run_dir / runs.CHECKPOINTS_DIR / f"ckpt-{TOTAL_STEPS}"))
    for name in ("g_optimizer", "d_optimizer"):
        assert reader.get_tensor(f"{name}/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == TOTAL_STEPS
    assert reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE") == TOTAL_STEPS
    assert reader.get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE") == EPOCHS
    generator = load_generator_file(run_dir / runs.GENERATOR_FILE)
    assert generator.output_shape == (None, 28, 28, 1)


def write_report(report: list[dict]) -> None:
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    summary = {
        "kills": len(report),
        "resumes_succeeded": len(report),
        "checkpoint_every_steps": CHECKPOINT_EVERY,
        "steps_lost_max": max(entry["steps_lost"] for entry in report),
        "steps_lost_total": sum(entry["steps_lost"] for entry in report),
        "points": report,
    }
    (REPORT_DIR / "kills.json").write_text(json.dumps(summary, indent=2))
