"""TrainConfig: every hyperparameter and run setting of one training run.

The same field names are the CLI flags (``latent_dim`` is ``--latent-dim``), the
keys of a run's ``config.json`` and the labels of the Train page form.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from gan.errors import InputError, format_value

MODEL_KINDS = ("dcgan", "conditional")
STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
KERAS_DATASETS = ("mnist", "fashion_mnist")

# The largest seed: keras.utils.set_random_seed passes the seed to numpy's
# legacy generator, which takes 0 to 2**32 - 1.
MAX_SEED = 2**32 - 1

# Allowed range of each integer field. The upper bounds reject a typo such as
# an extra zero before a run starts that could never finish or fit in memory.
INT_RANGES = {
    "epochs": (1, 100_000),
    "batch_size": (1, 65_536),
    "latent_dim": (1, 4096),
    "width": (1, 1024),
    "sample_count": (1, 1024),
    "checkpoint_every_steps": (1, 10**9),
    "checkpoints_kept": (1, 10_000),
    "log_every_steps": (1, 10**9),
    "max_images": (1, 10**9),
    "seed": (0, MAX_SEED),
    "sample_seed": (0, MAX_SEED),
    "eval_every_epochs": (0, 100_000),
    # The real images that generated digits are compared with come from the
    # 10,000-image test split (gan.metrics.MAX_SAMPLES).
    "eval_samples": (2, 10_000),
    "alert_d_loss_steps": (1, 10**9),
}
# Adam learning rates above 1 make both networks diverge at once.
MAX_LEARNING_RATE = 1.0
MAX_CHECKPOINT_MINUTES = 7 * 24 * 60.0  # a week


GROUPS = {
    "data": "Data",
    "model": "Model",
    "optimisation": "Optimisation",
    "checkpoints": "Checkpoints and samples",
    "quality": "Quality metrics and alerts",
}


def _field(default: Any, group: str, help: str) -> Any:
    return dataclasses.field(default=default, metadata={"group": group, "help": help})


class ConfigError(InputError):
    """A TrainConfig field with an invalid value."""


@dataclass
class TrainConfig:
    """Hyperparameters and run settings of one run.

    The optimiser defaults are those of the DCGAN paper (Radford et al., 2015).
    Each field's metadata contains its form group and help text.
    """

    # Data
    data: str = _field(
        "mnist",
        "data",
        "Dataset: mnist, fashion_mnist, or a path to a Keras-layout .npz file, "
        "an IDX folder or a folder of PNG class folders.",
    )
    max_images: int | None = _field(
        None, "data", "Train on the first N images only; left unset, training uses every image."
    )

    # Model
    model: str = _field(
        "dcgan",
        "model",
        "dcgan, or conditional to feed the digit class to both networks.",
    )
    latent_dim: int = _field(100, "model", "Size of the latent noise vector z.")
    width: int = _field(
        64,
        "model",
        "Filters of the last generator layer and first discriminator layer; "
        "inner layers have 2x and 4x as many.",
    )

    # Optimisation
    epochs: int = _field(20, "optimisation", "Passes over the training images.")
    # Twice the updates per epoch of 128: by epoch 30 on 10,000 digits it scored a lower
    # Frechet distance (docs/benchmarks.md, sample quality).
    batch_size: int = _field(64, "optimisation", "Images per training step (global batch).")
    generator_lr: float = _field(2e-4, "optimisation", "Adam learning rate of the generator.")
    discriminator_lr: float = _field(2e-4, "optimisation", "Adam learning rate of the discriminator.")
    # The DCGAN paper found the default beta_1 of 0.9 made training oscillate.
    beta_1: float = _field(0.5, "optimisation", "Adam beta_1 of both optimizers.")
    beta_2: float = _field(0.999, "optimisation", "Adam beta_2 of both optimizers.")
    seed: int = _field(
        0,
        "optimisation",
        "Seed of the weight initialisation, the data order and the training noise.",
    )
    strategy: str = _field(
        "auto",
        "optimisation",
        "tf.distribute strategy: auto (mirrored over 2+ GPUs, else one device), default, mirrored, "
        "or multi_worker for several machines: run the same train command once per worker, each with "
        "TF_CONFIG in its environment listing every worker's host:port and its own index. Worker 0 "
        "(the chief) writes the run folder, which every worker must see; see docs/scaling.md.",
    )
    # bfloat16 on a CPU with native bf16 instructions trained about 1.4x faster per epoch and
    # scored within run-to-run noise of float32 over 30 epochs (docs/benchmarks.md).
    precision: str = _field(
        "auto",
        "optimisation",
        "auto, float32, or the Keras mixed precision policy mixed_float16 or mixed_bfloat16. "
        "auto picks mixed_bfloat16 on a machine without a GPU whose CPU has bf16 instructions "
        "(avx512_bf16 or amx_bf16) and float32 elsewhere; the first trainer start writes its "
        "choice into config.json, so a resume keeps it.",
    )
    # Keras 3.15's own default (jit_compile="auto") turns XLA on only with a GPU and no
    # tf.distribute strategy. This field makes the choice explicit and the same on every machine.
    jit_compile: bool = _field(
        False,
        "optimisation",
        "Compile the train step with XLA (Keras compile(jit_compile=True)); meant for GPUs. On the "
        "2-core AMD EPYC CPU of docs/benchmarks.md, training with XLA was measured slower than without. "
        "Only with one replica: a strategy with several replicas rejects it.",
    )

    # Checkpoints and samples
    sample_seed: int = _field(
        42,
        "checkpoints",
        "First seed of the fixed sample grid; its digits use seeds sample_seed, sample_seed+1, ...",
    )
    sample_count: int = _field(64, "checkpoints", "Digits in the sample grid written after every epoch.")
    checkpoint_every_steps: int = _field(
        500,
        "checkpoints",
        "Write a checkpoint after this many steps (and at every epoch end).",
    )
    checkpoint_every_minutes: float = _field(
        5.0,
        "checkpoints",
        "Write a checkpoint after this many minutes, if the step interval has not come first.",
    )
    checkpoints_kept: int = _field(
        3,
        "checkpoints",
        "Number of newest checkpoints to keep; older ones are deleted.",
    )
    log_every_steps: int = _field(
        10,
        "checkpoints",
        "Append one metrics.csv row (means over the interval) every this many steps.",
    )

    # Quality metrics and alerts
    eval_every_epochs: int = _field(
        1,
        "quality",
        "Score the generator with the shipped classifier (Frechet distance, KID, class shares, "
        "diversity) after every this many epochs; 0 turns the metrics off.",
    )
    eval_samples: int = _field(
        2000,
        "quality",
        "Generated digits per evaluation, compared with as many real test images (2 to 10000).",
    )
    alert_d_loss_below: float = _field(
        0.05,
        "quality",
        "Alert 'discriminator wins' when the per-step d_loss stays below this value for "
        "alert_d_loss_steps consecutive steps; 0 turns the alert off.",
    )
    alert_d_loss_steps: int = _field(
        200,
        "quality",
        "Consecutive steps of d_loss below alert_d_loss_below that raise the 'discriminator wins' alert.",
    )
    alert_max_class_share: float = _field(
        0.3,
        "quality",
        "Alert 'mode collapse' when one predicted class exceeds this share of the generated digits "
        "(real MNIST has about 0.1 per class); 1 turns the alert off.",
    )
    alert_min_diversity_ratio: float = _field(
        0.5,
        "quality",
        "Alert 'mode collapse' when the pixel diversity of the generated digits falls below this "
        "times the diversity of real digits; 0 turns the alert off.",
    )

    def validate(self, num_images: int | None = None) -> TrainConfig:
        """Raise ConfigError naming the first invalid field; return self when all are valid.

        ``num_images`` is the size of the loaded dataset, when known, so that a
        batch larger than the dataset is rejected before training starts.
        """
        for name in INT_RANGES:
            if name != "max_images" or self.max_images is not None:
                _require_int_in_range(self, name)
        last_sample_seed = self.sample_seed + self.sample_count - 1
        if last_sample_seed > MAX_SEED:
            highest = MAX_SEED - self.sample_count + 1
            raise ConfigError(
                f"sample_seed {self.sample_seed} plus sample_count {self.sample_count} goes past "
                f"the largest seed {MAX_SEED}; lower sample_seed to at most {highest}."
            )
        for name in ("generator_lr", "discriminator_lr"):
            value = getattr(self, name)
            if not _is_number(value) or not 0 < value <= MAX_LEARNING_RATE:
                raise ConfigError(
                    f"{name} must be a number greater than 0 and at most {MAX_LEARNING_RATE:g}, "
                    f"got {format_value(value)}; DCGAN uses 0.0002."
                )
        for name in ("beta_1", "beta_2"):
            value = getattr(self, name)
            if not _is_number(value) or not 0 <= value < 1:
                raise ConfigError(
                    f"{name} must be in [0, 1), got {format_value(value)}; the default is {_default(name)}."
                )
        value = self.checkpoint_every_minutes
        if not _is_number(value) or not 0 < value <= MAX_CHECKPOINT_MINUTES:
            raise ConfigError(
                "checkpoint_every_minutes must be a number greater than 0 and at most "
                f"{MAX_CHECKPOINT_MINUTES:g} (a week), got {format_value(value)}; "
                f"the default is {_default('checkpoint_every_minutes')}."
            )
        _require_alert_thresholds(self)
        _require_choice(self, "model", MODEL_KINDS)
        _require_choice(self, "strategy", STRATEGIES)
        _require_choice(self, "precision", PRECISIONS)
        if not isinstance(self.jit_compile, bool):
            raise ConfigError(f"jit_compile must be true or false, got {format_value(self.jit_compile)}.")
        if not isinstance(self.data, str) or not self.data.strip():
            raise ConfigError(
                f"data must be one of {', '.join(KERAS_DATASETS)} or a path, got {format_value(self.data)}."
            )
        if self.data not in KERAS_DATASETS and not _path_exists(self.data):
            raise ConfigError(
                f"data {format_value(self.data)} is neither a known dataset ({', '.join(KERAS_DATASETS)}) "
                "nor an existing path to an .npz file, an IDX folder or a folder of PNG class folders."
            )
        if num_images is not None:
            available = min(num_images, self.max_images or num_images)
            if self.batch_size > available:
                raise ConfigError(
                    f"batch_size {self.batch_size} is larger than the {available} training images; "
                    f"choose a batch_size of at most {available}."
                )
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build a config from a dict, rejecting unknown keys and values of the wrong JSON type.

        Missing keys take defaults. Ranges are left to ``validate``.
        """
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            # The full list of fields is too long for one message, so only the closest names are shown.
            closest = {match for name in unknown for match in difflib.get_close_matches(name, known, n=3)}
            hint = f" The closest are {', '.join(sorted(closest))}." if closest else ""
            raise ConfigError(
                f"unknown config field(s) {', '.join(name[:60] for name in unknown)}; "
                f"known fields are listed by `python -m gan train --help`.{hint}"
            )
        for name, value in values.items():
            message = _json_type_error(name, value)
            if message:
                raise ConfigError(message)
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"config is not valid JSON: {error}; fix the syntax there.") from None
        except RecursionError:
            raise ConfigError("config JSON is nested too deeply; write one object of fields.") from None
        if not isinstance(values, dict):
            raise ConfigError(
                f'config JSON must be an object such as {{"epochs": 20}}, got {type(values).__name__}.'
            )
        values.pop("version", None)
        return cls.from_dict(values)

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise ConfigError(f"config file {path} not found; pass the path of a JSON file.") from None
        except IsADirectoryError:
            raise ConfigError(f"config file {path} is a folder; pass the path of a JSON file.") from None
        except UnicodeDecodeError:
            raise ConfigError(f"config file {path} is not UTF-8 text; pass a JSON file.") from None
        except OSError as error:
            raise ConfigError(f"config file {path} cannot be read ({error.strerror}).") from None
        try:
            return cls.from_json(text)
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from None

    @property
    def conditional(self) -> bool:
        return self.model == "conditional"


def field_help(name: str) -> str:
    return TrainConfig.__dataclass_fields__[name].metadata["help"]


def field_group(name: str) -> str:
    return TrainConfig.__dataclass_fields__[name].metadata["group"]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _default(name: str) -> Any:
    return TrainConfig.__dataclass_fields__[name].default


def _require_int_in_range(config: TrainConfig, name: str) -> None:
    value = getattr(config, name)
    low, high = INT_RANGES[name]
    if _is_int(value) and low <= value <= high:
        return
    if name == "max_images":
        fix = "leave it unset (empty) to use every image"
    else:
        fix = f"the default is {_default(name)}"
    raise ConfigError(f"{name} must be an integer from {low} to {high}, got {format_value(value)}; {fix}.")


def _path_exists(text: str) -> bool:
    """Tell whether a data path exists; a path the OS cannot look up (too long, NUL byte) does not."""
    try:
        return Path(text).expanduser().exists()
    except (OSError, ValueError, RuntimeError):  # RuntimeError: ~user of an unknown user
        return False


def _json_type_error(name: str, value: Any) -> str | None:
    """Return a message when a config.json value has the wrong JSON type for field ``name``, else None."""
    annotation = str(TrainConfig.__dataclass_fields__[name].type)
    if annotation == "bool":
        valid, kind = isinstance(value, bool), "true or false"
    elif "float" in annotation:
        valid, kind = _is_number(value), "a number"
    elif "int" in annotation:
        valid, kind = _is_int(value), "an integer"
    else:
        valid, kind = isinstance(value, str), "a string"
    if value is None and "None" in annotation:
        return None
    if valid:
        return None
    if "None" in annotation:
        kind += " or null"
    try:
        written = json.dumps(value)
    except (TypeError, ValueError):  # a value built in Python rather than read from JSON
        written = repr(value)
    if len(written) > 60:
        written = f"{written[:60]}... ({len(written)} characters)"
    example = json.dumps(_default(name)) if _default(name) is not None else "10000"
    return f"{name} must be {kind}, got {written}; for example {example}."


# Allowed range of each float alert threshold, with both ends included.
ALERT_RANGES = {
    # BCE losses are unbounded, so the upper bound only rejects a typo.
    "alert_d_loss_below": (0.0, 1000.0),
    "alert_max_class_share": (0.0, 1.0),
    "alert_min_diversity_ratio": (0.0, 1.0),
}


def _require_alert_thresholds(config: TrainConfig) -> None:
    for name, (low, high) in ALERT_RANGES.items():
        value = getattr(config, name)
        if _is_number(value) and math.isfinite(value) and low <= value <= high:
            continue
        raise ConfigError(
            f"{name} must be a number from {low:g} to {high:g}, got {format_value(value)}; "
            f"the default is {_default(name)}."
        )


def _require_choice(config: TrainConfig, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(config, name)
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {format_value(value)}.")
