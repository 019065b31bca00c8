"""The run folder: create, read status, lock, list, launch a detached trainer, stop it.

A run folder is the only channel between a trainer process and its readers
(the pages, the CLI, other tabs), so every reader here copes with a trainer
that is writing, has crashed, or was killed mid-write.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import io
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from gan import __version__, faults
from gan.cluster import require_chief_for_launch
from gan.config import ConfigError, TrainConfig
from gan.errors import InputError, RunLockedError

RUNS_DIR_ENV = "GAN_RUNS_DIR"
DEFAULT_RUNS_DIR = "runs"

CONFIG_FILE = "config.json"
STATUS_FILE = "status.json"
METRICS_FILE = "metrics.csv"
EPOCHS_FILE = "epochs.csv"
LOG_FILE = "train.log"
LOCK_FILE = "train.lock"
LAUNCH_LOCK_FILE = "launch.lock"
GENERATOR_FILE = "generator.keras"
BEST_GENERATOR_FILE = "generator_best.keras"
BEST_FILE = "best.json"
ALERTS_FILE = "alerts.csv"
SAMPLES_DIR = "samples"
CHECKPOINTS_DIR = "checkpoints"

METRICS_COLUMNS = ("step", "epoch", "d_loss", "g_loss", "d_real", "d_fake", "wall_time")
# The columns that every epochs.csv has, including those written before the quality metrics existed.
EPOCHS_REQUIRED_COLUMNS = (
    "epoch",
    "step",
    "seconds",
    "images_per_second",
    "d_loss",
    "g_loss",
    "d_real",
    "d_fake",
    "wall_time",
)
# gan.metrics scores of the generated digits, each followed by its real-data floor where
# one is written; empty cells on epochs without an evaluation.
EPOCHS_QUALITY_COLUMNS = (
    "frechet_distance",
    "frechet_floor",
    "kid",
    "kid_std_error",
    "kid_floor",
    "class_entropy_bits",
    "class_entropy_floor",
    "max_class_deviation",
    "confidence",
    "confidence_floor",
    "label_accuracy",
    "diversity",
    "diversity_floor",
    *(f"share_{digit}" for digit in range(10)),
)
EPOCHS_COLUMNS = EPOCHS_REQUIRED_COLUMNS + EPOCHS_QUALITY_COLUMNS
ALERTS_COLUMNS = ("step", "epoch", "kind", "message", "wall_time")
ALERT_KINDS = ("diverged", "discriminator_wins", "mode_collapse")

# States written by the trainer (and "starting" by the launcher); "crashed" is
# derived by readers from a live state whose trainer is gone.
LIVE_STATES = ("starting", "running", "stopping")
RESUMABLE_STATES = ("stopped", "crashed", "failed", "diverged")

# A trainer writes its heartbeat every few seconds; one this old means the
# trainer hangs or its machine is gone.
STALE_HEARTBEAT_SECONDS = 300.0
# How long a launched process may take to import TensorFlow and take the lock.
STARTING_GRACE_SECONDS = 120.0


class RunError(InputError):
    """A run folder that does not exist, is not a run, or is in the wrong state."""


@dataclass(frozen=True)
class RunInfo:
    """A row of the runs table."""

    name: str
    path: Path
    state: str
    epoch: int
    epochs: int
    step: int
    total_steps: int
    images_per_second: float | None
    eta_seconds: float | None
    heartbeat: float | None
    model: str
    data: str
    precision: str
    jit_compile: bool
    last_error: str | None
    # Damaged config.json or status.json values that the fields above replace with defaults.
    warnings: tuple[str, ...] = ()


def runs_root(runs_dir: str | Path | None = None) -> Path:
    """Return the runs root: the argument, else ``$GAN_RUNS_DIR``, else ``runs/``."""
    return Path(runs_dir or os.environ.get(RUNS_DIR_ENV) or DEFAULT_RUNS_DIR)


# Atomic files -------------------------------------------------------------

_temporary_numbers = itertools.count()


def write_atomic(path: Path, data: bytes | str, durable: bool = True) -> None:
    """Write a file so that readers see the old or the new content, never a part.

    ``durable`` also flushes the content to disk before the rename, so that it
    survives a power loss. Status heartbeats skip that: the next heartbeat
    replaces them within seconds, and an fsync can block for seconds while
    other processes write heavily to the same disk.
    """
    path = Path(path)
    # Each call gets its own temporary file, because the trainer's SIGTERM handler
    # or another thread may write the same file while this call is still writing it.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{next(_temporary_numbers)}.tmp")
    mode = "wb" if isinstance(data, bytes) else "w"
    try:
        with open(temporary, mode) as handle:
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        faults.point(f"write:{path.name}")
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        error.filename = error.filename or str(path)
        raise
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def remove_temporary_files(run_dir: str | Path) -> list[Path]:
    """Delete the temporary files that killed writers left in a run folder; return them.

    Call it only while holding the run's lock: a live writer's temporary file
    is in use until its rename.
    """
    run_dir = Path(run_dir)
    found = [
        path
        for folder in (run_dir, run_dir / SAMPLES_DIR, run_dir / CHECKPOINTS_DIR)
        for path in folder.glob(".*.tmp*")
        if path.is_file()
    ]
    for path in found:
        path.unlink(missing_ok=True)
    return found


def read_json(path: Path) -> dict[str, Any] | None:
    """Return the JSON object in ``path``, or None when it is missing or unreadable."""
    try:
        value = json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


# Creating and reading a run ------------------------------------------------


def create_run(run_dir: str | Path, config: TrainConfig) -> Path:
    """Create a new run folder with its ``config.json``; reject an existing run."""
    run_dir = Path(run_dir)
    config.validate()
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        run_dir.mkdir()
    except FileExistsError:
        if (run_dir / CONFIG_FILE).exists() or any(run_dir.iterdir()):
            raise RunError(
                f"run folder {run_dir} already exists; resume it with --resume or choose another name."
            ) from None
    # The config is linked into place, which fails if it exists: of two processes
    # that create the same run at the same moment, exactly one succeeds.
    temporary = run_dir / f".{CONFIG_FILE}.{os.getpid()}.{next(_temporary_numbers)}.tmp"
    write_atomic(temporary, json.dumps({"version": __version__, **config.to_dict()}, indent=2))
    try:
        os.link(temporary, run_dir / CONFIG_FILE)
    except FileExistsError:
        raise RunError(
            f"run folder {run_dir} was created by another process at the same moment; "
            "resume it with --resume or choose another name."
        ) from None
    finally:
        temporary.unlink(missing_ok=True)
    return run_dir


def rewrite_config(run_dir: str | Path, config: TrainConfig) -> None:
    """Replace a run's config.json with ``config``, keeping its version and its time of creation.

    The trainer calls this once, to record what a setting such as
    ``precision="auto"`` resolved to, so that every resume uses the same.
    The file's modification time is the run's creation time (see
    ``created_time``), so it is put back after the write.
    """
    path = Path(run_dir) / CONFIG_FILE
    config.validate()
    created = path.stat().st_mtime_ns
    version = (read_json(path) or {}).get("version", __version__)
    write_atomic(path, json.dumps({"version": version, **config.to_dict()}, indent=2))
    os.utime(path, ns=(created, created))


def load_config(run_dir: str | Path) -> TrainConfig:
    """Read a run's config.json; raise ConfigError naming the file when it is damaged.

    Every field must have its type, because the trainer and the generator
    build models from these values. Ranges are left to TrainConfig.validate,
    which also checks that a data path exists.
    """
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        raise RunError(
            f"{run_dir} is not a run folder: {CONFIG_FILE} not found. "
            "Create a run with `python -m gan train --run-dir RUN`."
        )
    fix = f"Correct {path} by hand, or train a new run in another folder."
    try:
        config = TrainConfig.load(path)
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is damaged: it contains bytes that are not UTF-8 text. {fix}") from None
    except ConfigError as error:
        raise ConfigError(f"{error} {fix}") from None
    wrong_type = _config_type_error(config)
    if wrong_type:
        raise ConfigError(f"{path}: {wrong_type} {fix}")
    return config


def _config_type_error(config: TrainConfig) -> str | None:
    """Return a message for the first field whose value has the wrong type, or None."""
    for field in fields(TrainConfig):
        value = getattr(config, field.name)
        annotation = str(field.type)
        if value is None and "None" in annotation:
            continue
        if annotation == "bool":
            valid, kind = isinstance(value, bool), "true or false"
        elif "float" in annotation:
            valid, kind = _is_number(value), "a number"
        elif "int" in annotation:
            valid, kind = _is_number(value) and isinstance(value, int), "a whole number"
        else:
            valid, kind = isinstance(value, str), "a string"
        if not valid:
            return f"{field.name} must be {kind}, got {value!r}."
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_run(path: Path) -> bool:
    return (Path(path) / CONFIG_FILE).is_file()


def read_status(run_dir: str | Path) -> dict[str, Any]:
    """Return the run's status with ``state`` resolved: a live state whose trainer is gone is ``crashed``.

    A status.json that exists but does not parse was damaged outside the
    trainer, whose writes are atomic. The run then reads as ``crashed``, or
    ``running`` while a trainer holds its lock, so that it can be resumed
    from its checkpoints rather than started over.
    """
    run_dir = Path(run_dir)
    path = run_dir / STATUS_FILE
    status = read_json(path)
    if status is None and path.exists():
        state = "running" if _lock_held(run_dir) else "crashed"
        return {"state": state, "last_error": f"{path} is unreadable; resume the run to rewrite it."}
    status = status or {"state": "new"}
    state = status.get("state")
    if state in LIVE_STATES and not _trainer_alive(run_dir, status):
        status = {**status, "recorded_state": state, "state": "crashed"}
    return status


def _trainer_alive(run_dir: Path, status: dict[str, Any]) -> bool:
    now = time.time()
    # A heartbeat that is not a number was written outside the trainer; it counts as stale.
    heartbeat = status.get("heartbeat")
    heartbeat = heartbeat if _is_number(heartbeat) else 0.0
    if status.get("state") == "starting":
        # The launcher wrote this before the trainer took the lock.
        if _lock_held(run_dir):
            return True
        if now - heartbeat > STARTING_GRACE_SECONDS:
            return False
        return status.get("pid") is None or _pid_alive(status.get("pid"))
    if not _lock_held(run_dir):
        return False
    return now - heartbeat < STALE_HEARTBEAT_SECONDS


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # kill(0) succeeds on a zombie too, so /proc is read where it exists.
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError):
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def process_alive(pid: Any) -> bool:
    """Tell whether ``pid`` is a positive int naming a process that exists and is not a zombie."""
    return _pid_alive(pid)


# Locks --------------------------------------------------------------------


def _lock_held(run_dir: Path) -> bool:
    """Tell whether a trainer holds the run's lock, by trying it for an instant."""
    path = run_dir / LOCK_FILE
    try:
        handle = open(path, "r+")
    except FileNotFoundError:
        return False  # no trainer yet, or the run was deleted while it was read
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EAGAIN, errno.EACCES):
                return True
            raise
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


@contextlib.contextmanager
def trainer_lock(run_dir: str | Path, wait_seconds: float = 3.0) -> Iterator[None]:
    """Hold the run's OS file lock while training; raise RunLockedError if another trainer has it.

    The lock is released by the OS when the process dies, however it dies.
    Readers probe it for an instant, so a busy lock is retried for
    ``wait_seconds`` before it counts as held by another trainer.
    """
    path = Path(run_dir) / LOCK_FILE
    handle = open(path, "a+")
    deadline = time.monotonic() + wait_seconds
    try:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as error:
                if error.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() > deadline:
                    owner = (read_json(Path(run_dir) / STATUS_FILE) or {}).get("pid", "unknown")
                    raise RunLockedError(
                        f"run {run_dir} is already being trained (pid {owner}); "
                        f"stop it first with `python -m gan stop --run-dir {run_dir}`."
                    ) from None
                time.sleep(0.1)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path``, waiting for other holders; serialises processes and sessions."""
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# Listing ------------------------------------------------------------------


def run_info(run_dir: str | Path) -> RunInfo:
    """Summarise a run for lists; damaged values read as defaults and are listed in ``warnings``."""
    run_dir = Path(run_dir)
    status = read_status(run_dir)
    warnings: list[str] = []
    status_path = run_dir / STATUS_FILE
    if status_path.exists() and read_json(status_path) is None:
        warnings.append(str(status["last_error"]))
    try:
        config = load_config(run_dir).to_dict()
    except InputError as error:
        warnings.append(str(error))
        config = read_json(run_dir / CONFIG_FILE) or {}

    def whole_number(name: str, source: dict[str, Any], file_name: str) -> int | None:
        value = source.get(name)
        if value is None and name not in source:
            return None
        if _is_number(value) and math.isfinite(value):
            return int(value)
        warnings.append(
            f"{run_dir / file_name}: {name} is {value!r}, not a whole number, so it shows as 0 "
            "until the trainer writes the file again."
        )
        return None

    def number_or_none(name: str) -> float | None:
        value = status.get(name)
        return float(value) if _is_number(value) and math.isfinite(value) else None

    epochs = whole_number("epochs", status, STATUS_FILE)
    if epochs is None:
        epochs = whole_number("epochs", config, CONFIG_FILE)
    state = status.get("state", "new")
    last_error = status.get("last_error")
    return RunInfo(
        name=run_dir.name,
        path=run_dir,
        state=state if isinstance(state, str) else str(state),
        epoch=whole_number("epoch", status, STATUS_FILE) or 0,
        epochs=epochs or 0,
        step=whole_number("step", status, STATUS_FILE) or 0,
        total_steps=whole_number("total_steps", status, STATUS_FILE) or 0,
        images_per_second=number_or_none("images_per_second"),
        eta_seconds=number_or_none("eta_seconds"),
        heartbeat=number_or_none("heartbeat"),
        model=str(config.get("model", "")),
        data=str(config.get("data", "")),
        precision=str(config.get("precision", "")),
        jit_compile=config.get("jit_compile") is True,
        last_error=None if last_error is None else str(last_error),
        warnings=tuple(warnings),
    )


def list_runs(runs_dir: str | Path | None = None) -> list[RunInfo]:
    """List the runs under the runs root, newest first; a missing root has no runs."""
    root = runs_root(runs_dir)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        if not (path.is_dir() and is_run(path)):
            continue
        info = run_info(path)
        created = created_time(path)
        if created is not None:
            found.append((created, info))
    return [info for _, info in sorted(found, key=lambda pair: pair[0], reverse=True)]


def created_time(run_dir: str | Path) -> float | None:
    """Return the modification time of a run's config.json, or None once the run has been deleted.

    Demo mode's pruning can delete a run while another session lists it.
    """
    try:
        return (Path(run_dir) / CONFIG_FILE).stat().st_mtime
    except FileNotFoundError:
        return None


# Launching and stopping ----------------------------------------------------


def launch(
    run_dir: str | Path,
    *,
    resume: bool = False,
) -> int:
    """Start ``python -m gan train --run-dir RUN`` detached and return its pid at once.

    The trainer runs in a new session with stdout and stderr appended to
    ``train.log``, so it outlives the page or shell that started it. A run that
    is already starting, running or stopping is rejected with RunError. A
    ``multi_worker`` run starts only as the chief of this process's
    ``TF_CONFIG``; ClusterConfigError is raised before any file is written.
    """
    run_dir = Path(run_dir)
    config = load_config(run_dir)
    require_chief_for_launch(config.strategy)
    with exclusive_lock(run_dir / LAUNCH_LOCK_FILE):
        status = read_status(run_dir)
        if status["state"] in LIVE_STATES:
            raise RunError(
                f"run {run_dir.name} is already {status['state']} (pid {status.get('pid')}); "
                "stop it before starting it again."
            )
        if resume and status["state"] == "finished":
            raise RunError(f"run {run_dir.name} has finished all its epochs; there is nothing to resume.")
        if not resume and status["state"] != "new":
            raise RunError(f"run {run_dir.name} has already started; resume it instead.")
        command = [sys.executable, "-m", "gan", "train", "--run-dir", str(run_dir)]
        if resume:
            command.append("--resume")
        env = dict(os.environ)
        # The child must import this same package, wherever the caller runs from.
        package_root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        # "starting" is written before the process exists, so no second launch
        # can slip in while the trainer imports TensorFlow.
        carried = _carried_status(status)
        write_status(run_dir, {**carried, "state": "starting", "pid": None})
        try:
            with open(run_dir / LOG_FILE, "ab") as log:
                process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env=env,
                    close_fds=True,
                )
        except OSError as error:
            write_status(run_dir, {**status, "state": status["state"], "last_error": str(error)})
            raise
        # Reap the trainer when it exits, so it does not linger as a zombie of a
        # long-lived parent such as the Streamlit server.
        threading.Thread(target=process.wait, name=f"reap-trainer-{process.pid}", daemon=True).start()
        # The trainer replaces this status once it runs; record its pid unless it already has.
        if (read_json(run_dir / STATUS_FILE) or {}).get("state") == "starting":
            write_status(run_dir, {**carried, "state": "starting", "pid": process.pid})
        return process.pid


def _carried_status(status: dict[str, Any]) -> dict[str, Any]:
    kept = ("epoch", "epochs", "step", "total_steps", "images_per_second")
    return {key: status[key] for key in kept if key in status}


def stop(run_dir: str | Path, wait_seconds: float = 0.0) -> dict[str, Any]:
    """Send SIGTERM to the run's trainer; it checkpoints after the current step and exits.

    With ``wait_seconds`` > 0, wait up to that long for the trainer to exit.
    Return the status read last. A run with no live trainer raises RunError.
    """
    run_dir = Path(run_dir)
    load_config(run_dir)
    status = read_status(run_dir)
    if status["state"] not in LIVE_STATES:
        detail = ""
        if (run_dir / STATUS_FILE).exists() and read_json(run_dir / STATUS_FILE) is None:
            detail = f" {status['last_error']}"
        raise RunError(
            f"run {run_dir.name} is not running (state: {status['state']}); nothing to stop.{detail}"
        )
    pid = status.get("pid")
    if not _pid_alive(pid):
        raise RunError(f"run {run_dir.name} has no live trainer process (pid {pid}).")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        status = read_status(run_dir)
        if status["state"] not in LIVE_STATES and not _lock_held(run_dir):
            break
        time.sleep(0.2)
    return read_status(run_dir)


def write_status(run_dir: Path, status: dict[str, Any]) -> None:
    status = {**status, "heartbeat": time.time()}
    write_atomic(Path(run_dir) / STATUS_FILE, json.dumps(status, indent=2), durable=False)


# CSV histories ------------------------------------------------------------


def append_rows(path: Path, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    """Append rows to a CSV history in one write, with a header when the file is new."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    new_file = not path.exists() or path.stat().st_size == 0
    if new_file:
        writer.writeheader()
    writer.writerows(rows)
    text = buffer.getvalue()
    try:
        with open(path, "a") as handle:
            if not new_file and not _ends_with_newline(path):
                # A crash left half a line; end it so the new rows parse on their own.
                handle.write("\n")
            if faults.armed():
                # A kill here leaves half the rows on disk, as a crash mid-write would.
                handle.write(text[: len(text) // 2])
                handle.flush()
                faults.point(f"append:{path.name}")
                text = text[len(text) // 2 :]
            handle.write(text)
            handle.flush()
    except OSError as error:
        # A failed write does not name its file; the trainer's message should.
        error.filename = error.filename or str(path)
        raise


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


def read_complete_lines(path: Path, offset: int = 0) -> tuple[str, int]:
    """Return the complete lines of ``path`` from byte ``offset`` and the offset after them.

    A last line without its newline is being written, or was cut by a crash,
    and is left for the next read.
    """
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except FileNotFoundError:
        return "", offset
    end = data.rfind(b"\n") + 1
    return data[:end].decode("utf-8", errors="replace"), offset + end


def history_columns(path: Path, standard: tuple[str, ...]) -> tuple[str, ...]:
    """Return the columns to append to a CSV history: its own header's, or ``standard`` for a new file.

    A run written before columns were added keeps its shorter header, so its
    new rows must follow that header. A header with a column outside
    ``standard`` is not trusted, and rows then follow ``standard``.
    """
    text, _ = read_complete_lines(path)
    header = text.partition("\n")[0].strip()
    if not header:
        return standard
    columns = tuple(header.split(","))
    return columns if set(columns) <= set(standard) else standard


def read_best(run_dir: str | Path) -> dict[str, Any] | None:
    """Return the run's best.json (epoch, step, frechet_distance, file), or None if missing or damaged."""
    best = read_json(Path(run_dir) / BEST_FILE)
    if best is None:
        return None
    epoch, step, distance = best.get("epoch"), best.get("step"), best.get("frechet_distance")
    valid = (
        isinstance(epoch, int)
        and not isinstance(epoch, bool)
        and isinstance(step, int)
        and not isinstance(step, bool)
        and _is_number(distance)
        and math.isfinite(distance)
        and best.get("file") == BEST_GENERATOR_FILE
    )
    return best if valid else None


def truncate_history(path: Path, column: str, last_value: int) -> None:
    """Drop rows whose ``column`` exceeds ``last_value``, and a partial last line.

    Resuming from a checkpoint at step S replays the steps after S, so rows
    written after S by the crashed trainer would otherwise appear twice.
    """
    text, _ = read_complete_lines(path)
    if not text:
        if path.exists() and path.stat().st_size > 0:
            # A crash cut the header line itself, so the next append must write a new header.
            write_atomic(path, "")
        return
    lines = text.splitlines(keepends=True)
    header = lines[0].rstrip("\n").split(",")
    if column not in header:
        return
    index = header.index(column)
    kept = [lines[0]]
    for line in lines[1:]:
        cells = line.rstrip("\n").split(",")
        with contextlib.suppress(ValueError, IndexError):
            if int(float(cells[index])) <= last_value:
                kept.append(line)
    write_atomic(path, "".join(kept))
