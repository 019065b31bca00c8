"""Checkpoints of a run: complete training state, written so that none is ever half-read.

A checkpoint is TensorFlow's ``ckpt-STEP.index`` and ``.data-*`` files,
written by ``tf.train.CheckpointManager``, followed by a ``ckpt-STEP.json``
marker written atomically last. Readers ignore a checkpoint without its
marker, so a trainer killed during a save leaves the previous one in charge.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf

from gan import runs
from gan.errors import InputError

log = logging.getLogger(__name__)

# Exceptions that TensorFlow raises for damaged checkpoint files. The restore ops
# raise OpError (DataLossError and others), the reader raises IndexError on a
# cut-short file, and ValueError or AssertionError mean the contents do not match.
_RESTORE_ERRORS = (tf.errors.OpError, ValueError, AssertionError, IndexError, OSError)

_MARKER = re.compile(r"^ckpt-(\d+)\.json$")


@dataclass(frozen=True)
class CheckpointInfo:
    """A complete checkpoint and what its marker records."""

    path: Path  # the prefix TensorFlow reads, e.g. checkpoints/ckpt-500
    step: int
    epoch: int
    num_classes: int | None
    time: float

    @property
    def name(self) -> str:
        return self.path.name


class CheckpointError(InputError):
    """A checkpoint that was asked for and does not exist or cannot be read."""


def training_checkpoint(gan, epoch: tf.Variable, step: tf.Variable) -> tf.train.Checkpoint:
    """Return the tf.train.Checkpoint of everything a resumed run needs."""
    return tf.train.Checkpoint(
        generator=gan.generator,
        discriminator=gan.discriminator,
        g_optimizer=gan.g_optimizer,
        d_optimizer=gan.d_optimizer,
        noise_seed=gan.seed_generator.state,
        epoch_means=list(gan.metrics_variables),
        epoch=epoch,
        step=step,
    )


def list_checkpoints(directory: str | Path) -> list[CheckpointInfo]:
    """List the complete checkpoints in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for marker in directory.iterdir():
        match = _MARKER.match(marker.name)
        if not match:
            continue
        prefix = directory / f"ckpt-{match.group(1)}"
        meta = runs.read_json(marker)
        if meta is None or not prefix.with_suffix(".index").exists():
            continue
        found.append(
            CheckpointInfo(
                path=prefix,
                step=int(meta.get("step", match.group(1))),
                epoch=int(meta.get("epoch", 0)),
                num_classes=meta.get("num_classes"),
                time=float(meta.get("time", marker.stat().st_mtime)),
            )
        )
    return sorted(found, key=lambda info: info.step)


class CheckpointStore:
    """Saves and restores the training checkpoint of one run, keeping the newest few."""

    def __init__(self, directory: Path, checkpoint: tf.train.Checkpoint, max_to_keep: int):
        self.directory = Path(directory)
        self.checkpoint = checkpoint
        self.manager = tf.train.CheckpointManager(checkpoint, str(self.directory), max_to_keep=max_to_keep)

    def complete(self) -> list[CheckpointInfo]:
        return list_checkpoints(self.directory)

    def save(self, *, step: int, epoch: int, num_classes: int | None) -> Path:
        prefix = Path(self.manager.save(checkpoint_number=step))
        marker = {
            "step": step,
            "epoch": epoch,
            "num_classes": num_classes,
            "time": time.time(),
        }
        runs.write_atomic(prefix.with_name(f"{prefix.name}.json"), json.dumps(marker))
        self._remove_orphan_markers()
        return prefix

    def _remove_orphan_markers(self) -> None:
        # CheckpointManager deletes the TensorFlow files of old checkpoints; their markers go too.
        for marker in self.directory.glob("ckpt-*.json"):
            if not marker.with_suffix(".index").exists():
                marker.unlink(missing_ok=True)

    def restore_latest(self) -> tuple[CheckpointInfo, list[str]]:
        """Restore the newest complete checkpoint that reads back, falling back to older ones.

        Return the restored checkpoint and one message per newer checkpoint
        that failed to restore. A failed checkpoint's marker is renamed to
        ``ckpt-STEP.json.broken``, so later resumes skip it and the files stay
        for inspection.
        """
        skipped = []
        for info in reversed(self.complete()):
            try:
                self.checkpoint.restore(str(info.path)).assert_existing_objects_matched()
                return info, skipped
            except _RESTORE_ERRORS as error:
                message = f"checkpoint {info.name} could not be restored ({_first_line(error)})"
                log.warning("%s; trying an older one", message)
                skipped.append(message)
                marker = info.path.with_name(f"{info.name}.json")
                marker.replace(marker.with_name(f"{marker.name}.broken"))
        raise CheckpointError(
            f"no checkpoint in {self.directory} could be restored: {'; '.join(skipped)}. "
            "Delete the checkpoints folder to train the run again from step 0."
        )


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def restore_generator(generator: keras.Model, info: CheckpointInfo) -> keras.Model:
    """Load only the generator's weights from a training checkpoint into ``generator``.

    Raises CheckpointError when the checkpoint's files are damaged or do not
    match the generator.
    """
    try:
        status = tf.train.Checkpoint(generator=generator).restore(str(info.path))
        status.expect_partial()
        status.assert_existing_objects_matched()
    except _RESTORE_ERRORS as error:
        raise CheckpointError(
            f"checkpoint {info.path} could not be read ({_first_line(error)}); choose another checkpoint."
        ) from None
    return generator
