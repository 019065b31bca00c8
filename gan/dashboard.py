"""Computations of the dashboard pages, outside the pages so that tests run them without Streamlit.

Run names and the Train form's values, the runs table, the shipped demo run
and pretrained generator, the generator sources of the Generate page and the
``python -m gan generate`` command equivalent to a page's settings.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import re
import shlex
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from gan import demo, names, runs
from gan.config import KERAS_DATASETS, ConfigError, TrainConfig
from gan.errors import InputError, format_value
from gan.generate import GenerationResult, GridRequest, grid_image

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
# Shipped with the repository; either may be absent in a checkout.
DEMO_RUN_DIR = REPOSITORY_ROOT / "assets" / "demo-run"
PRETRAINED_GENERATOR_NAME = "assets/pretrained/generator.keras"
PRETRAINED_GENERATOR = REPOSITORY_ROOT / PRETRAINED_GENERATOR_NAME

RUN_NAME_FIELD = "run_name"
MAX_RUN_NAME_LENGTH = names.MAX_NAME_LENGTH
_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")

# Values of the Generate page's ``run`` and ``checkpoint`` query parameters
# that name no run folder or checkpoint step. New runs may not take these
# names, so that a link names one generator.
PRETRAINED_QUERY_NAME = "pretrained"
SHIPPED_RUN_QUERY_NAME = "shipped-demo-run"
RESERVED_RUN_NAMES = (PRETRAINED_QUERY_NAME, SHIPPED_RUN_QUERY_NAME)
EXPORTED_CHECKPOINT = "exported"
BEST_CHECKPOINT = "best"

# Characters that Streamlit's Markdown would read as formatting; CommonMark
# lets a backslash escape any ASCII punctuation.
_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~$])")


class RunNameError(InputError):
    """A run name that cannot name a new folder under the runs root."""


# Shipped assets and the runs list ---------------------------------------------


def shipped_demo_run() -> Path | None:
    """Return the shipped demo run folder, or None when this checkout has none."""
    return DEMO_RUN_DIR if runs.is_run(DEMO_RUN_DIR) else None


def pretrained_generator() -> Path | None:
    """Return the shipped pretrained generator file, or None when this checkout has none."""
    return PRETRAINED_GENERATOR if PRETRAINED_GENERATOR.is_file() else None


def is_read_only(run_dir: str | Path) -> bool:
    """Tell whether a run is the shipped demo run, which the pages never start or stop."""
    return Path(run_dir).resolve() == DEMO_RUN_DIR.resolve()


def contained_runs(runs_dir: str | Path | None) -> list[runs.RunInfo]:
    """List the run folders inside the runs root, newest first, skipping any that resolve outside it.

    A symbolic link in the runs root that points elsewhere is not followed,
    so the pages read and write only under the root. ``python -m gan list``
    lists such links, because there the paths are the shell user's own.
    """
    root = runs.runs_root(runs_dir)
    try:
        resolved_root = root.resolve()
        entries = [path for path in root.iterdir() if path.is_dir()] if root.is_dir() else []
    except OSError:
        return []
    inside = [
        path
        for path in entries
        if not path.is_symlink() and path.resolve().is_relative_to(resolved_root) and runs.is_run(path)
    ]
    created = {path: runs.created_time(path) for path in inside}
    found = [runs.run_info(path) for path in inside if created[path] is not None]
    return sorted(found, key=lambda run: created[run.path], reverse=True)


def dashboard_runs(runs_dir: str | Path | None) -> list[runs.RunInfo]:
    """List the runs inside the runs root, newest first, then the shipped demo run if there is one."""
    listed = contained_runs(runs_dir)
    demo_run = shipped_demo_run()
    if demo_run is not None and not any(is_read_only(info.path) for info in listed):
        listed.append(runs.run_info(demo_run))
    return listed


def check_runs_folder(text: str | None) -> Path:
    """Return the runs root that the sidebar's "Runs folder" input names; raise InputError for a bad one.

    An empty input means the default root. A folder that does not exist yet
    is accepted, because starting the first run creates it.
    """
    if not text or not text.strip():
        return runs.runs_root()
    control = names.control_character(text)
    if control:
        raise InputError(
            f"Runs folder {format_value(text)} contains the control character {control}; "
            "enter a folder path without it."
        )
    too_long = names.long_component(text)
    if too_long is not None:
        raise InputError(
            f"Runs folder {format_value(text)} has a name of more than {names.MAX_COMPONENT_BYTES} bytes; "
            "enter a shorter folder path."
        )
    path = Path(text).expanduser()
    try:
        is_file = path.exists() and not path.is_dir()
    except OSError as error:
        raise InputError(f"Runs folder {format_value(text)} cannot be read ({error.strerror}).") from None
    if is_file:
        raise InputError(f"Runs folder {format_value(text)} is a file, not a folder; enter a folder path.")
    return path


def run_label(info: runs.RunInfo) -> str:
    """Return the name shown for a run in lists: its folder name, marked when it is the shipped one."""
    return f"{info.name} (shipped)" if is_read_only(info.path) else info.name


def escape_markdown(text: object) -> str:
    """Backslash-escape Markdown punctuation, so that a Streamlit message shows ``text`` as typed.

    Messages that contain user input, paths or exception text pass through
    this: a backslash or an underscore in them would otherwise vanish or
    turn into formatting.
    """
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", str(text))


def format_duration(seconds: float | None) -> str:
    """Format seconds as 1h02m or 3m05s; an unknown duration is an empty string."""
    if seconds is None or not math.isfinite(seconds):
        return ""
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def runs_frame(infos: Sequence[runs.RunInfo]) -> pd.DataFrame:
    """Build the runs table: one row per run with its state, progress, speed, ETA, model and data."""
    rows = []
    for info in infos:
        live = info.state in runs.LIVE_STATES
        rows.append(
            {
                "run": run_label(info),
                "state": info.state,
                "epoch": f"{info.epoch}/{info.epochs}",
                "step": f"{info.step}/{info.total_steps}" if info.total_steps else "",
                "images/s": f"{info.images_per_second:,.0f}" if info.images_per_second else "",
                "ETA": format_duration(info.eta_seconds) if live else "",
                "model": info.model,
                "data": info.data,
                "precision": info.precision,
                "jit_compile": "on" if info.jit_compile else "off",
            }
        )
    columns = ["run", "state", "epoch", "step", "images/s", "ETA", "model", "data"]
    columns += ["precision", "jit_compile"]
    return pd.DataFrame(rows, columns=columns)


def run_devices_text(name: str, status: Mapping[str, Any]) -> str:
    """Describe the devices that a run's trainer recorded in status.json, for the Train page.

    For a status.json without the ``devices`` list (a run not started yet, or
    trained by a version that did not record it), the sentence states that the list is missing.
    """
    listed = status.get("devices")
    if not isinstance(listed, list) or not listed:
        return (
            f"Run {name}: its status.json lists no devices. The trainer records them when it starts; "
            "runs trained before the list existed have none."
        )
    text = f"Run {name}: its trainer's TensorFlow saw {', '.join(map(str, listed))}."
    replicas = status.get("replica_devices")
    count = status.get("replicas")
    if isinstance(replicas, list) and replicas:
        used = ", ".join(map(str, replicas))
        if isinstance(count, int) and count > len(replicas):
            # A multi-worker chief lists its own devices; the other workers hold the other replicas.
            text += f" Its strategy has {count} replicas over all workers; the chief's used {used}."
        else:
            text += f" Its strategy's {len(replicas)} replica(s) used {used}."
    return text


def progress_fraction(step: int, total_steps: int) -> float:
    """Return step / total_steps clipped to [0, 1]; 0 while the total is unknown."""
    if total_steps <= 0:
        return 0.0
    return min(max(step / total_steps, 0.0), 1.0)


def log_tail(path: str | Path, max_lines: int = 40, max_bytes: int = 64 * 1024) -> str:
    """Return the last ``max_lines`` lines of a log file, reading at most its last ``max_bytes``."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except FileNotFoundError:
        return ""
    lines = data.decode("utf-8", errors="replace").splitlines()
    if size > max_bytes and lines:
        lines = lines[1:]  # the first line read is probably cut
    return "\n".join(lines[-max_lines:])


# Run names and the Train form ---------------------------------------------------


def default_run_name(runs_dir: str | Path | None, now: float | None = None) -> str:
    """Return ``run-YYYYMMDD-HHMMSS`` for now, with a -2, -3, ... suffix if that folder exists."""
    root = runs.runs_root(runs_dir)
    base = time.strftime("run-%Y%m%d-%H%M%S", time.localtime(now))
    name, number = base, 2
    while (root / name).exists():
        name, number = f"{base}-{number}", number + 1
    return name


def check_run_name(name: str, runs_dir: str | Path | None) -> Path:
    """Return the folder of a new run called ``name``; raise RunNameError for a bad or taken name.

    Surrounding spaces are dropped; tabs, newlines and other control
    characters are rejected like any character outside letters, digits,
    '.', '_' and '-'. The folder must resolve to a new entry inside the runs root.
    """
    name = name.strip(" ")
    if not name:
        raise RunNameError("run_name is empty; enter a name such as run-1.")
    if len(name) > MAX_RUN_NAME_LENGTH:
        raise RunNameError(
            f"run_name must be at most {MAX_RUN_NAME_LENGTH} characters, got {len(name)}; shorten it."
        )
    control = names.control_character(name)
    if control:
        raise RunNameError(
            f"run_name contains the control character {control}, got {format_value(name)}; "
            "use letters, digits, '.', '_' and '-'."
        )
    if "/" in name or "\\" in name:
        raise RunNameError(
            "run_name must be one folder name, without path separators: use letters, digits, "
            f"'.', '_' and '-', got {name!r}."
        )
    if ".." in name:
        raise RunNameError(f"run_name must not contain '..', got {name!r}; use single dots.")
    if not _RUN_NAME.match(name):
        raise RunNameError(
            f"run_name may contain only letters, digits, '.', '_' and '-', "
            f"and must start with a letter or digit, got {name!r}."
        )
    if name in RESERVED_RUN_NAMES:
        raise RunNameError(
            f"run_name {name!r} is reserved: Generate page links use it for a shipped generator; "
            "choose another name."
        )
    root = runs.runs_root(runs_dir)
    path = root / name
    # lexists: a dangling symbolic link of this name counts as taken.
    if os.path.lexists(path):
        raise RunNameError(f"run_name {name!r} already exists in {path.parent}; choose another name.")
    if not path.resolve().is_relative_to(root.resolve()):
        raise RunNameError(f"run_name {name!r} resolves outside the runs folder {root}; choose another name.")
    return path


def config_from_form(
    values: Mapping[str, Any], limits: demo.DemoLimits | None = None
) -> tuple[TrainConfig | None, dict[str, str]]:
    """Build a TrainConfig from the Train form's values and collect every field's error.

    Float fields arrive as text, so that 2e-4 can be typed; an empty
    ``max_images`` means every image, which demo mode (``limits``) rejects.
    Each field is checked on its own against the defaults, and so are a
    batch larger than ``max_images`` and every demo limit, so the form shows
    all independent errors at once. Returns the config (None when there are
    errors) and a map from field name to message.
    """
    errors: dict[str, str] = {}
    parsed: dict[str, Any] = {}
    for field in fields(TrainConfig):
        try:
            parsed[field.name] = _parse_field(field.name, str(field.type), values.get(field.name))
        except ConfigError as error:
            errors[field.name] = str(error)

    defaults = TrainConfig()
    for name, value in parsed.items():
        try:
            TrainConfig(**{**defaults.to_dict(), name: value}).validate()
        except ConfigError as error:
            errors.setdefault(name, str(error))
    if limits is not None and "max_images" in errors and parsed.get("max_images") is not None:
        # The config's own message suggests an empty field, which demo mode rejects.
        errors["max_images"] = (
            f"max_images must be a whole number from 1 to {limits.max_images} in demo mode, "
            f"got {parsed['max_images']!r}."
        )
    _check_batch_against_images(parsed, errors)
    if limits is not None:
        valid = {name: value for name, value in parsed.items() if name not in errors}
        for name, message in demo.config_limit_errors(valid, limits).items():
            errors.setdefault(name, message)
    if errors:
        return None, errors

    config = TrainConfig(**parsed)
    try:
        config.validate(num_images=config.max_images)
    except ConfigError as error:
        errors[error_field(str(error)) or "form"] = str(error)
        return None, errors
    return config, {}


def check_data_file(config: TrainConfig) -> None:
    """Load a data path once, so that a file of the wrong shape or dtype is rejected before a run exists.

    Raises DataError for a bad source and ConfigError for a batch larger than
    its images. Dataset names are left to the trainer, which may download them.
    """
    if config.data in KERAS_DATASETS:
        return
    from gan import data  # imports TensorFlow

    dataset = data.load_images(config.data, max_images=config.max_images)
    config.validate(num_images=len(dataset.images))


def _check_batch_against_images(parsed: Mapping[str, Any], errors: dict[str, str]) -> None:
    """Add the batch_size error when a valid batch is larger than a valid ``max_images``."""
    if "batch_size" in errors or "max_images" in errors or parsed.get("max_images") is None:
        return
    pair = {"batch_size": parsed["batch_size"], "max_images": parsed["max_images"]}
    try:
        TrainConfig(**{**TrainConfig().to_dict(), **pair}).validate(num_images=pair["max_images"])
    except ConfigError as error:
        errors["batch_size"] = str(error)


def _parse_field(name: str, annotation: str, value: Any) -> Any:
    if "float" in annotation and isinstance(value, str):
        text = value.strip()
        try:
            return float(text)
        except ValueError:
            default = getattr(TrainConfig(), name)
            raise ConfigError(
                f"{name} must be a number such as {default!r}, got {format_value(text)}."
            ) from None
    if name == "max_images" and value in ("", None):
        return None
    if isinstance(value, float) and "int" in annotation and value.is_integer():
        return int(value)
    if isinstance(value, str) and name != "data" and "int" in annotation:
        try:
            return int(value.strip())
        except ValueError:
            default = getattr(TrainConfig(), name) or 10000
            raise ConfigError(
                f"{name} must be an integer such as {default}, got {format_value(value)}."
            ) from None
    return value


def error_field(message: str, names: Sequence[str] | None = None) -> str | None:
    """Return the field that an error message starts with, or None.

    ConfigError, DemoLimitError and RunNameError messages start with the
    name of the field they are about, which is how the form places them.
    """
    names = names or [field.name for field in fields(TrainConfig)] + [RUN_NAME_FIELD]
    first = re.split(r"[\s:]", message.strip(), maxsplit=1)[0]
    return first if first in names else None


# Generator sources and the equivalent command ------------------------------------


@dataclass(frozen=True)
class GeneratorSource:
    """A generator the Generate page can load: a .keras file, or a checkpoint of a run."""

    label: str
    run_dir: Path | None = None
    file: Path | None = None
    checkpoint_step: int | None = None
    checkpoint_prefix: Path | None = None
    # The epoch of a run's generator_best.keras, the generator with the lowest Frechet distance.
    best_epoch: int | None = None

    def modified_time(self) -> float:
        """Return the modification time of the loaded file, so that a cache loads a rewritten file again."""
        path = self.file if self.file is not None else self.checkpoint_prefix.with_suffix(".index")
        try:
            return path.stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def load(self):
        """Load the generator; raise InputError when its files are gone or unreadable."""
        import tensorflow as tf

        from gan import generate

        try:
            if self.file is not None:
                return generate.load_generator_file(self.file)
            return generate.load_generator(self.run_dir, self.checkpoint_step)
        except (tf.errors.OpError, OSError, ValueError) as error:
            if isinstance(error, InputError):
                raise
            raise InputError(
                f"{self.label} could not be loaded ({type(error).__name__}: {error}); "
                "the trainer may have deleted it, so choose another checkpoint."
            ) from error

    def cli_arguments(self) -> list[str]:
        """Return the ``python -m gan generate`` options that load this same generator."""
        if self.run_dir is None or self.best_epoch is not None:
            return ["--generator", shell_path(self.file)]
        arguments = ["--run-dir", shell_path(self.run_dir)]
        if self.checkpoint_step is not None:
            arguments += ["--checkpoint", str(self.checkpoint_step)]
        return arguments


def shell_path(path: Path) -> str:
    """Return ``path`` relative to the working directory when it is inside it, else as it is."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def pretrained_source() -> GeneratorSource | None:
    path = pretrained_generator()
    return GeneratorSource("Pretrained (shipped)", file=path) if path else None


def run_generator_sources(run_dir: str | Path) -> list[GeneratorSource]:
    """List a run's loadable generators: its best generator, then its checkpoints newest first.

    The best generator (``generator_best.keras``) comes first when best.json
    describes it and the file exists. A run without checkpoints offers its
    generator.keras in their place.
    """
    from gan.checkpoints import list_checkpoints

    run_dir = Path(run_dir)
    found = [
        GeneratorSource(
            f"epoch {info.epoch}, step {info.step}",
            run_dir=run_dir,
            checkpoint_step=info.step,
            checkpoint_prefix=info.path,
        )
        for info in reversed(list_checkpoints(run_dir / runs.CHECKPOINTS_DIR))
    ]
    exported = run_dir / runs.GENERATOR_FILE
    if not found and exported.is_file():
        # load_generator falls back to this file when a run has no checkpoint.
        found.append(GeneratorSource(runs.GENERATOR_FILE, run_dir=run_dir, file=exported))
    best = best_source(run_dir)
    return [best, *found] if best is not None else found


def best_source(run_dir: str | Path) -> GeneratorSource | None:
    """Return the run's best generator as a source, or None without a valid best.json and its file."""
    run_dir = Path(run_dir)
    best = runs.read_best(run_dir)
    path = run_dir / runs.BEST_GENERATOR_FILE
    if best is None or not path.is_file():
        return None
    label = f"best: epoch {best['epoch']} (Frechet distance {best['frechet_distance']:.2f})"
    return GeneratorSource(label, run_dir=run_dir, file=path, best_epoch=best["epoch"])


def latest_source(sources: Sequence[GeneratorSource]) -> GeneratorSource:
    """Return the newest checkpoint (or generator.keras) of ``run_generator_sources``, skipping the best."""
    return next((source for source in sources if source.best_epoch is None), sources[0])


def run_query_name(run_dir: str | Path) -> str:
    """Return a run's ``run`` query value on the Generate page: its folder name, or a fixed one if shipped."""
    return SHIPPED_RUN_QUERY_NAME if is_read_only(run_dir) else Path(run_dir).name


def checkpoint_query_value(source: GeneratorSource) -> str:
    """Return the ``checkpoint`` query value of a source: its step, ``best``, or ``exported``."""
    if source.best_epoch is not None:
        return BEST_CHECKPOINT
    return EXPORTED_CHECKPOINT if source.checkpoint_step is None else str(source.checkpoint_step)


def has_generator(run_dir: str | Path) -> bool:
    """Tell whether a run has a checkpoint or an exported generator, without importing TensorFlow."""
    run_dir = Path(run_dir)
    if (run_dir / runs.GENERATOR_FILE).is_file():
        return True
    folder = run_dir / runs.CHECKPOINTS_DIR
    return folder.is_dir() and any(folder.glob("ckpt-*.json"))


def generate_command(
    source: GeneratorSource,
    request: GridRequest,
    output: str = "digits.png",
    *,
    interpolate_to: int | None = None,
    steps: int | None = None,
) -> str:
    """Return the ``python -m gan generate`` command that writes the same pixels as the page."""
    arguments = ["python", "-m", "gan", "generate", *source.cli_arguments(), "--seed", str(request.seed)]
    if interpolate_to is None:
        arguments += ["--count", str(request.count), "--columns", str(request.columns)]
    arguments += ["--latent-scale", repr(float(request.latent_scale))]
    if request.digit is not None:
        arguments += ["--digit", str(request.digit)]
    if interpolate_to is not None:
        arguments += ["--interpolate-to", str(interpolate_to), "--steps", str(steps)]
    arguments += ["--output", output]
    return shlex.join(arguments)


def query_number_error(key: str, text: str, low: float, high: float, *, integer: bool) -> str | None:
    """Return a warning for a URL query value that the number input bound to ``key`` cannot take, or None.

    Streamlit drops such a value without a word, and a value such as 1e999
    for an integer input makes it raise, so the page checks the URL first.
    """
    if integer:
        valid = re.fullmatch(r"\s*[+-]?\d{1,30}\s*", text) is not None and low <= int(text) <= high
        kind, low, high = "an integer", int(low), int(high)
    else:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        valid = math.isfinite(value) and low <= value <= high
        kind = "a number"
    if valid:
        return None
    return (
        f"The link sets {key} to {format_value(text)}, but it must be {kind} from {low} to {high}; "
        "the page uses the default instead."
    )


def display_scale(width: int, target: int = 640, max_scale: int = 8) -> int:
    """Return the whole-number enlargement that brings an image ``width`` pixels wide near ``target``."""
    return max(1, min(max_scale, target // max(width, 1)))


def interpolation_gif(images, seconds_per_frame: float = 0.12, scale: int = 4) -> bytes:
    """Animate an interpolation strip forth and back, so the loop has no jump, as a GIF."""
    from gan.generate import gif_bytes

    frames = list(images)
    return gif_bytes(frames + frames[-2:0:-1], seconds_per_frame=seconds_per_frame, scale=scale)


# Predicted classes and sample quality on the Generate page -------------------------------

# The shipped generator was trained on MNIST digits (assets/pretrained/README.md).
PRETRAINED_DATASET = "mnist"
# Written by `python -m gan evaluate --generator assets/pretrained/generator.keras --json`.
PRETRAINED_METRICS_NAME = "metrics.json"
PRETRAINED_METRICS_FILE = str(Path(PRETRAINED_GENERATOR_NAME).parent / PRETRAINED_METRICS_NAME)
# Text size of the captions under the digits of an annotated grid, in pixels.
CAPTION_FONT_SIZE = 11


def classifier_dataset(source: GeneratorSource) -> str | None:
    """Return the classifier dataset of a generator's training data, or None when no classifier fits it."""
    from gan import metrics

    if source.run_dir is None:
        return PRETRAINED_DATASET
    try:
        config = runs.load_config(source.run_dir)
    except InputError:
        return None
    return metrics.dataset_of_source(config.data)


_TENSORFLOW_IMPORT_LOCK = threading.Lock()
_tensorflow_ready = False


def import_tensorflow() -> None:
    """Import TensorFlow, then Keras, in one thread at a time; return once both are fully imported.

    Two threads that import them for the first time at once can both wait on each
    other's module locks, and Python's import system then returns to one of them a partially
    initialised module ("cannot import name ... from partially initialized module"). A
    Streamlit server runs each session's script and each timed fragment in its own
    thread, so the app calls this before any page runs.
    """
    global _tensorflow_ready
    with _TENSORFLOW_IMPORT_LOCK:
        if not _tensorflow_ready:
            for name in ("tensorflow", "keras"):
                importlib.import_module(name)
            _tensorflow_ready = True


def tensorflow_ready() -> bool:
    """Tell whether ``import_tensorflow`` has finished in this process."""
    return _tensorflow_ready


@dataclass(frozen=True)
class DigitPredictions:
    """The shipped classifier's verdict on each digit of a grid, in grid order."""

    classes: np.ndarray  # int64 (N,): the most probable class
    confidences: np.ndarray  # float64 (N,): its probability


def predict_digits(images: np.ndarray, dataset: str) -> DigitPredictions:
    """Classify uint8 digits (N, 28, 28) with the shipped classifier of ``dataset``."""
    from gan import classifier

    _, probabilities = classifier.classify(classifier.load_classifier(dataset), images)
    return DigitPredictions(probabilities.argmax(axis=1).astype(np.int64), probabilities.max(axis=1))


def confidence_order(confidences: np.ndarray) -> np.ndarray:
    """Return the indices that sort digits by confidence, highest first; ties keep grid order."""
    return np.argsort(-np.asarray(confidences, dtype=np.float64), kind="stable")


def reorder_result(result: GenerationResult, order: Sequence[int], columns: int) -> GenerationResult:
    """Return ``result`` with its digits, seeds and labels in ``order``, tiled again ``columns`` per row."""
    order = np.asarray(order, dtype=np.int64)
    images = result.images[order]
    labels = None if result.labels is None else np.asarray(result.labels)[order]
    seeds = [result.seeds[index] for index in order]
    return GenerationResult(images, seeds, labels, grid_image(images, columns))


def predictions_frame(
    seeds: Sequence[int], predictions: DigitPredictions, labels: np.ndarray | None = None
) -> pd.DataFrame:
    """Tabulate each digit's grid position, seed, predicted class and confidence, and its requested class."""
    frame = pd.DataFrame(
        {
            "position": np.arange(1, len(seeds) + 1),
            "seed": np.asarray(seeds, dtype=np.int64),
            "predicted class": predictions.classes,
            "confidence": predictions.confidences,
        }
    )
    if labels is not None:
        frame.insert(2, "requested class", np.asarray(labels, dtype=np.int64))
    return frame


def annotated_grid(
    images: np.ndarray, captions: Sequence[Sequence[str]], columns: int, scale: int = 3, padding: int = 4
) -> np.ndarray:
    """Tile digits enlarged ``scale`` times, each with its caption lines below it, for display only.

    A cell is as wide as the enlarged digit or its longest caption line,
    whichever is wider, so long seeds stay readable.
    """
    font = ImageFont.load_default(size=CAPTION_FONT_SIZE)
    measure = ImageDraw.Draw(Image.new("L", (1, 1)))
    lines = max((len(caption) for caption in captions), default=0)
    text_width = max(
        (measure.textlength(line, font=font) for caption in captions for line in caption), default=0
    )
    count, height, width = images.shape
    tile_width, tile_height = width * scale, height * scale
    cell_width = max(tile_width, math.ceil(text_width) + 4)
    line_height = CAPTION_FONT_SIZE + 3
    cell_height = tile_height + lines * line_height + 2
    columns = max(1, min(columns, count))
    rows = math.ceil(count / columns)
    picture = Image.new(
        "L", (columns * (cell_width + padding) + padding, rows * (cell_height + padding) + padding), 0
    )
    draw = ImageDraw.Draw(picture)
    for index, (image, caption) in enumerate(zip(images, captions, strict=True)):
        row, column = divmod(index, columns)
        left = padding + column * (cell_width + padding)
        top = padding + row * (cell_height + padding)
        digit = Image.fromarray(image, mode="L").resize((tile_width, tile_height), Image.NEAREST)
        picture.paste(digit, (left + (cell_width - tile_width) // 2, top))
        for number, line in enumerate(caption):
            draw.text((left + 2, top + tile_height + 2 + number * line_height), line, fill=255, font=font)
    return np.asarray(picture)


def digit_captions(
    seeds: Sequence[int], predictions: DigitPredictions | None = None
) -> list[tuple[str, ...]]:
    """Return the caption lines of each digit: its predicted class and confidence if given, and its seed."""
    captions = []
    for index, seed in enumerate(seeds):
        seed_line = f"seed {seed}"
        if predictions is None:
            captions.append((seed_line,))
        else:
            verdict = f"{predictions.classes[index]}: {predictions.confidences[index]:.2f}"
            captions.append((verdict, seed_line))
    return captions


def pretrained_metrics_path() -> Path:
    return PRETRAINED_GENERATOR.parent / PRETRAINED_METRICS_NAME


def read_quality_report(path: str | Path) -> dict[str, Any]:
    """Read the JSON that ``python -m gan evaluate --json`` prints; raise InputError for a bad file."""
    path = Path(path)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path} not found; write it with {pretrained_metrics_command()}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(
            f"{path} is not a readable JSON report ({type(error).__name__}); write it again with "
            f"{pretrained_metrics_command()}"
        ) from None
    scores = [report.get("generated"), report.get("floor")] if isinstance(report, dict) else []
    if len(scores) != 2 or not all(isinstance(part, dict) for part in scores):
        raise InputError(
            f"{path} lacks the 'generated' and 'floor' scores of a report; write it again with "
            f"{pretrained_metrics_command()}"
        )
    return report


def pretrained_metrics_command() -> str:
    return (
        f"python -m gan evaluate --generator {PRETRAINED_GENERATOR_NAME} --json > {PRETRAINED_METRICS_FILE}"
    )


def quality_report_frame(report: Mapping[str, Any]) -> pd.DataFrame:
    """Tabulate a report's main figures: metric, generated value and real-data floor, as formatted text.

    A metric whose value or floor is missing or not a number is left out.
    """
    from gan.metrics import REPORT_ROWS

    rows = []
    for label, name, number_format in REPORT_ROWS:
        value, floor = report["generated"].get(name), report["floor"].get(name)
        if not all(_is_finite_number(number) for number in (value, floor)):
            continue
        rows.append(
            {
                "metric": label,
                "generated": number_format.format(value),
                "real-data floor": number_format.format(floor),
            }
        )
    return pd.DataFrame(rows, columns=["metric", "generated", "real-data floor"])


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
