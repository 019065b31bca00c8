"""Tests for the run folder library: status, locks, CSV histories, atomic files, listing, checkpoints."""

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gan import runs
from gan.config import ConfigError, TrainConfig

# Script of a lock holder: it takes an exclusive flock on argv[1], prints "locked" and keeps the lock
# until its stdin closes.
LOCK_HOLDER = (
    "import fcntl, sys\n"
    "handle = open(sys.argv[1], 'a+')\n"
    "fcntl.flock(handle, fcntl.LOCK_EX)\n"
    "print('locked', flush=True)\n"
    "sys.stdin.read()\n"
)


def make_run(run_dir: Path) -> Path:
    return runs.create_run(run_dir, TrainConfig(epochs=2))


def write_status_file(run_dir: Path, **status) -> None:
    """Write status.json exactly as given, so a test controls the heartbeat."""
    (run_dir / runs.STATUS_FILE).write_text(json.dumps(status))


@pytest.fixture
def lock_holder():
    """Start a separate process that holds a run's train.lock, as a live trainer does."""
    holders = []

    def hold(run_dir: Path) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-c", LOCK_HOLDER, str(run_dir / runs.LOCK_FILE)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        holders.append(process)
        assert process.stdout.readline().strip() == "locked"
        return process

    yield hold
    for process in holders:
        process.stdin.close()
        process.wait(timeout=10)


def dead_pid() -> int:
    """Return the pid of a process that has exited and been reaped."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


# read_status -----------------------------------------------------------------


def test_read_status_without_status_file_is_new(tmp_path):
    run_dir = make_run(tmp_path / "run")

    assert runs.read_status(run_dir) == {"state": "new"}


def test_read_status_running_with_free_lock_is_crashed(tmp_path):
    run_dir = make_run(tmp_path / "run")
    (run_dir / runs.LOCK_FILE).touch()
    runs.write_status(run_dir, {"state": "running", "pid": dead_pid(), "step": 40})

    status = runs.read_status(run_dir)

    assert status["state"] == "crashed"
    assert status["recorded_state"] == "running"
    assert status["step"] == 40


def test_read_status_running_without_lock_file_is_crashed(tmp_path):
    run_dir = make_run(tmp_path / "run")
    runs.write_status(run_dir, {"state": "running", "pid": os.getpid()})

    assert runs.read_status(run_dir)["state"] == "crashed"


def test_read_status_stale_heartbeat_is_crashed(tmp_path, lock_holder):
    run_dir = make_run(tmp_path / "run")
    holder = lock_holder(run_dir)
    stale = time.time() - runs.STALE_HEARTBEAT_SECONDS - 10
    write_status_file(run_dir, state="running", pid=holder.pid, heartbeat=stale)

    status = runs.read_status(run_dir)

    assert status["state"] == "crashed"
    assert status["recorded_state"] == "running"


def test_read_status_live_trainer_is_running(tmp_path, lock_holder):
    run_dir = make_run(tmp_path / "run")
    holder = lock_holder(run_dir)
    runs.write_status(run_dir, {"state": "running", "pid": holder.pid})

    status = runs.read_status(run_dir)

    assert status["state"] == "running"
    assert "recorded_state" not in status


def test_read_status_stopping_live_trainer_stays_stopping(tmp_path, lock_holder):
    run_dir = make_run(tmp_path / "run")
    holder = lock_holder(run_dir)
    runs.write_status(run_dir, {"state": "stopping", "pid": holder.pid})

    assert runs.read_status(run_dir)["state"] == "stopping"


def test_read_status_starting_with_live_pid_is_starting(tmp_path):
    run_dir = make_run(tmp_path / "run")
    runs.write_status(run_dir, {"state": "starting", "pid": os.getpid()})

    assert runs.read_status(run_dir)["state"] == "starting"


def test_read_status_starting_with_dead_pid_is_crashed(tmp_path):
    run_dir = make_run(tmp_path / "run")
    runs.write_status(run_dir, {"state": "starting", "pid": dead_pid()})

    assert runs.read_status(run_dir)["state"] == "crashed"


def test_read_status_keeps_final_states(tmp_path):
    run_dir = make_run(tmp_path / "run")
    for state in ("stopped", "finished", "failed"):
        runs.write_status(run_dir, {"state": state, "pid": dead_pid()})

        assert runs.read_status(run_dir)["state"] == state


# CSV histories -----------------------------------------------------------------


def test_read_complete_lines_ignores_truncated_last_line(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_bytes(b"step,epoch\n10,1\n2")

    text, offset = runs.read_complete_lines(path)

    assert text == "step,epoch\n10,1\n"
    assert offset == len(b"step,epoch\n10,1\n")


def test_read_complete_lines_resumes_from_offset(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_bytes(b"step,epoch\n10,1\n2")
    _, offset = runs.read_complete_lines(path)

    with open(path, "ab") as handle:
        handle.write(b"0,1\n30,1\n")
    text, next_offset = runs.read_complete_lines(path, offset)

    assert text == "20,1\n30,1\n"
    assert next_offset == path.stat().st_size


def test_read_complete_lines_without_new_data(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_bytes(b"step,epoch\n10,1\n")
    size = path.stat().st_size

    assert runs.read_complete_lines(path, size) == ("", size)


def test_read_complete_lines_missing_file(tmp_path):
    assert runs.read_complete_lines(tmp_path / "absent.csv", 17) == ("", 17)


def test_append_rows_writes_header_once(tmp_path):
    path = tmp_path / "epochs.csv"
    columns = ("epoch", "step")

    runs.append_rows(path, columns, [{"epoch": 1, "step": 50}])
    runs.append_rows(path, columns, [{"epoch": 2, "step": 100}])

    assert path.read_text() == "epoch,step\n1,50\n2,100\n"


def test_append_rows_after_truncated_line_starts_new_line(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("step,epoch,d_loss\n10,1,0.5\n20,1,0.")

    runs.append_rows(path, ("step", "epoch", "d_loss"), [{"step": 30, "epoch": 1, "d_loss": 0.25}])
    lines = path.read_text().splitlines()

    assert lines[-1] == "30,1,0.25"
    assert lines[-2] == "20,1,0."
    assert path.read_text().endswith("\n")


def metrics_text(steps, partial: str = "") -> str:
    rows = "".join(f"{step},{(step - 1) // 50 + 1},0.5\n" for step in steps)
    return "step,epoch,d_loss\n" + rows + partial


def steps_in(path: Path) -> list[int]:
    return [int(row["step"]) for row in csv.DictReader(io.StringIO(path.read_text()))]


def test_truncate_history_drops_rows_after_step(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(metrics_text([10, 20, 30, 40, 50]))

    runs.truncate_history(path, "step", 30)

    assert steps_in(path) == [10, 20, 30]
    assert path.read_text().startswith("step,epoch,d_loss\n")


def test_truncate_history_drops_partial_last_line(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(metrics_text([10, 20], partial="30,1,0.4"))

    runs.truncate_history(path, "step", 100)

    assert path.read_text() == metrics_text([10, 20])


def test_truncate_history_by_epoch_column(tmp_path):
    path = tmp_path / "epochs.csv"
    runs.append_rows(path, runs.EPOCHS_COLUMNS, [{"epoch": epoch, "step": 50 * epoch} for epoch in (1, 2, 3)])

    runs.truncate_history(path, "epoch", 1)

    epochs = [row["epoch"] for row in csv.DictReader(io.StringIO(path.read_text()))]
    assert epochs == ["1"]


def test_truncate_history_to_zero_keeps_header(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(metrics_text([10, 20]))

    runs.truncate_history(path, "step", 0)

    assert path.read_text() == "step,epoch,d_loss\n"


def test_truncate_history_missing_file(tmp_path):
    path = tmp_path / "metrics.csv"

    runs.truncate_history(path, "step", 10)

    assert not path.exists()


def test_truncate_history_then_append_continues(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(metrics_text([10, 20, 30], partial="40,1,0."))

    runs.truncate_history(path, "step", 20)
    runs.append_rows(path, ("step", "epoch", "d_loss"), [{"step": 30, "epoch": 1, "d_loss": 0.5}])

    assert steps_in(path) == [10, 20, 30]


# write_atomic ---------------------------------------------------------------------


def test_write_atomic_writes_text_and_bytes(tmp_path):
    path = tmp_path / "status.json"

    runs.write_atomic(path, '{"state": "running"}')
    assert path.read_text() == '{"state": "running"}'

    runs.write_atomic(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert os.listdir(tmp_path) == ["status.json"]


def test_write_atomic_failure_keeps_old_content(tmp_path, monkeypatch):
    path = tmp_path / "status.json"
    runs.write_atomic(path, '{"state": "running"}')

    def failing_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space left"):
        runs.write_atomic(path, '{"state": "stopped"}')

    assert path.read_text() == '{"state": "running"}'
    assert os.listdir(tmp_path) == ["status.json"]


def test_write_atomic_reentered_from_signal_handler(tmp_path, monkeypatch):
    """A signal handler that writes the same file mid-write, as the trainer's SIGTERM handler does."""
    path = tmp_path / "status.json"
    real_fsync = os.fsync
    signals_sent = []

    def write_stopping(signum, frame):
        runs.write_atomic(path, '{"state": "stopping"}')

    def fsync_then_signal(fd):
        real_fsync(fd)
        if not signals_sent:
            signals_sent.append(signal.SIGUSR1)
            os.kill(os.getpid(), signal.SIGUSR1)

    previous_handler = signal.signal(signal.SIGUSR1, write_stopping)
    monkeypatch.setattr(os, "fsync", fsync_then_signal)
    try:
        runs.write_atomic(path, '{"state": "running", "step": 120}')
    finally:
        signal.signal(signal.SIGUSR1, previous_handler)

    assert signals_sent == [signal.SIGUSR1]
    # The outer write finishes last, so its content wins.
    assert json.loads(path.read_text()) == {"state": "running", "step": 120}
    assert os.listdir(tmp_path) == ["status.json"]


# list_runs and create_run --------------------------------------------------------


def test_list_runs_newest_first(tmp_path):
    root = tmp_path / "runs"
    now = time.time()
    for age, name in [(300, "oldest"), (100, "newest"), (200, "middle")]:
        run_dir = make_run(root / name)
        config_time = now - age
        os.utime(run_dir / runs.CONFIG_FILE, (config_time, config_time))
    (root / "notes").mkdir()
    (root / "notes" / "todo.txt").write_text("not a run")
    (root / "README.txt").write_text("not a run either")

    found = runs.list_runs(root)

    assert [info.name for info in found] == ["newest", "middle", "oldest"]
    assert [info.state for info in found] == ["new", "new", "new"]
    assert [info.epochs for info in found] == [2, 2, 2]


def test_list_runs_reads_root_from_environment(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    make_run(root / "only")
    monkeypatch.setenv(runs.RUNS_DIR_ENV, str(root))

    assert [info.name for info in runs.list_runs()] == ["only"]


def test_list_runs_missing_root_is_empty(tmp_path):
    assert runs.list_runs(tmp_path / "absent") == []


def test_create_run_writes_config(tmp_path):
    run_dir = runs.create_run(tmp_path / "runs" / "first", TrainConfig(epochs=3, width=8))

    config = runs.load_config(run_dir)

    assert config.epochs == 3
    assert config.width == 8
    assert runs.is_run(run_dir)


def test_create_run_accepts_existing_empty_folder(tmp_path):
    run_dir = tmp_path / "empty"
    run_dir.mkdir()

    runs.create_run(run_dir, TrainConfig())

    assert runs.is_run(run_dir)


def test_create_run_rejects_non_empty_folder(tmp_path):
    run_dir = tmp_path / "occupied"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("keep me")

    with pytest.raises(runs.RunError, match="already exists"):
        runs.create_run(run_dir, TrainConfig())

    assert not (run_dir / runs.CONFIG_FILE).exists()
    assert (run_dir / "notes.txt").read_text() == "keep me"


def test_create_run_rejects_existing_run(tmp_path):
    run_dir = make_run(tmp_path / "run")
    original = (run_dir / runs.CONFIG_FILE).read_text()

    with pytest.raises(runs.RunError, match="--resume"):
        runs.create_run(run_dir, TrainConfig(epochs=9))

    assert (run_dir / runs.CONFIG_FILE).read_text() == original


def test_create_run_invalid_config_creates_nothing(tmp_path):
    run_dir = tmp_path / "runs" / "bad"

    with pytest.raises(ConfigError, match="epochs"):
        runs.create_run(run_dir, TrainConfig(epochs=0))

    assert not run_dir.exists()


# list_checkpoints -------------------------------------------------------------------


def test_list_checkpoints_skips_incomplete(tmp_path):
    import tensorflow as tf

    from gan import checkpoints

    directory = tmp_path / "checkpoints"
    value = tf.Variable(0, dtype=tf.int64)
    store = checkpoints.CheckpointStore(directory, tf.train.Checkpoint(value=value), max_to_keep=10)
    for step in (9, 10, 20, 30):
        value.assign(step)
        store.save(step=step, epoch=step // 10, num_classes=None)

    # A trainer killed between the TensorFlow files and the marker leaves no marker.
    (directory / "ckpt-20.json").unlink()
    # A marker whose JSON was cut short.
    (directory / "ckpt-30.json").write_text('{"step": 30, "ep')
    # An index file on its own, and a marker whose checkpoint files are gone.
    (directory / "ckpt-40.index").write_bytes(b"")
    (directory / "ckpt-50.json").write_text(json.dumps({"step": 50, "epoch": 5}))

    found = checkpoints.list_checkpoints(directory)

    assert [info.step for info in found] == [9, 10]
    assert [info.epoch for info in found] == [0, 1]
    assert [info.name for info in found] == ["ckpt-9", "ckpt-10"]

    value.assign(-1)
    restored, skipped = store.restore_latest()

    assert restored.step == 10
    assert skipped == []
    assert int(value.numpy()) == 10


def test_restore_latest_falls_back_past_corrupt(tmp_path):
    import tensorflow as tf

    from gan import checkpoints

    directory = tmp_path / "checkpoints"
    value = tf.Variable(0, dtype=tf.int64)
    store = checkpoints.CheckpointStore(directory, tf.train.Checkpoint(value=value), max_to_keep=10)
    for step in (10, 20):
        value.assign(step)
        store.save(step=step, epoch=1, num_classes=None)
    # The newest checkpoint's data file is cut short on disk, as by a failing disk.
    data_file = next(directory.glob("ckpt-20.data-*"))
    data_file.write_bytes(data_file.read_bytes()[:3])

    value.assign(-1)
    restored, skipped = store.restore_latest()

    assert restored.step == 10
    assert int(value.numpy()) == 10
    assert len(skipped) == 1
    assert skipped[0].startswith("checkpoint ckpt-20 could not be restored")
    assert (directory / "ckpt-20.json.broken").exists()
    assert [info.step for info in checkpoints.list_checkpoints(directory)] == [10]


def test_restore_latest_all_corrupt_raises(tmp_path):
    import tensorflow as tf

    from gan import checkpoints

    directory = tmp_path / "checkpoints"
    value = tf.Variable(0, dtype=tf.int64)
    store = checkpoints.CheckpointStore(directory, tf.train.Checkpoint(value=value), max_to_keep=10)
    store.save(step=10, epoch=1, num_classes=None)
    data_file = next(directory.glob("ckpt-10.data-*"))
    data_file.write_bytes(b"")

    with pytest.raises(
        checkpoints.CheckpointError, match=r"no checkpoint in .* could be restored: checkpoint ckpt-10"
    ):
        store.restore_latest()


def test_list_checkpoints_missing_folder(tmp_path):
    from gan import checkpoints

    assert checkpoints.list_checkpoints(tmp_path / "absent") == []


def test_read_status_damaged_file_is_crashed(tmp_path):
    run_dir = runs.create_run(tmp_path / "run", TrainConfig())
    (run_dir / runs.STATUS_FILE).write_text('{"state": "runn')

    status = runs.read_status(run_dir)

    assert status["state"] == "crashed"
    assert "status.json is unreadable" in status["last_error"]
    assert runs.run_info(run_dir).state == "crashed"
