"""Run safety with real processes: a full disk, simultaneous launches, stale locks and shutdown.

Each trainer is a real ``python -m gan`` process on real MNIST digits. A full
disk is a file size limit (RLIMIT_FSIZE) on the trainer: a write past it
fails with EFBIG, as a write to a full disk fails with ENOSPC.
"""

import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from test_faults import resumed_from, trained_steps
from test_pages import FAST, messages, open_page, runs_dir, stop_trainer, submit_train_form, wait_for_state
from test_processes import TRAINER_TIMEOUT, Processes, make_env, train_flags

from gan import faults, runs
from gan.checkpoints import list_checkpoints

__all__ = ["runs_dir"]  # a fixture, imported for the AppTest sessions

SMALL = {
    "max_images": 320,
    "batch_size": 32,
    "epochs": 2,
    "width": 8,
    "latent_dim": 16,
    "sample_count": 16,
    "log_every_steps": 1,
    "checkpoint_every_steps": 4,
    "checkpoints_kept": 2,
    "eval_every_epochs": 0,  # the quality metrics add seconds per epoch
}
# Over the status, history, sample and log files of a small run; under its checkpoint data.
FILE_SIZE_LIMIT = 64 * 1024


@pytest.fixture
def processes(mnist_path, tmp_path):
    manager = Processes(make_env(mnist_path, tmp_path / "runs"), tmp_path)
    yield manager
    manager.kill_leftovers()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


def killed_run(processes: Processes, run_dir: Path, fault: str, settings: dict | None = None) -> int:
    """Start a new run in a trainer that dies by SIGKILL at the fault point ``fault``; return its pid."""
    processes.env[faults.FAULT_VARIABLE] = fault
    first = processes.start("train", "--run-dir", run_dir, *train_flags(settings or SMALL), name="first")
    processes.env.pop(faults.FAULT_VARIABLE)
    assert processes.wait(first) == -signal.SIGKILL, processes.output(first)
    return first.pid


@pytest.fixture(scope="module")
def killed_at_step_9(mnist_path, tmp_path_factory) -> tuple[Path, int]:
    """A SMALL run whose trainer died by SIGKILL after step 9, and that trainer's pid.

    Its complete checkpoints are those of steps 4 and 8. Tests take copies,
    so one killed trainer serves them all.
    """
    work_dir = tmp_path_factory.mktemp("killed")
    manager = Processes(make_env(mnist_path, work_dir / "runs"), work_dir)
    run_dir = work_dir / "runs" / "killed"
    try:
        pid = killed_run(manager, run_dir, "step:9:1")
    finally:
        manager.kill_leftovers()
    assert [info.step for info in list_checkpoints(run_dir / runs.CHECKPOINTS_DIR)] == [4, 8]
    assert trained_steps(run_dir) == 9
    return run_dir, pid


def copy_run(source: Path, run_dir: Path) -> Path:
    shutil.copytree(source, run_dir, symlinks=True)
    return run_dir


def run_with_limit(processes: Processes, run_dir: Path, limit: int) -> tuple[int, str]:
    """Resume ``run_dir`` in a trainer that cannot write a file over ``limit`` bytes; return code and output.

    The output goes through a pipe, which the limit does not apply to, so the
    trainer's last words are seen even when no file can take them.
    """

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = subprocess.run(
        [sys.executable, "-m", "gan", "train", "--run-dir", str(run_dir), "--resume"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=processes.work_dir,
        env=processes.env,
        preexec_fn=limit_file_size,
        timeout=TRAINER_TIMEOUT,
    )
    return result.returncode, result.stdout + result.stderr


# A full disk --------------------------------------------------------------------------------


def test_full_disk_keeps_checkpoint(processes, tmp_path, killed_at_step_9):
    run_dir = copy_run(killed_at_step_9[0], tmp_path / "runs" / "full")
    checkpoint_dir = run_dir / runs.CHECKPOINTS_DIR
    before = snapshot(checkpoint_dir)
    assert max(len(data) for data in before.values()) > FILE_SIZE_LIMIT

    # The resumed trainer cannot write its next checkpoint, at the end of epoch 1 (step 10).
    returncode, output = run_with_limit(processes, run_dir, FILE_SIZE_LIMIT)
    assert returncode == 1, output
    assert "Traceback" not in output
    error_line = next(line for line in output.splitlines() if line.startswith("error:"))
    assert "could not write checkpoint" in error_line, error_line
    assert "ckpt-10" in error_line, error_line
    assert "File too large" in error_line, error_line
    assert "checkpoint ckpt-8 is intact" in error_line, error_line
    assert "Free disk space" in error_line, error_line
    assert "resume" in error_line, error_line
    status = runs.read_status(run_dir)
    assert status["state"] == "failed"
    assert "could not write checkpoint" in status["last_error"]
    assert "could not write checkpoint" in (run_dir / runs.LOG_FILE).read_text()

    # The previous checkpoints are untouched and the failed one left nothing behind.
    assert snapshot(checkpoint_dir) == before
    assert trained_steps(run_dir) == 10
    assert list(run_dir.rglob(".*tmp*")) == []

    # Space is back: the run resumes from step 8 and finishes.
    final = processes.start("train", "--run-dir", run_dir, "--resume", name="final")
    assert processes.wait(final) == 0, processes.output(final)
    assert resumed_from(processes.output(final)).step == 8
    status = runs.read_status(run_dir)
    assert (status["state"], status["step"]) == ("finished", 20)
    assert [info.step for info in list_checkpoints(checkpoint_dir)] == [18, 20]


def test_full_disk_during_history_append_is_reported(processes, tmp_path):
    run_dir = tmp_path / "runs" / "full-history"
    # 100 steps per epoch and no checkpoint but the epoch ends'.
    settings = {**SMALL, "max_images": 3200, "epochs": 2, "checkpoint_every_steps": 1000}
    killed_run(processes, run_dir, "step:103:1", settings)
    checkpoint_dir = run_dir / runs.CHECKPOINTS_DIR
    before = snapshot(checkpoint_dir)
    # Room for about 20 more metrics.csv rows; the log and status files stay far smaller.
    limit = (run_dir / runs.METRICS_FILE).stat().st_size + 1500
    returncode, output = run_with_limit(processes, run_dir, limit)
    assert returncode == 1, output
    assert "Traceback" not in output
    error_line = next(line for line in output.splitlines() if line.startswith("error:"))
    assert f"could not write {run_dir / runs.METRICS_FILE}" in error_line, error_line
    assert "File too large" in error_line, error_line
    assert "resume the run" in error_line, error_line
    status = runs.read_status(run_dir)
    assert status["state"] == "failed"
    assert "File too large" in status["last_error"]
    assert snapshot(checkpoint_dir) == before

    final = processes.start("train", "--run-dir", run_dir, "--resume", name="final")
    assert processes.wait(final) == 0, processes.output(final)
    assert resumed_from(processes.output(final)).step == 100
    assert runs.read_status(run_dir)["state"] == "finished"
    steps = [int(line.split(",")[0]) for line in (run_dir / runs.METRICS_FILE).read_text().splitlines()[1:]]
    assert steps == list(range(1, 201))


# One trainer per run ------------------------------------------------------------------------


def trainer_starts(run_dir: Path) -> int:
    """Count the trainers that set up this run, from the log every trainer writes."""
    return (run_dir / runs.LOG_FILE).read_text().count("strategy: ")


def test_simultaneous_create_starts_one(processes, tmp_path):
    run_dir = tmp_path / "runs" / "raced"
    args = ("train", "--run-dir", run_dir, "--detach", *train_flags(SMALL))
    first = processes.start(*args, name="first")
    second = processes.start(*args, name="second")
    codes = sorted([processes.wait(first), processes.wait(second)])
    assert codes == [0, 2], [processes.output(first), processes.output(second)]
    loser = first if first.returncode == 2 else second
    assert "error:" in processes.output(loser)
    assert "Traceback" not in processes.output(loser)

    status = runs.read_status(run_dir)
    processes.detached.append((status["pid"], run_dir))
    assert wait_for_state(run_dir, ("finished",), timeout=TRAINER_TIMEOUT) == "finished"
    assert trainer_starts(run_dir) == 1
    assert "already being trained" not in (run_dir / runs.LOG_FILE).read_text()


def test_stale_lock_and_two_resumes(processes, tmp_path, killed_at_step_9):
    source, pid = killed_at_step_9
    run_dir = copy_run(source, tmp_path / "runs" / "resumed")
    # The killed trainer's lock file stays with its pid, and its status.json still reads running.
    assert (run_dir / runs.LOCK_FILE).read_text().strip() == str(pid)
    assert runs.read_json(run_dir / runs.STATUS_FILE)["state"] == "running"
    assert runs.read_status(run_dir)["state"] == "crashed"
    log_before = trainer_starts(run_dir)

    # Two resumes at once: one trainer starts past the stale lock, the other launch is refused.
    args = ("train", "--run-dir", run_dir, "--resume", "--detach")
    one, two = processes.start(*args, name="one"), processes.start(*args, name="two")
    codes = sorted([processes.wait(one), processes.wait(two)])
    assert codes == [0, 2], [processes.output(one), processes.output(two)]
    loser = one if one.returncode == 2 else two
    assert "is already starting" in processes.output(loser), processes.output(loser)
    processes.detached.append((runs.read_status(run_dir)["pid"], run_dir))
    assert wait_for_state(run_dir, ("finished",), timeout=TRAINER_TIMEOUT) == "finished"
    assert trainer_starts(run_dir) - log_before == 1
    assert "already being trained" not in (run_dir / runs.LOG_FILE).read_text()


def run_together(sessions: list, action) -> None:
    """Run ``action`` on every AppTest session at the same moment, each in its own thread."""
    barrier = threading.Barrier(len(sessions))
    failures = []

    def act(at):
        try:
            barrier.wait(timeout=30)
            action(at)
        except Exception as error:  # collected, so the test fails with every session's error
            failures.append(error)

    threads = [threading.Thread(target=act, args=(at,)) for at in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == []


def test_two_app_sessions_launch_same_run_at_once(runs_dir):
    sessions = [open_page("pages/train.py") for _ in range(2)]
    run_together(sessions, lambda at: submit_train_form(at, "both-tabs", **{**FAST, "epochs": 50}))
    run_dir = runs_dir / "both-tabs"
    started = [at for at in sessions if any("Started run" in t for t in messages(at, "success"))]
    rejected = [at for at in sessions if messages(at, "error")]
    errors = [messages(at, "error") for at in sessions]
    assert len(started) == 1, errors
    assert len(rejected) == 1, errors
    assert any("both-tabs" in text for text in messages(rejected[0], "error"))

    wait_for_state(run_dir, ("running",))
    # Both tabs press Resume on the stopped run at the same moment.
    stop_trainer(run_dir)
    assert runs.read_status(run_dir)["state"] == "stopped"
    for at in sessions:
        at.run()
    run_together(sessions, lambda at: at.button(key="resume_run").click().run(timeout=60))
    resumed = [at for at in sessions if any("Resumed run both-tabs" in text for text in messages(at, "info"))]
    rejected = [at for at in sessions if any("is already" in text for text in messages(at, "error"))]
    errors = [messages(at, "error") for at in sessions]
    assert len(resumed) == 1, errors
    assert len(rejected) == 1, errors
    wait_for_state(run_dir, ("running", "finished"))
    stop_trainer(run_dir)
    assert trainer_starts(run_dir) == 2


# Shutdown -----------------------------------------------------------------------------------


def test_sigint_stops_after_step_with_checkpoint(processes, tmp_path):
    run_dir = tmp_path / "runs" / "interrupted"
    settings = {**SMALL, "epochs": 50, "checkpoint_every_steps": 1000}
    trainer = processes.start("train", "--run-dir", run_dir, *train_flags(settings), name="trainer")
    deadline = time.monotonic() + TRAINER_TIMEOUT
    while trained_steps(run_dir) < 15:
        assert trainer.poll() is None, processes.output(trainer)
        assert time.monotonic() < deadline, processes.output(trainer)
        time.sleep(0.05)
    trainer.send_signal(signal.SIGINT)
    assert processes.wait(trainer) == 0, processes.output(trainer)
    status = runs.read_status(run_dir)
    assert status["state"] == "stopped"
    # The checkpoint is of the step the trainer stopped after, not of the last epoch end.
    assert [info.step for info in list_checkpoints(run_dir / runs.CHECKPOINTS_DIR)][-1] == status["step"]
    assert status["step"] == trained_steps(run_dir) >= 15


PARENT_APP = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(sys.argv[1], default_timeout=60)
    at.run()
    at.switch_page("pages/train.py").run()
    at.text_input(key="train_run_name").set_value("orphan")
    for name, value in {settings!r}.items():
        at.number_input(key="train_" + name).set_value(value)
    next(button for button in at.button if button.label == "Start training").click().run()
    assert not at.exception, at.exception
    Path(sys.argv[2]).write_text("launched")
    sys.stdin.read()  # keeps the app process alive until the test kills it
    """
)


def test_trainer_outlives_its_app_process(runs_dir, mnist_path, tmp_path):
    settings = {**FAST, "epochs": 200}
    launched = tmp_path / "launched"
    output = tmp_path / "app.out"
    repository = Path(__file__).resolve().parents[1]
    with open(output, "wb") as handle:
        app = subprocess.Popen(
            [
                sys.executable,
                "-c",
                PARENT_APP.format(settings=settings),
                str(repository / "streamlit_app.py"),
                str(launched),
            ],
            stdin=subprocess.PIPE,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=make_env(mnist_path, runs_dir),
            cwd=repository,
        )
    try:
        deadline = time.monotonic() + TRAINER_TIMEOUT
        while not launched.exists():
            assert app.poll() is None, output.read_text()
            assert time.monotonic() < deadline, output.read_text()
            time.sleep(0.2)
        run_dir = runs_dir / "orphan"
        wait_for_state(run_dir, ("running",))
        trainer_pid = runs.read_status(run_dir)["pid"]
        # The app process dies without any chance to clean up.
        app.kill()
        app.wait(timeout=30)
        step = trained_steps(run_dir)
        while trained_steps(run_dir) <= step + 4:
            assert time.monotonic() < deadline, "the trainer stopped training after its app exited"
            time.sleep(0.2)
        assert runs.read_status(run_dir)["pid"] == trainer_pid
        os.kill(trainer_pid, 0)  # still alive

        # A new app session shows the run as running and stops it.
        at = open_page("pages/train.py", run=str(run_dir))
        assert any(metric.value == "running" for metric in at.metric)
        at.button(key="stop_run").click().run()
        assert wait_for_state(run_dir, ("stopped",), timeout=60) == "stopped"
    finally:
        if app.poll() is None:
            app.kill()
            app.wait(timeout=30)
        stop_trainer(runs_dir / "orphan")


# Broken checkpoints ------------------------------------------------------------------------


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for index in range(len(data) // 3, len(data) // 3 + 64):
        data[index] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = {
    "data truncated": ("data-00000-of-00001", _truncate),
    "data bytes flipped": ("data-00000-of-00001", _flip_bytes),
    "index truncated": ("index", _truncate),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_resume_falls_back_past_damaged_newest_checkpoint(processes, tmp_path, killed_at_step_9, damage):
    run_dir = copy_run(killed_at_step_9[0], tmp_path / "runs" / "damaged")
    checkpoint_dir = run_dir / runs.CHECKPOINTS_DIR
    suffix, spoil = DAMAGE[damage]
    spoil(checkpoint_dir / f"ckpt-8.{suffix}")

    resumed = processes.start("train", "--run-dir", run_dir, "--resume", name="resumed")
    assert processes.wait(resumed) == 0, processes.output(resumed)
    output = processes.output(resumed)
    assert "Traceback" not in output
    assert resumed_from(output).step == 4
    log = (run_dir / runs.LOG_FILE).read_text()
    assert "checkpoint ckpt-8 could not be restored" in log
    status = runs.read_status(run_dir)
    assert status["state"] == "finished"
    assert any("checkpoint ckpt-8 could not be restored" in warning for warning in status["warnings"])
    # The replayed step 8 rewrote the damaged checkpoint, so its .broken marker went with it.
    assert [info.step for info in list_checkpoints(checkpoint_dir)] == [18, 20]
    assert sorted(path.name for path in checkpoint_dir.iterdir() if "ckpt-8" in path.name) == []
