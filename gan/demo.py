"""Demo mode: limits for a dashboard that strangers use, such as a public deployment.

Demo mode is on when ``GAN_DEMO`` is set to 1 (or true, yes, on) or when the
page passes ``secret=True`` from the Streamlit secret ``demo = true``. This
module does not import Streamlit, so the page reads ``st.secrets`` and passes
the value in. Each limit has a default and an environment variable that
overrides it (``LIMIT_VARIABLES``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

from gan import runs
from gan.config import KERAS_DATASETS, TrainConfig
from gan.errors import InputError

DEMO_VARIABLE = "GAN_DEMO"
LIMIT_VARIABLES = {
    "max_epochs": "GAN_DEMO_MAX_EPOCHS",
    "max_images": "GAN_DEMO_MAX_IMAGES",
    "max_live_runs": "GAN_DEMO_MAX_LIVE_RUNS",
    "max_digits": "GAN_DEMO_MAX_DIGITS",
    "max_interpolation_steps": "GAN_DEMO_MAX_INTERPOLATION_STEPS",
    "max_width": "GAN_DEMO_MAX_WIDTH",
    "max_batch_size": "GAN_DEMO_MAX_BATCH_SIZE",
    "max_latent_dim": "GAN_DEMO_MAX_LATENT_DIM",
    "max_sample_count": "GAN_DEMO_MAX_SAMPLE_COUNT",
    "max_stored_runs": "GAN_DEMO_MAX_STORED_RUNS",
    "max_eval_samples": "GAN_DEMO_MAX_EVAL_SAMPLES",
}
_TRUE_WORDS = ("1", "true", "yes", "on")
_FALSE_WORDS = ("", "0", "false", "no", "off")
ADMISSION_LOCK_FILE = ".launch.lock"
# A trainer writes its final state (finished, stopped, failed) before its process exits.
# The process counts as live until it exits, for at most this many seconds after that write.
EXITING_SECONDS = 60.0


class DemoLimitError(InputError):
    """A request that demo mode rejects; the message states the limit.

    ``errors`` maps each config field over its limit to that field's message,
    and is empty for a limit that belongs to no field.
    """

    def __init__(self, message: str, errors: Mapping[str, str] | None = None):
        super().__init__(message)
        self.errors = dict(errors or {})


@dataclass(frozen=True)
class DemoLimits:
    """Upper bounds on what one request may ask for in demo mode."""

    max_epochs: int = 5
    # Also the dataset size: demo runs must set max_images, at most this many.
    max_images: int = 10_000
    # Runs starting, running or stopping at once, over all browser sessions.
    max_live_runs: int = 1
    max_digits: int = 256
    max_interpolation_steps: int = 32
    # Model and batch sizes bound a trainer's memory: width 64 with
    # batch 128 peaked at about 1 GB resident on a CPU, TensorFlow included.
    max_width: int = 64
    max_batch_size: int = 256
    max_latent_dim: int = 256
    max_sample_count: int = 100
    # Runs kept on disk; starting one more deletes the oldest runs that are not live.
    max_stored_runs: int = 10
    # Digits scored per quality evaluation: the default 2,000 takes seconds on a CPU.
    max_eval_samples: int = 2000

    def describe(self) -> list[str]:
        """Return one line per limit, for the notice on each page."""
        runs_word = "run" if self.max_live_runs == 1 else "runs"
        return [
            f"at most {self.max_epochs} epochs per run",
            f"at most {self.max_images:,} training images per run (max_images is required)",
            "data: " + " or ".join(KERAS_DATASETS) + " only",
            f"{self.max_live_runs} {runs_word} training at a time, across all visitors",
            f"at most {self.max_digits} digits per generated grid",
            f"at most {self.max_interpolation_steps} interpolation steps",
            f"width at most {self.max_width}, batch_size at most {self.max_batch_size}, "
            f"latent_dim at most {self.max_latent_dim}, sample_count at most {self.max_sample_count}, "
            f"eval_samples at most {self.max_eval_samples}",
            f"the newest {self.max_stored_runs} runs are kept; starting another deletes the oldest "
            "finished, stopped, failed or crashed ones",
        ]


def demo_enabled(secret: object = None, environ: Mapping[str, str] | None = None) -> bool:
    """Tell whether demo mode is on: ``GAN_DEMO`` set to a true word, or a true ``secret``."""
    environ = os.environ if environ is None else environ
    value = environ.get(DEMO_VARIABLE, "").strip().lower()
    if value not in _TRUE_WORDS + _FALSE_WORDS:
        raise InputError(f"{DEMO_VARIABLE} must be 1 or 0 (or true/false), got {value!r}.")
    return value in _TRUE_WORDS or _is_true(secret)


def _is_true(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in _TRUE_WORDS
    return value is True or value == 1


def load_limits(secret: object = None, environ: Mapping[str, str] | None = None) -> DemoLimits | None:
    """Return the demo limits with their environment overrides, or None when demo mode is off.

    Raises InputError for an override that is not a positive integer, so a
    misconfigured deployment fails visibly instead of running without limits.
    """
    environ = os.environ if environ is None else environ
    if not demo_enabled(secret, environ):
        return None
    values = {}
    for field in fields(DemoLimits):
        variable = LIMIT_VARIABLES[field.name]
        text = environ.get(variable, "").strip()
        if not text:
            continue
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value <= 0:
            raise InputError(f"{variable} must be a positive integer, got {text!r}.")
        values[field.name] = value
    return DemoLimits(**values)


def default_config(limits: DemoLimits | None) -> TrainConfig:
    """Return the TrainConfig defaults, with epochs and max_images brought within the demo limits."""
    config = TrainConfig()
    if limits is None:
        return config
    return replace(config, epochs=min(config.epochs, limits.max_epochs), max_images=limits.max_images)


# Checks -----------------------------------------------------------------------


def count_live_runs(runs_dir: str | Path | None) -> int:
    """Count the runs under the runs root that are starting, running or stopping, or whose trainer is exiting.

    A trainer's process outlives its last status write by the time
    TensorFlow takes to shut down, and counting only states would let a new
    trainer start beside it.
    """
    return sum(
        info.state in runs.LIVE_STATES or trainer_exiting(info.path) for info in runs.list_runs(runs_dir)
    )


def trainer_exiting(run_dir: Path) -> bool:
    """Tell whether the trainer that wrote a run's final state, less than EXITING_SECONDS ago, still runs.

    The process that reads this is never counted: tests and notebooks train in
    their own process, and a dashboard server never does.
    """
    status = runs.read_json(Path(run_dir) / runs.STATUS_FILE) or {}
    pid, heartbeat = status.get("pid"), status.get("heartbeat")
    if status.get("state") in runs.LIVE_STATES or not isinstance(heartbeat, (int, float)):
        return False
    if pid == os.getpid() or time.time() - heartbeat > EXITING_SECONDS:
        return False
    return runs.process_alive(pid)


def check_train_request(
    config: TrainConfig,
    runs_dir: str | Path | None,
    limits: DemoLimits | None = None,
) -> None:
    """Raise DemoLimitError when demo mode rejects starting (or resuming) a run of ``config``.

    ``limits`` defaults to ``load_limits()`` from the environment; with demo
    mode off nothing is checked. The message joins every exceeded config
    limit, each starting with its field's name as ConfigError messages do,
    and the error's ``errors`` maps each field to its own message.
    """
    limits = limits or load_limits()
    if limits is None:
        return
    errors = config_limit_errors(config.to_dict(), limits)
    if errors:
        raise DemoLimitError(" ".join(errors.values()), errors)
    live = count_live_runs(runs_dir)
    if live >= limits.max_live_runs:
        allowed = "1 run" if limits.max_live_runs == 1 else f"{limits.max_live_runs} runs"
        raise DemoLimitError(
            f"demo mode allows {allowed} training at a time, and {live} "
            f"{'is' if live == 1 else 'are'} already training; "
            "wait until one finishes or stop it, then start again."
        )


def config_limit_errors(values: Mapping[str, object], limits: DemoLimits) -> dict[str, str]:
    """Map each config field in ``values`` that exceeds a demo limit to its message.

    Every field is checked on its own, so a form can show all of them at
    once. A field missing from ``values`` is not checked, and neither is a
    value of the wrong type, which TrainConfig.validate reports.
    """
    errors: dict[str, str] = {}
    size_limits = {
        "epochs": limits.max_epochs,
        "max_images": limits.max_images,
        "width": limits.max_width,
        "batch_size": limits.max_batch_size,
        "latent_dim": limits.max_latent_dim,
        "sample_count": limits.max_sample_count,
        "eval_samples": limits.max_eval_samples,
    }
    if "max_images" in values and values["max_images"] is None:
        errors["max_images"] = (
            f"max_images is required in demo mode: enter a number of images from 1 to {limits.max_images}."
        )
    for name, limit in size_limits.items():
        value = values.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > limit:
            errors[name] = f"{name} must be at most {limit} in demo mode, got {value}."
    data = values.get("data")
    if "data" in values and data not in KERAS_DATASETS:
        errors["data"] = (
            f"data must be {' or '.join(KERAS_DATASETS)} in demo mode, got {data!r}; "
            "paths on the server are not available."
        )
    return errors


def prune_runs(runs_dir: str | Path | None, limits: DemoLimits, keep: Path | None = None) -> list[Path]:
    """Delete the oldest runs that are not live until one more run fits under ``max_stored_runs``.

    ``keep`` is never deleted (the run being resumed). Return the deleted folders.
    """
    found = runs.list_runs(runs_dir)  # newest first
    removable = [info.path for info in found if info.state not in runs.LIVE_STATES and info.path != keep]
    excess = len(found) + (0 if keep else 1) - limits.max_stored_runs
    deleted = []
    for path in reversed(removable):
        if excess <= 0:
            break
        shutil.rmtree(path, ignore_errors=True)
        deleted.append(path)
        excess -= 1
    return deleted


def check_generate_request(
    count: int,
    steps: int | None = None,
    limits: DemoLimits | None = None,
    *,
    count_name: str = "count",
    steps_name: str = "steps",
) -> None:
    """Raise DemoLimitError when demo mode rejects ``count`` digits or ``steps`` interpolation steps.

    ``limits`` defaults to ``load_limits()`` from the environment; with demo
    mode off nothing is checked. ``count_name`` and ``steps_name`` start the
    messages, so a page can name its own input labels.
    """
    limits = limits or load_limits()
    if limits is None:
        return
    if count > limits.max_digits:
        raise DemoLimitError(
            f"{count_name} must be at most {limits.max_digits} per grid in demo mode, got {count}."
        )
    if steps is not None and steps > limits.max_interpolation_steps:
        raise DemoLimitError(
            f"{steps_name} must be at most {limits.max_interpolation_steps} in demo mode, got {steps}."
        )


@contextlib.contextmanager
def admission_lock(runs_dir: str | Path | None) -> Iterator[None]:
    """Hold a lock on the runs root while a request is checked and its trainer launched.

    Without it, two sessions could both count no live run and both launch.
    ``runs.launch`` writes ``starting`` before it returns, so the next holder
    counts the new run.
    """
    root = runs.runs_root(runs_dir)
    root.mkdir(parents=True, exist_ok=True)
    with runs.exclusive_lock(root / ADMISSION_LOCK_FILE):
        yield
