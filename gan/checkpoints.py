"""Checkpoints of a run: complete training state, written so that none is ever half-read.

A checkpoint is TensorFlow's ``ckpt-STEP.index`` and ``.data-*`` files,
written by ``tf.train.Checkpoint.write``, followed by a ``ckpt-STEP.json``
marker written atomically last. Readers ignore a checkpoint without its
marker, so a trainer killed during a save leaves the previous one in charge.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf

from gan import faults, runs
from gan.errors import InputError, StorageError

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
        try:
            info = CheckpointInfo(
                path=prefix,
                step=int(meta.get("step", match.group(1))),
                epoch=int(meta.get("epoch", 0)),
                num_classes=_optional_int(meta.get("num_classes")),
                time=float(meta.get("time", marker.stat().st_mtime)),
            )
        except (TypeError, ValueError, OSError):
            continue  # a damaged marker: the checkpoint does not count as complete
        found.append(info)
    return sorted(found, key=lambda info: info.step)


class CheckpointStore:
    """Saves and restores the training checkpoint of one run, keeping the newest few.

    The markers are the only index of the folder. ``tf.train.CheckpointManager``
    is not used: it deletes old checkpoints as soon as a new one's files are
    written, before the new one's marker makes it complete, and its own index
    still counts checkpoints that a killed trainer left without a marker. So
    a crash at the wrong moment could leave no complete checkpoint. Here old
    checkpoints are deleted only after the new marker is on disk.
    """

    def __init__(self, directory: Path, checkpoint: tf.train.Checkpoint, max_to_keep: int):
        self.directory = Path(directory)
        self.checkpoint = checkpoint
        self.max_to_keep = max_to_keep
        # Restoring creates the save counter, so every checkpoint must hold it to match.
        checkpoint.save_counter  # noqa: B018 (the property creates the variable)

    def complete(self) -> list[CheckpointInfo]:
        return list_checkpoints(self.directory)

    def save(self, *, step: int, epoch: int, num_classes: int | None) -> Path:
        """Write the checkpoint of ``step``; raise StorageError, keeping the older ones, if it fails."""
        prefix = self.directory / f"ckpt-{step}"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.checkpoint.write(str(prefix))
            faults.point("checkpoint_files")
            marker = {
                "step": step,
                "epoch": epoch,
                "num_classes": num_classes,
                "time": time.time(),
            }
            runs.write_atomic(prefix.with_name(f"{prefix.name}.json"), json.dumps(marker))
            # An earlier checkpoint of this step failed to restore; these files replace it.
            prefix.with_name(f"{prefix.name}.json.broken").unlink(missing_ok=True)
        except (OSError, tf.errors.OpError) as error:
            self._remove_files(prefix)
            kept = self.complete()
            previous = f"checkpoint {kept[-1].name} is intact" if kept else "no earlier checkpoint exists"
            raise StorageError(
                f"could not write checkpoint {prefix} ({_first_line(error)}); {previous}. "
                "Free disk space or make the folder writable, then resume the run."
            ) from error
        self._trim(keep=prefix)
        return prefix

    def _trim(self, keep: Path) -> None:
        """Delete complete checkpoints past the newest ``max_to_keep``, and files that have no marker."""
        complete = {info.path for info in self.complete()[-self.max_to_keep :]}
        for index in self.directory.glob("ckpt-*.index"):
            prefix = index.with_suffix("")
            broken = prefix.with_name(f"{prefix.name}.json.broken").exists()
            if prefix != keep and prefix not in complete and not broken:
                self._remove_files(prefix)
        for marker in self.directory.glob("ckpt-*.json"):
            if not marker.with_suffix(".index").exists():
                marker.unlink(missing_ok=True)

    def _remove_files(self, prefix: Path) -> None:
        """Delete one checkpoint's files: its marker first, so that no reader takes it while it goes."""
        prefix.with_name(f"{prefix.name}.json").unlink(missing_ok=True)
        for path in self.directory.glob(f"{prefix.name}.*"):
            if path.suffix != ".broken":
                path.unlink(missing_ok=True)
        for path in self.directory.glob(f"{prefix.name}_temp*"):
            shutil.rmtree(path, ignore_errors=True)

    def restore_latest(self, mark_broken: bool = True) -> tuple[CheckpointInfo, list[str]]:
        """Restore the newest complete checkpoint that reads back, falling back to older ones.

        Return the restored checkpoint and one message per newer checkpoint
        that failed to restore. With ``mark_broken``, a failed checkpoint's
        marker is renamed to ``ckpt-STEP.json.broken``, so later resumes skip
        it and the files stay for inspection. Multi-worker runs pass False on
        every worker but the chief, which alone writes the run folder.
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
                if mark_broken:
                    marker = info.path.with_name(f"{info.name}.json")
                    marker.replace(marker.with_name(f"{marker.name}.broken"))
        raise CheckpointError(
            f"no checkpoint in {self.directory} could be restored: {'; '.join(skipped)}. "
            "Delete the checkpoints folder to train the run again from step 0."
        )


class ScratchCheckpointWriter:
    """Writes each checkpoint into a new temporary folder and deletes that folder at once.

    Under MultiWorkerMirroredStrategy, writing a checkpoint reads variables
    that are summed over all workers, which is a collective operation: every
    worker must write whenever the chief does. The workers other than the
    chief use this writer, so that they take part without touching the run
    folder. The folder is made by ``tempfile.mkdtemp`` (under ``$TMPDIR``).
    """

    def __init__(self, checkpoint: tf.train.Checkpoint, prefix: str):
        self.checkpoint = checkpoint
        self.prefix = prefix  # start of the temporary folder's name

    def save(self, *, step: int, epoch: int, num_classes: int | None) -> Path:
        """Write and delete the checkpoint of ``step``; return the prefix it had."""
        directory = Path(tempfile.mkdtemp(prefix=self.prefix))
        prefix = directory / f"ckpt-{step}"
        try:
            self.checkpoint.write(str(prefix))
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        return prefix


def _optional_int(value: object) -> int | None:
    return None if value is None else int(value)


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
