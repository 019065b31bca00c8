"""The training loop of one run: devices, checkpoints, histories, samples and status.

``train(run_dir)`` trains the run described by ``RUN/config.json`` under
``model.fit``, with one ``fit`` call per epoch. A run resumed in the middle of
an epoch therefore gets the rest of that epoch's batches in the same order.
It holds the run's lock throughout and writes every file of the run folder.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from gan import checkpoints, data, faults, runs
from gan.config import TrainConfig
from gan.errors import StorageError
from gan.generate import generate_images, grid_image, sample_seeds, save_png
from gan.model import DCGAN, build_gan

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 2.0

ProgressCallback = Callable[[dict[str, Any]], None]


# Devices, precision and distribution -------------------------------------


def configure_devices() -> list[str]:
    """Let TensorFlow grow GPU memory on demand, so other processes can share the GPU; return GPU names."""
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError as error:  # devices were initialised earlier in this process
            log.warning("could not enable memory growth on %s: %s", gpu.name, error)
    return [gpu.name for gpu in gpus]


def make_strategy(name: str) -> tf.distribute.Strategy:
    """Return the tf.distribute strategy that ``TrainConfig.strategy`` names.

    ``auto`` mirrors across all GPUs when there are two or more and uses the
    default (one device) strategy otherwise. ``mirrored`` uses every GPU, or
    every logical CPU device when there is no GPU. ``multi_worker`` reads the
    cluster from ``TF_CONFIG``.
    """
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = [device.name for device in gpus] or [
            device.name for device in tf.config.list_logical_devices("CPU")
        ]
        return tf.distribute.MirroredStrategy(devices)
    # NOTE: multi-worker training has been run only as a single worker here;
    # every worker writes the same run folder, so give non-chief workers their own.
    return tf.distribute.MultiWorkerMirroredStrategy()


# Run state ------------------------------------------------------------------


@dataclass
class Progress:
    """Counters of one trainer process, written to status.json."""

    total_epochs: int
    steps_per_epoch: int
    num_images: int
    batch_size: int
    epoch: int = 0  # completed epochs
    step: int = 0  # completed steps over all epochs
    started: float = field(default_factory=time.time)
    rate_window: list[tuple[float, int]] = field(default_factory=list)

    @property
    def total_steps(self) -> int:
        return self.total_epochs * self.steps_per_epoch

    def images_done(self, step: int) -> int:
        full_epochs, step_in_epoch = divmod(step, self.steps_per_epoch)
        return full_epochs * self.num_images + min(step_in_epoch * self.batch_size, self.num_images)

    def record(self, now: float) -> None:
        self.rate_window.append((now, self.images_done(self.step)))
        # Keep about a minute of samples for a current, not lifetime, rate.
        while len(self.rate_window) > 2 and now - self.rate_window[0][0] > 60:
            self.rate_window.pop(0)

    @property
    def images_per_second(self) -> float | None:
        if len(self.rate_window) < 2:
            return None
        (start, first), (end, last) = self.rate_window[0], self.rate_window[-1]
        return (last - first) / (end - start) if end > start else None

    @property
    def eta_seconds(self) -> float | None:
        rate = self.images_per_second
        if not rate:
            return None
        remaining = self.images_done(self.total_steps) - self.images_done(self.step)
        return remaining / rate


# Callback -------------------------------------------------------------------


class RunCallback(keras.callbacks.Callback):
    """Writes metrics.csv, status.json and checkpoints during one epoch's ``fit``.

    The keys Keras passes in ``logs`` are epoch-running means; the mean over
    the last ``log_every_steps`` batches is recovered from two of them.
    """

    def __init__(self, trainer: Trainer, epoch_index: int, first_step_in_epoch: int):
        super().__init__()
        self.trainer = trainer
        self.epoch_index = epoch_index
        self.epoch_batches = first_step_in_epoch  # batches of this epoch done, before a resume too
        self.previous_sums: dict[str, float] = {}
        self.previous_batches = first_step_in_epoch

    def on_epoch_begin(self, epoch, logs=None):
        # fit() has just reset the epoch means; a run resumed mid-epoch puts
        # back the sums of the batches it trained before it stopped.
        restored = self.trainer.take_restored_epoch_means()
        if restored is None:
            return
        for variable, value in zip(self.model.metrics_variables, restored, strict=True):
            variable.assign(value)
        self.previous_sums = {
            metric.name: float(metric.result()) * self.epoch_batches for metric in self.model.metrics
        }

    def on_train_batch_end(self, batch, logs=None):
        trainer = self.trainer
        trainer.progress.step += 1
        self.epoch_batches += 1
        trainer.step_variable.assign(trainer.progress.step)
        config = trainer.config

        if trainer.progress.step % config.log_every_steps == 0:
            self._write_metrics_row(logs or {})
        now = time.time()
        if now - trainer.last_heartbeat >= HEARTBEAT_SECONDS:
            trainer.write_running_status(now)
        # The epoch end saves a checkpoint anyway, with the epoch counted as done.
        last_batch = self.epoch_batches == trainer.progress.steps_per_epoch
        due_by_steps = trainer.progress.step - trainer.last_checkpoint_step >= config.checkpoint_every_steps
        due_by_time = now - trainer.last_checkpoint_time >= 60 * config.checkpoint_every_minutes
        if (due_by_steps or due_by_time) and not last_batch:
            trainer.save_checkpoint()
        faults.point(f"step:{trainer.progress.step}")
        if trainer.stop_requested:
            if not self.model.stop_training:
                trainer.write_running_status(now, state="stopping")
            self.model.stop_training = True

    def _write_metrics_row(self, logs: dict[str, Any]) -> None:
        names = ("d_loss", "g_loss", "d_real", "d_fake")
        sums = {name: float(logs[name]) * self.epoch_batches for name in names if name in logs}
        if len(sums) < len(names):
            return
        count = self.epoch_batches - self.previous_batches
        row = {name: (sums[name] - self.previous_sums.get(name, 0.0)) / count for name in names}
        self.previous_sums, self.previous_batches = sums, self.epoch_batches
        row.update(
            step=self.trainer.progress.step,
            epoch=self.epoch_index + 1,
            wall_time=time.time(),
        )
        runs.append_rows(
            self.trainer.run_dir / runs.METRICS_FILE,
            runs.METRICS_COLUMNS,
            [_rounded(row)],
        )


def _rounded(row: dict[str, Any]) -> dict[str, Any]:
    return {key: round(value, 6) if isinstance(value, float) else value for key, value in row.items()}


# Trainer --------------------------------------------------------------------


class Trainer:
    """Trains one run folder; created and driven by ``train``."""

    def __init__(self, run_dir: Path, config: TrainConfig, on_progress: ProgressCallback | None):
        self.run_dir = run_dir
        self.config = config
        self.on_progress = on_progress
        self.stop_requested = False
        self.restored_epoch_means: list[np.ndarray] | None = None
        self.warnings: list[str] = []  # problems this trainer recovered from, shown in status.json
        self.last_heartbeat = 0.0
        self.last_checkpoint_time = time.time()
        self.last_checkpoint_step = 0

    # Setup

    def setup(self, resume: bool) -> None:
        config = self.config
        gpus = configure_devices()
        log.info(
            "devices: %s",
            ", ".join(gpus) if gpus else "no GPU visible, training on the CPU",
        )
        keras.mixed_precision.set_global_policy(config.precision)

        dataset = data.load_images(config.data, max_images=config.max_images)
        config.validate(num_images=len(dataset.images))
        self.images, self.labels = dataset.images, dataset.labels
        self.num_classes = dataset.num_classes if config.conditional else None
        steps = data.steps_per_epoch(len(self.images), config.batch_size)
        self.progress = Progress(config.epochs, steps, len(self.images), config.batch_size)
        log.info(
            "data: %s, %d images of 28x28, %d steps per epoch",
            config.data,
            len(self.images),
            steps,
        )

        self.strategy = make_strategy(config.strategy)
        log.info(
            "strategy: %s with %d replica(s)",
            type(self.strategy).__name__,
            self.strategy.num_replicas_in_sync,
        )
        keras.utils.set_random_seed(config.seed)
        with self.strategy.scope():
            self.gan: DCGAN = build_gan(
                latent_dim=config.latent_dim,
                width=config.width,
                num_classes=self.num_classes,
                seed=config.seed,
                generator_lr=config.generator_lr,
                discriminator_lr=config.discriminator_lr,
                beta_1=config.beta_1,
                beta_2=config.beta_2,
                loss_scaling=config.precision == "mixed_float16",
            )
            self.epoch_variable = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
            self.step_variable = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.store = checkpoints.CheckpointStore(
            self.run_dir / runs.CHECKPOINTS_DIR,
            checkpoints.training_checkpoint(self.gan, self.epoch_variable, self.step_variable),
            max_to_keep=config.checkpoints_kept,
        )
        self._restore_or_start(resume)

    def _restore_or_start(self, resume: bool) -> None:
        existing = self.store.complete()
        if existing and not resume:
            raise runs.RunError(
                f"run {self.run_dir} already has checkpoints; continue it with --resume "
                "or start a new run folder."
            )
        restored = None
        if resume and existing:
            restored, skipped = self.store.restore_latest()
            self.warnings.extend(skipped)
            self.progress.epoch = int(self.epoch_variable.numpy())
            self.progress.step = int(self.step_variable.numpy())
            if self.progress.step > self.progress.epoch * self.progress.steps_per_epoch:
                self.restored_epoch_means = [v.numpy() for v in self.gan.metrics_variables]
        self.last_checkpoint_step = self.progress.step
        # Rows the previous trainer wrote after its last checkpoint will be replayed.
        runs.truncate_history(self.run_dir / runs.METRICS_FILE, "step", self.progress.step)
        runs.truncate_history(self.run_dir / runs.EPOCHS_FILE, "epoch", self.progress.epoch)
        if restored is not None:
            log.info(
                "resumed from %s: epoch %d, step %d, optimizer iteration %d",
                restored.name,
                self.progress.epoch,
                self.progress.step,
                int(self.gan.g_optimizer.iterations.numpy()),
            )
        elif resume:
            log.info("no complete checkpoint yet; starting the run from step 0")

    def take_restored_epoch_means(self) -> list[np.ndarray] | None:
        """Return the epoch means of a mid-epoch checkpoint once, for the first resumed epoch."""
        restored, self.restored_epoch_means = self.restored_epoch_means, None
        return restored

    # Files

    def write_running_status(
        self, now: float | None = None, state: str = "running", error: str | None = None
    ):
        now = now or time.time()
        progress = self.progress
        progress.record(now)
        status = {
            "state": state,
            "pid": os.getpid(),
            "epoch": progress.epoch,
            "epochs": progress.total_epochs,
            "step": progress.step,
            "total_steps": progress.total_steps,
            "steps_per_epoch": progress.steps_per_epoch,
            "images_per_second": _round_or_none(progress.images_per_second),
            "eta_seconds": _round_or_none(progress.eta_seconds),
            "started": progress.started,
            "last_error": error,
            "warnings": self.warnings,
        }
        runs.write_status(self.run_dir, status)
        self.last_heartbeat = now
        if self.on_progress:
            self.on_progress(status)

    def save_checkpoint(self) -> None:
        path = self.store.save(
            step=self.progress.step,
            epoch=self.progress.epoch,
            num_classes=self.num_classes,
        )
        self.last_checkpoint_time = time.time()
        self.last_checkpoint_step = self.progress.step
        log.info(
            "checkpoint %s at epoch %d, step %d",
            path.name,
            self.progress.epoch,
            self.progress.step,
        )

    def export_generator(self) -> None:
        path = self.run_dir / runs.GENERATOR_FILE
        temporary = path.with_name(f".{path.stem}.tmp.keras")
        try:
            self.gan.generator.save(temporary)
            faults.point("export")
            temporary.replace(path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise

    def write_sample(self, epoch: int) -> Path:
        """Write the grid of the fixed sample seeds after ``epoch`` completed epochs."""
        config = self.config
        seeds = sample_seeds(config.sample_seed, config.sample_count)
        labels = _sample_labels(config.sample_count, self.num_classes)
        images = generate_images(self.gan.generator, seeds, latent_dim=config.latent_dim, labels=labels)
        columns = self.num_classes or math.ceil(math.sqrt(config.sample_count))
        path = self.run_dir / runs.SAMPLES_DIR / f"epoch_{epoch:04d}.png"
        path.parent.mkdir(exist_ok=True)
        save_png(grid_image(images, columns), path)
        return path

    # Loop

    def run(self) -> str:
        config, progress = self.config, self.progress
        if not (self.run_dir / runs.SAMPLES_DIR / "epoch_0000.png").exists():
            self.write_sample(0)
        self.write_running_status()
        start_epoch = progress.epoch
        for epoch_index in range(start_epoch, config.epochs):
            if self.stop_requested:
                break
            skip = progress.step - epoch_index * progress.steps_per_epoch
            if epoch_index != start_epoch:
                skip = 0
            epoch_start_step = progress.step
            epoch_started = time.time()
            dataset = data.make_dataset(
                self.images,
                self.labels,
                batch_size=config.batch_size,
                seed=config.seed,
                epoch=epoch_index,
                skip_batches=skip,
                conditional=config.conditional,
            )
            callback = RunCallback(self, epoch_index, skip)
            history = self.gan.fit(
                dataset,
                epochs=epoch_index + 1,
                initial_epoch=epoch_index,
                shuffle=False,  # make_dataset already ordered this epoch's images
                verbose=0,
                callbacks=[callback],
            )
            finished_epoch = progress.step == (epoch_index + 1) * progress.steps_per_epoch
            if finished_epoch:
                self._end_epoch(
                    epoch_index,
                    history.history,
                    epoch_start_step,
                    time.time() - epoch_started,
                )
            if self.stop_requested:
                break
        # An epoch end has just saved everything unless the stop came mid-epoch.
        if self.last_checkpoint_step != progress.step:
            self.save_checkpoint()
            self.export_generator()
        state = "stopped" if progress.epoch < config.epochs else "finished"
        self.write_running_status(state=state)
        log.info("%s at epoch %d, step %d", state, progress.epoch, progress.step)
        return state

    def _end_epoch(
        self,
        epoch_index: int,
        history: dict[str, list],
        first_step: int,
        seconds: float,
    ):
        progress = self.progress
        progress.epoch = epoch_index + 1
        self.epoch_variable.assign(progress.epoch)
        images = progress.images_done(progress.step) - progress.images_done(first_step)
        row = {name: float(values[-1]) for name, values in history.items()}
        row.update(
            epoch=progress.epoch,
            step=progress.step,
            seconds=seconds,
            images_per_second=images / seconds if seconds > 0 else None,
            wall_time=time.time(),
        )
        runs.append_rows(self.run_dir / runs.EPOCHS_FILE, runs.EPOCHS_COLUMNS, [_rounded(row)])
        self.write_sample(progress.epoch)
        self.save_checkpoint()
        self.export_generator()
        self.write_running_status()
        faults.point("epoch_end")
        log.info(
            "epoch %d/%d: d_loss %.4f, g_loss %.4f, D(x) %.3f, D(G(z)) %.3f, %.1f s, %.0f images/s",
            progress.epoch,
            progress.total_epochs,
            row.get("d_loss", float("nan")),
            row.get("g_loss", float("nan")),
            row.get("d_real", float("nan")),
            row.get("d_fake", float("nan")),
            seconds,
            row["images_per_second"] or 0.0,
        )


# errno values of a write that fails for lack of space or permission.
_STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM)


def _storage_error(error: Exception, run_dir: Path) -> StorageError | None:
    """Return a StorageError with the way out for a write that failed for space or permission."""
    if isinstance(error, StorageError):
        return error
    if isinstance(error, OSError) and error.errno in _STORAGE_ERRNOS:
        return StorageError(
            f"could not write {error.filename or 'a file'} in run {run_dir} ({error.strerror}). "
            "Free disk space or make the folder writable, then resume the run; "
            "its last complete checkpoint is kept."
        )
    return None


def _sample_labels(count: int, num_classes: int | None) -> np.ndarray | None:
    """Label the sample grid of a conditional model with classes 0, 1, ... along each row."""
    if num_classes is None:
        return None
    return np.arange(count) % num_classes


def _round_or_none(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


@contextlib.contextmanager
def _logging_to(path: Path):
    """Copy this package's log records into train.log, unless stderr already goes there.

    A detached trainer's stderr is train.log itself (see runs.launch), so a
    second handler would write every line twice.
    """
    if _is_stderr(path):
        yield
        return
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package_logger = logging.getLogger("gan")
    package_logger.addHandler(handler)
    if package_logger.getEffectiveLevel() > logging.INFO:
        package_logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        package_logger.removeHandler(handler)
        handler.close()


def _is_stderr(path: Path) -> bool:
    try:
        stderr_stat = os.fstat(sys.stderr.fileno())
        file_stat = path.stat()
    except (OSError, ValueError, AttributeError):  # no such file, or stderr without a descriptor
        return False
    return (stderr_stat.st_dev, stderr_stat.st_ino) == (file_stat.st_dev, file_stat.st_ino)


@contextlib.contextmanager
def _keeping_dtype_policy():
    """Restore the global Keras dtype policy that training changes to the run's precision."""
    previous = keras.mixed_precision.global_policy()
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def train(
    run_dir: str | Path,
    *,
    resume: bool = False,
    on_progress: ProgressCallback | None = None,
    signals_received: list[int] | None = None,
) -> str:
    """Train the run in ``run_dir`` to its last epoch or until SIGTERM; return the final state.

    ``signals_received`` lists signals that a caller caught before this
    function could install its handlers, as the CLI does while TensorFlow
    imports. A signal in that list stops the run before its first step.

    Raises RunLockedError when another trainer holds the run, RunError or
    ConfigError for a bad run folder, and DataError for a bad data source.
    Any error during training is recorded in status.json as ``failed``.
    """
    run_dir = Path(run_dir)
    config = runs.load_config(run_dir)
    with runs.trainer_lock(run_dir), _logging_to(run_dir / runs.LOG_FILE), _keeping_dtype_policy():
        trainer = Trainer(run_dir, config, on_progress)
        previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}

        def request_stop(signum, frame):
            if trainer.stop_requested and signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C does not wait for the step
            log.info("received signal %d; stopping after the current step", signum)
            trainer.stop_requested = True

        # Only a flag is set here: the callback acts on it between steps.
        for signum in previous:
            signal.signal(signum, request_stop)
        if signals_received:
            log.info("received signal %d while starting; stopping before training", signals_received[0])
            trainer.stop_requested = True
        faults.point("start")
        try:
            runs.remove_temporary_files(run_dir)
            trainer.setup(resume)
            return trainer.run()
        except Exception as error:
            error = _storage_error(error, run_dir) or error
            message = str(error) if isinstance(error, StorageError) else f"{type(error).__name__}: {error}"
            log.error("run failed: %s", message)
            status = runs.read_status(run_dir)
            try:
                runs.write_status(
                    run_dir,
                    {**status, "state": "failed", "pid": os.getpid(), "last_error": message},
                )
            except OSError as status_error:  # the disk that failed the run may fail this too
                log.error("could not record the failure in %s: %s", runs.STATUS_FILE, status_error)
            raise error from None
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
