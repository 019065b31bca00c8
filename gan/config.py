"""TrainConfig: every hyperparameter and run setting of one training run.

The same field names are the CLI flags (``latent_dim`` is ``--latent-dim``), the
keys of a run's ``config.json`` and the labels of the Train page form.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from gan.errors import InputError

MODEL_KINDS = ("dcgan", "conditional")
STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
KERAS_DATASETS = ("mnist", "fashion_mnist")


GROUPS = {
    "data": "Data",
    "model": "Model",
    "optimisation": "Optimisation",
    "checkpoints": "Checkpoints and samples",
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
        None, "data", "Train on the first N images only; unset (empty) uses every image."
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
    batch_size: int = _field(128, "optimisation", "Images per training step (global batch).")
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
        "tf.distribute strategy: auto (mirrored over 2+ GPUs, else one device), "
        "default, mirrored or multi_worker (cluster from TF_CONFIG).",
    )
    precision: str = _field(
        "float32",
        "optimisation",
        "float32, or the Keras mixed precision policy mixed_float16 or mixed_bfloat16.",
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

    def validate(self, num_images: int | None = None) -> TrainConfig:
        """Raise ConfigError naming the first invalid field; return self when all are valid.

        ``num_images`` is the size of the loaded dataset, when known, so that a
        batch larger than the dataset is rejected before training starts.
        """
        for name in ("epochs", "batch_size", "latent_dim", "width", "sample_count"):
            _require_positive_int(self, name)
        for name in ("checkpoint_every_steps", "checkpoints_kept", "log_every_steps"):
            _require_positive_int(self, name)
        for name in ("seed", "sample_seed"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise ConfigError(f"{name} must be a non-negative integer, got {value!r}.")
        if self.max_images is not None:
            _require_positive_int(self, "max_images", hint=" Leave it unset (empty) to use every image.")
        for name in ("generator_lr", "discriminator_lr"):
            value = getattr(self, name)
            if not _is_number(value) or not math.isfinite(value) or value <= 0:
                raise ConfigError(
                    f"{name} must be a finite number greater than 0, got {value!r}; DCGAN uses 0.0002."
                )
        for name in ("beta_1", "beta_2"):
            value = getattr(self, name)
            if not _is_number(value) or not 0 <= value < 1:
                raise ConfigError(f"{name} must be in [0, 1), got {value!r}.")
        value = self.checkpoint_every_minutes
        if not _is_number(value) or not math.isfinite(value) or value <= 0:
            raise ConfigError(
                f"checkpoint_every_minutes must be a finite number greater than 0, got {value!r}."
            )
        _require_choice(self, "model", MODEL_KINDS)
        _require_choice(self, "strategy", STRATEGIES)
        _require_choice(self, "precision", PRECISIONS)
        if not isinstance(self.data, str) or not self.data.strip():
            raise ConfigError(
                f"data must be one of {', '.join(KERAS_DATASETS)} or a path, got {self.data!r}."
            )
        if self.data not in KERAS_DATASETS and not Path(self.data).expanduser().exists():
            raise ConfigError(
                f"data {self.data!r} is neither a known dataset ({', '.join(KERAS_DATASETS)}) "
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
        """Build a config from a dict, rejecting unknown keys; missing keys take defaults."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown config field(s) {', '.join(unknown)}; known fields are {', '.join(sorted(known))}."
            )
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"config is not valid JSON: {error}.") from None
        if not isinstance(values, dict):
            raise ConfigError(f"config JSON must be an object, got {type(values).__name__}.")
        values.pop("version", None)
        return cls.from_dict(values)

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise ConfigError(f"config file {path} not found.") from None
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


def _require_positive_int(config: TrainConfig, name: str, hint: str = "") -> None:
    value = getattr(config, name)
    if not _is_int(value) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}.{hint}")


def _require_choice(config: TrainConfig, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(config, name)
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}.")
