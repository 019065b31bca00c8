"""The training loop of one run: devices, checkpoints, histories, samples and status.

``train(run_dir)`` trains the run described by ``RUN/config.json`` under
``model.fit``, with one ``fit`` call per epoch. A run resumed in the middle of
an epoch therefore gets the rest of that epoch's batches in the same order.
It holds the run's lock throughout and writes every file of the run folder.
In a ``multi_worker`` run, only the chief (worker 0 of ``TF_CONFIG``) does
both; the other workers train the same steps and write nothing there (see
``gan.multiworker``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from gan import checkpoints, data, faults, multiworker, runs
from gan.cluster import Cluster, check_batch_split, read_cluster
from gan.config import PRECISIONS, ConfigError, TrainConfig
from gan.errors import InputError, StorageError
from gan.generate import generate_images, grid_image, sample_seeds, save_png
from gan.model import DCGAN, build_gan

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 2.0
# Seed of the first digit of every evaluation during training: the same digits each epoch, and the
# same as the default of `python -m gan evaluate`, which therefore reproduces best.json's distance.
EVAL_SEED = 0

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


def describe_devices() -> list[str]:
    """List every physical device visible to TensorFlow, then its logical devices when they differ.

    Logical devices differ when a process has split a physical device, for
    example one CPU into two with ``tf.config.set_logical_device_configuration``.
    Call this after ``configure_devices``: listing logical devices initialises
    TensorFlow's runtime, after which GPU memory growth can no longer be set.
    """
    physical = tf.config.list_physical_devices()
    described = [_physical_device_label(device) for device in physical]
    logical = [device.name for device in tf.config.list_logical_devices()]
    # By default each physical device has one logical device of the same type and index.
    one_to_one = [device.name.replace("/physical_device:", "/device:") for device in physical]
    if sorted(logical) != sorted(one_to_one):
        described += logical
    return described


def _physical_device_label(device) -> str:
    """Return a physical device's name, with the model name that TensorFlow reports for GPUs."""
    if device.device_type != "GPU":
        return device.name
    # NOTE: this branch has not run on a GPU; the tests run on CPU-only machines.
    try:
        model = tf.config.experimental.get_device_details(device).get("device_name")
    except (ValueError, RuntimeError):
        model = None
    return f"{device.name} ({model})" if model else device.name


def replica_devices(strategy: tf.distribute.Strategy) -> list[str]:
    """Return the devices that the strategy's replicas run on.

    The default strategy has no device list, so its one replica is given as
    the device where TensorFlow places operations by default, the first GPU or else the first CPU.
    """
    try:
        return list(strategy.extended.worker_devices)
    except RuntimeError:
        gpus = tf.config.list_logical_devices("GPU")
        return [(gpus or tf.config.list_logical_devices("CPU"))[0].name]


def make_strategy(name: str) -> tf.distribute.Strategy:
    """Return the tf.distribute strategy that ``TrainConfig.strategy`` names.

    ``auto`` mirrors across all GPUs when there are two or more and uses the
    default (one device) strategy otherwise. ``mirrored`` uses every GPU, or
    every logical CPU device when there is no GPU. ``multi_worker`` reads the
    cluster from ``TF_CONFIG`` and waits for all its workers; it must be
    created before anything initialises TensorFlow's runtime.
    """
    if name == "multi_worker":
        # Before the device listing below, which initialises the runtime.
        return multiworker.create_strategy(read_cluster())
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    devices = [device.name for device in gpus] or [
        device.name for device in tf.config.list_logical_devices("CPU")
    ]
    return tf.distribute.MirroredStrategy(devices)


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
        self.d_loss_sum = 0.0  # sum of this epoch's per-step d_loss, for the value of the next step

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
        self.d_loss_sum = self.previous_sums.get("d_loss", 0.0)

    def on_train_batch_end(self, batch, logs=None):
        trainer = self.trainer
        config = trainer.config
        logs = logs or {}
        now = time.time()
        # Checked before the step counts, so that no file and no checkpoint records a bad step.
        losses = {name: float(logs[name]) for name in ("d_loss", "g_loss") if name in logs}
        if faults.nan_loss(trainer.progress.step + 1):
            losses = {name: math.nan for name in losses}
        diverged_here = not all(math.isfinite(value) for value in losses.values())
        due_by_time = now - trainer.last_checkpoint_time >= 60 * config.checkpoint_every_minutes
        # The workers of a multi-worker run decide these together, because their clocks and
        # signals differ. So all of them stop or write a checkpoint after the same step.
        diverged, due_by_time, stop = trainer.agree(diverged_here, due_by_time, trainer.stop_requested)
        if diverged:
            if not diverged_here:
                losses = {"a loss of another worker": math.nan}
            trainer.record_divergence(trainer.progress.step + 1, self.epoch_index + 1, losses)
            self.model.stop_training = True
            return
        trainer.progress.step += 1
        self.epoch_batches += 1
        trainer.step_variable.assign(trainer.progress.step)
        if "d_loss" in losses:
            # Keras reports the running mean over the epoch, so this step's own d_loss is the
            # difference of two running sums.
            d_loss_sum = losses["d_loss"] * self.epoch_batches
            trainer.check_discriminator_wins(d_loss_sum - self.d_loss_sum, self.epoch_index + 1)
            self.d_loss_sum = d_loss_sum

        if trainer.progress.step % config.log_every_steps == 0:
            self._write_metrics_row(logs)
        if now - trainer.last_heartbeat >= HEARTBEAT_SECONDS:
            trainer.write_running_status(now)
        # The epoch end saves a checkpoint anyway, with the epoch counted as done.
        last_batch = self.epoch_batches == trainer.progress.steps_per_epoch
        due_by_steps = trainer.progress.step - trainer.last_checkpoint_step >= config.checkpoint_every_steps
        if (due_by_steps or due_by_time) and not last_batch:
            trainer.save_checkpoint()
        faults.point(f"step:{trainer.progress.step}")
        if stop and not trainer.stop_requested:
            log.info("another worker received a stop signal; this worker stops after the same step")
            trainer.stop_requested = True
        if stop:
            if not self.model.stop_training:
                trainer.write_running_status(now, state="stopping")
            self.model.stop_training = True

    def _write_metrics_row(self, logs: dict[str, Any]) -> None:
        if not self.trainer.writes_run_folder:
            return
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

    def __init__(
        self,
        run_dir: Path,
        config: TrainConfig,
        on_progress: ProgressCallback | None,
        cluster: Cluster | None = None,
    ):
        self.run_dir = run_dir
        self.config = config
        self.on_progress = on_progress
        self.cluster = cluster  # the workers of a multi_worker run, None for one process
        self.sync: multiworker.WorkerSync | None = None  # set once the cluster has formed
        self.multi_worker_strategy: tf.distribute.MultiWorkerMirroredStrategy | None = None
        self.signal_handler: Callable | None = None  # handler of SIGTERM and SIGINT, set by train()
        self.stop_requested = False
        self.restored_epoch_means: list[np.ndarray] | None = None
        self.warnings: list[str] = []  # problems this trainer recovered from, shown in status.json
        self.last_heartbeat = 0.0
        self.last_checkpoint_time = time.time()
        self.last_checkpoint_step = 0
        self.alerts: list[dict[str, Any]] = []  # alerts of this process, shown in status.json
        self.d_loss_streak = 0  # consecutive steps with d_loss below alert_d_loss_below
        self.divergence: str | None = None  # the message of a non-finite loss, once one is seen
        self.quality_dataset: str | None = None  # the classifier that scores samples, None for no metrics
        self.best_frechet_distance = math.inf
        self.epochs_columns = runs.EPOCHS_COLUMNS
        self.devices: list[str] = []  # every device visible to TensorFlow, shown in status.json
        self.replica_devices: list[str] = []  # the devices of the strategy's replicas
        self.num_replicas = 1  # replicas of the strategy over all workers, shown in status.json

    @property
    def writes_run_folder(self) -> bool:
        """Tell whether this process writes the run folder: the only trainer, or a cluster's chief."""
        return self.cluster is None or self.cluster.is_chief

    def install_signal_handlers(self) -> None:
        """Install ``signal_handler`` for SIGTERM and SIGINT.

        Creating a MultiWorkerMirroredStrategy replaces the SIGTERM handler
        with TensorFlow's own (TensorFlow 2.21), so setup installs it again.
        """
        if self.signal_handler is not None:
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, self.signal_handler)

    def agree(self, *flags: bool) -> list[bool]:
        """Return each flag set if it is set on any worker; one process returns its own flags.

        In a multi-worker run this is a collective operation, so every worker
        calls it at the same point.
        """
        if self.sync is None:
            return list(flags)
        return self.sync.any(flags)

    def stop_agreed(self) -> bool:
        """Return whether any worker has received a stop; a collective operation in a multi-worker run."""
        if self.sync is not None:
            (stop,) = self.sync.any([self.stop_requested])
            if stop and not self.stop_requested:
                log.info("another worker received a stop signal; this worker stops with it")
            self.stop_requested = stop
        return self.stop_requested

    # Setup

    def setup(self, resume: bool) -> None:
        config = self.config
        gpus = configure_devices()
        if self.cluster is not None:
            # TensorFlow configures collective ops only before its runtime starts, which
            # describe_devices does, so the cluster forms first.
            self.multi_worker_strategy = make_strategy(config.strategy)
            self.sync = multiworker.WorkerSync(self.multi_worker_strategy, self.cluster)
            self.install_signal_handlers()
        self.devices = describe_devices()
        log.info(
            "devices: %s (%s)",
            ", ".join(self.devices),
            f"GPUs: {', '.join(gpus)}" if gpus else "no GPU visible, training on the CPU",
        )
        if config.precision == "auto":
            config = self.config = self._resolve_auto_precision(gpus)
        if self.sync is not None:
            # Workers on different hardware may resolve "auto" differently; all train with the chief's.
            precision = self.sync.chief_choice(config.precision, PRECISIONS)
            if precision != config.precision:
                log.info("precision %s of the chief replaces this worker's %s", precision, config.precision)
                config = self.config = replace(config, precision=precision)
        keras.mixed_precision.set_global_policy(config.precision)

        dataset = data.load_images(config.data, max_images=config.max_images)
        config.validate(num_images=len(dataset.images))
        self.images, self.labels = dataset.images, dataset.labels
        self.num_classes = dataset.num_classes if config.conditional else None
        # Under multi_worker a partial last batch could leave a replica without images, which
        # fails its step or makes its batch statistics NaN, so every epoch drops that batch.
        # NOTE: mirrored keeps it, and fails when it is smaller than the replica count.
        self.drop_remainder = self.cluster is not None
        steps = data.steps_per_epoch(len(self.images), config.batch_size, drop_remainder=self.drop_remainder)
        images_per_epoch = steps * config.batch_size if self.drop_remainder else len(self.images)
        self.progress = Progress(config.epochs, steps, images_per_epoch, config.batch_size)
        log.info(
            "data: %s, %d images of 28x28, %d steps per epoch",
            config.data,
            len(self.images),
            steps,
        )
        if images_per_epoch < len(self.images):
            log.info(
                "each epoch trains on %d of the %d images and leaves out the last %d of its random "
                "order, so that every step of every worker has a full batch",
                images_per_epoch,
                len(self.images),
                len(self.images) - images_per_epoch,
            )

        self.strategy = self._setup_strategy()
        if self.cluster is not None:
            check_batch_split(
                config.batch_size, self.strategy.num_replicas_in_sync, "replicas of this multi_worker cluster"
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
                jit_compile=config.jit_compile,
            )
            self.epoch_variable = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
            self.step_variable = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        if config.jit_compile and not self.gan.jit_compile:
            log.warning(
                "jit_compile is on in %s, but Keras turned it off: a layer of the model does not "
                "support XLA, or TensorFlow's op determinism is enabled; training runs without XLA",
                runs.CONFIG_FILE,
            )
        log.info("precision: %s, jit_compile: %s", config.precision, self.gan.jit_compile)
        training_checkpoint = checkpoints.training_checkpoint(
            self.gan, self.epoch_variable, self.step_variable
        )
        self.store = checkpoints.CheckpointStore(
            self.run_dir / runs.CHECKPOINTS_DIR,
            training_checkpoint,
            max_to_keep=config.checkpoints_kept,
        )
        self.checkpoint_writer: checkpoints.CheckpointStore | checkpoints.ScratchCheckpointWriter = self.store
        if not self.writes_run_folder:
            self.checkpoint_writer = checkpoints.ScratchCheckpointWriter(
                training_checkpoint, prefix=f"gan-worker{self.cluster.index}-checkpoint-"
            )
        self._restore_or_start(resume)
        self._setup_quality()

    def _resolve_auto_precision(self, gpus: list[str]) -> TrainConfig:
        """Pick the dtype policy that ``precision="auto"`` means here and record it in config.json."""
        from gan import devices

        flags = devices.cpu_flags()
        precision = devices.auto_precision(gpus, flags)
        if gpus:
            reason = "a GPU is visible; choose mixed_float16 for its speed"
        elif precision == "mixed_bfloat16":
            found = ", ".join(flag for flag in devices.BF16_CPU_FLAGS if flag in flags)
            reason = f"the CPU has bf16 instructions ({found})"
        else:
            reason = "the CPU has no bf16 instructions, so bfloat16 would be emulated"
        resolved = replace(self.config, precision=precision)
        if not self.writes_run_folder:
            log.info("precision auto resolved to %s on this worker: %s", precision, reason)
            return resolved
        log.info("precision auto resolved to %s: %s; recorded in %s", precision, reason, runs.CONFIG_FILE)
        runs.rewrite_config(self.run_dir, resolved)
        return resolved

    def _setup_strategy(self) -> tf.distribute.Strategy:
        """Create the run's strategy, record its replica devices and reject XLA over several replicas."""
        config = self.config
        strategy = self.multi_worker_strategy or make_strategy(config.strategy)
        self.replica_devices = replica_devices(strategy)
        log.info(
            "strategy: %s with %d replica(s) on %s",
            type(strategy).__name__,
            strategy.num_replicas_in_sync,
            ", ".join(self.replica_devices),
        )
        self.num_replicas = strategy.num_replicas_in_sync
        self._check_last_batch(strategy)
        if config.jit_compile and strategy.num_replicas_in_sync > 1:
            # Keras compiles the whole distributed step as one XLA function, and XLA cannot reach the
            # variables that other replicas hold on their own devices (TensorFlow 2.21).
            raise ConfigError(
                f"jit_compile cannot train with {strategy.num_replicas_in_sync} replicas "
                f"(strategy {config.strategy}): XLA compiles one step on one device. "
                "Train a new run with jit_compile off, or with strategy default."
            )
        return strategy

    def _check_last_batch(self, strategy: tf.distribute.Strategy) -> None:
        """Reject a last batch that would leave a replica of a one-machine strategy without images.

        Such a step fails inside TensorFlow only when it comes, at the end of
        the first epoch. A multi-worker run drops that batch instead.
        """
        replicas = strategy.num_replicas_in_sync
        remainder = len(self.images) % self.config.batch_size
        if self.drop_remainder or replicas < 2 or not 0 < remainder < replicas:
            return
        raise ConfigError(
            f"the last batch of every epoch would hold {remainder} of {len(self.images)} images, fewer "
            f"than the {replicas} replicas of strategy {self.config.strategy}, and a replica without "
            f"images fails its step. Train a new run whose max_images leaves no remainder (a multiple of "
            f"batch_size {self.config.batch_size}) or a remainder of at least {replicas}."
        )

    def _setup_quality(self) -> None:
        """Pick the classifier that scores samples, and the columns of epochs.csv rows."""
        from gan import metrics

        self.epochs_columns = runs.history_columns(self.run_dir / runs.EPOCHS_FILE, runs.EPOCHS_COLUMNS)
        if self.config.eval_every_epochs == 0:
            return
        self.quality_dataset = metrics.dataset_of_source(self.config.data)
        if self.quality_dataset is None:
            log.info(
                "quality metrics are off: data %s has no shipped classifier (there are classifiers for "
                "mnist, fashion_mnist and the file that GAN_MNIST_PATH names)",
                self.config.data,
            )
            return
        if "frechet_distance" not in self.epochs_columns:
            log.info(
                "%s has the header of a run from before the quality metrics, so its new rows keep "
                "that header; the metrics go to this log and to %s",
                runs.EPOCHS_FILE,
                runs.BEST_FILE,
            )

    def _restore_or_start(self, resume: bool) -> None:
        try:
            restored = self._restore(resume)
        except (runs.RunError, checkpoints.CheckpointError):
            if self.sync is not None:
                self._check_same_start(failed=True)
            raise
        if self.sync is not None:
            self._check_same_start(failed=False)
        if restored is not None and self.progress.step > self.progress.epoch * self.progress.steps_per_epoch:
            # Reading these summed variables is a collective operation in a multi-worker run,
            # which is why it comes after every worker has restored the same checkpoint.
            self.restored_epoch_means = [v.numpy() for v in self.gan.metrics_variables]
        self.last_checkpoint_step = self.progress.step
        if self.writes_run_folder:
            # Rows the previous trainer wrote after its last checkpoint will be replayed.
            runs.truncate_history(self.run_dir / runs.METRICS_FILE, "step", self.progress.step)
            runs.truncate_history(self.run_dir / runs.EPOCHS_FILE, "epoch", self.progress.epoch)
            runs.truncate_history(self.run_dir / runs.ALERTS_FILE, "step", self.progress.step)
            self._keep_best_of_restored_epochs()
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

    def _restore(self, resume: bool) -> checkpoints.CheckpointInfo | None:
        """Restore the newest complete checkpoint when resuming; return it, or None for a start at step 0."""
        existing = self.store.complete()
        if existing and not resume:
            raise runs.RunError(
                f"run {self.run_dir} already has checkpoints; continue it with --resume "
                "or start a new run folder."
            )
        if not (resume and existing):
            return None
        restored, skipped = self.store.restore_latest(mark_broken=self.writes_run_folder)
        self.warnings.extend(skipped)
        self.progress.epoch = int(self.epoch_variable.numpy())
        self.progress.step = int(self.step_variable.numpy())
        return restored

    def _check_same_start(self, failed: bool) -> None:
        """Raise RunError on every worker unless all of them start from the same step and epoch.

        ``failed`` marks this worker as unable to start for the others. The
        call then returns, and its caller raises its own error.
        """
        rows = self.sync.gather([float(failed), self.progress.step, self.progress.epoch])
        if failed:
            return
        failed_workers = [str(index) for index, row in enumerate(rows) if row[0]]
        if failed_workers:
            raise runs.RunError(
                f"worker(s) {', '.join(failed_workers)} could not start the run (see their logs), so "
                "this worker stops too. Start every worker with the same command: --resume on all or none."
            )
        starts = [(int(row[1]), int(row[2])) for row in rows]
        if len(set(starts)) > 1:
            found = ", ".join(
                f"worker {index}: step {step}, epoch {epoch}" for index, (step, epoch) in enumerate(starts)
            )
            raise runs.RunError(
                f"the workers restored different checkpoints ({found}). Every worker must see the same "
                f"run folder {self.run_dir}: put it on a filesystem that all of them mount."
            )

    def _keep_best_of_restored_epochs(self) -> None:
        """Delete best.json and generator_best.keras unless they come from an epoch that is not replayed.

        generator_best.keras without a valid best.json is the half of an
        interrupted update (best.json is deleted before the generator is
        replaced), so it is deleted too.
        """
        best = runs.read_best(self.run_dir)
        if best is not None and best["epoch"] <= self.progress.epoch:
            self.best_frechet_distance = float(best["frechet_distance"])
            return
        if best is not None:
            log.info(
                "removed %s of epoch %d: the resume restores epoch %d, so that epoch is trained again",
                runs.BEST_FILE,
                best["epoch"],
                self.progress.epoch,
            )
        (self.run_dir / runs.BEST_FILE).unlink(missing_ok=True)
        (self.run_dir / runs.BEST_GENERATOR_FILE).unlink(missing_ok=True)

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
            "alerts": self.alerts,
            "devices": self.devices,
            "replica_devices": self.replica_devices,
            "replicas": self.num_replicas,
        }
        if self.writes_run_folder:
            runs.write_status(self.run_dir, status)
        self.last_heartbeat = now
        if self.on_progress:
            self.on_progress(status)

    def save_checkpoint(self) -> None:
        """Write the training checkpoint; every worker of a multi-worker run calls this at the same step."""
        path = self.checkpoint_writer.save(
            step=self.progress.step,
            epoch=self.progress.epoch,
            num_classes=self.num_classes,
        )
        self.last_checkpoint_time = time.time()
        self.last_checkpoint_step = self.progress.step
        where = "" if self.writes_run_folder else " (the chief keeps it; this worker's copy is deleted)"
        log.info(
            "checkpoint %s at epoch %d, step %d%s",
            path.name,
            self.progress.epoch,
            self.progress.step,
            where,
        )

    def export_generator(self, file_name: str = runs.GENERATOR_FILE) -> None:
        if not self.writes_run_folder:
            return
        path = self.run_dir / file_name
        temporary = path.with_name(f".{path.stem}.tmp.keras")
        try:
            self.gan.generator.save(temporary)
            faults.point("export")
            temporary.replace(path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise

    def write_sample(self, epoch: int) -> Path | None:
        """Write the grid of the fixed sample seeds after ``epoch`` completed epochs; return its path."""
        if not self.writes_run_folder:
            return None
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
            if self.stop_agreed():
                break
            skip = progress.step - epoch_index * progress.steps_per_epoch
            if epoch_index != start_epoch:
                skip = 0
            log.info("training epoch %d/%d from step %d", epoch_index + 1, config.epochs, progress.step)
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
                drop_remainder=self.drop_remainder,
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
            if self.divergence is not None:
                return self._end_diverged()
            finished_epoch = progress.step == (epoch_index + 1) * progress.steps_per_epoch
            if finished_epoch:
                self._end_epoch(
                    epoch_index,
                    history.history,
                    epoch_start_step,
                    time.time() - epoch_started,
                )
            # Workers of a multi-worker run agree on a stop at the top of the loop instead.
            if self.stop_requested and self.sync is None:
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
        row = _rounded(row)
        report = self._evaluate(progress.epoch)
        if report is not None:
            row.update(_quality_row(report))
        if self.writes_run_folder:
            runs.append_rows(self.run_dir / runs.EPOCHS_FILE, self.epochs_columns, [row])
        if report is not None:
            self._check_mode_collapse(report)
        self.write_sample(progress.epoch)
        self.save_checkpoint()
        self.export_generator()
        if report is not None:
            self._update_best(row["frechet_distance"])
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

    # Quality metrics, alerts and the best generator

    def _evaluate(self, epoch: int):
        """Score the generator after ``epoch`` when an evaluation is due; return the QualityReport or None."""
        from gan import metrics

        config = self.config
        if self.quality_dataset is None or epoch % config.eval_every_epochs != 0:
            return None
        if not self.writes_run_folder:
            return None  # only the chief scores the generator
        labels = None
        if self.num_classes is not None:
            labels = metrics.balanced_labels(config.eval_samples, self.num_classes)
        try:
            report = metrics.evaluate_generator(
                self.gan.generator, self.quality_dataset, config.eval_samples, seed=EVAL_SEED, labels=labels
            )
        except (InputError, ValueError) as error:
            message = f"quality metrics are off for the rest of this trainer process: {error}"
            log.warning("%s", message)
            self.warnings.append(message)
            self.quality_dataset = None
            return None
        generated, floor = report.generated, report.floor
        log.info(
            "epoch %d quality: Frechet distance %.3f (real-data floor %.3f), KID %.5f (floor %.5f), "
            "largest class share %.3f, diversity %.3f (floor %.3f), %d digits in %.1f s",
            epoch,
            generated.frechet_distance,
            floor.frechet_distance,
            generated.kid,
            floor.kid,
            max(generated.class_shares),
            generated.diversity,
            floor.diversity,
            report.samples,
            report.seconds,
        )
        return report

    def raise_alert(self, kind: str, message: str, step: int, epoch: int) -> None:
        """Append an alert to alerts.csv, to this process's status.json ``alerts`` and to the log."""
        row = {"step": step, "epoch": epoch, "kind": kind, "message": message, "wall_time": time.time()}
        if self.writes_run_folder:
            runs.append_rows(self.run_dir / runs.ALERTS_FILE, runs.ALERTS_COLUMNS, [_rounded(row)])
        self.alerts.append(_rounded(row))
        log.warning("alert %s at epoch %d, step %d: %s", kind, epoch, step, message)

    def check_discriminator_wins(self, d_loss: float, epoch: int) -> None:
        """Count steps with ``d_loss`` under the threshold; alert once when a streak reaches its length."""
        config = self.config
        if d_loss >= config.alert_d_loss_below:
            self.d_loss_streak = 0
            return
        self.d_loss_streak += 1
        if self.d_loss_streak != config.alert_d_loss_steps:
            return
        step = self.progress.step
        self.raise_alert(
            "discriminator_wins",
            f"d_loss stayed below {config.alert_d_loss_below:g} for {config.alert_d_loss_steps} "
            f"consecutive steps (steps {step - config.alert_d_loss_steps + 1} to {step}), so the "
            "generator gets almost no gradient. A new run with a lower discriminator_lr or a higher "
            "generator_lr may recover.",
            step,
            epoch,
        )

    def _check_mode_collapse(self, report) -> None:
        reasons = mode_collapse_reasons(report, self.config)
        if reasons:
            message = "; ".join(reasons) + "."
            self.raise_alert("mode_collapse", message, self.progress.step, self.progress.epoch)

    def _update_best(self, frechet_distance: float) -> None:
        """Save the generator as generator_best.keras and record it in best.json if its distance is lowest.

        best.json goes first and comes back last, so a best.json on disk always
        describes the generator_best.keras next to it.
        """
        if not frechet_distance < self.best_frechet_distance:
            return
        (self.run_dir / runs.BEST_FILE).unlink(missing_ok=True)
        self.export_generator(runs.BEST_GENERATOR_FILE)
        best = {
            "epoch": self.progress.epoch,
            "step": self.progress.step,
            "frechet_distance": frechet_distance,
            "file": runs.BEST_GENERATOR_FILE,
        }
        runs.write_atomic(self.run_dir / runs.BEST_FILE, json.dumps(best, indent=2))
        self.best_frechet_distance = frechet_distance
        log.info(
            "new best generator: epoch %d, Frechet distance %.3f, saved to %s",
            self.progress.epoch,
            frechet_distance,
            runs.BEST_GENERATOR_FILE,
        )

    # Divergence

    def record_divergence(self, step: int, epoch: int, losses: dict[str, float]) -> None:
        """Record a step whose loss is NaN or infinite: an alert now, the state ``diverged`` after fit."""
        values = ", ".join(f"{name} {value:g}" for name, value in losses.items())
        kept = self.store.complete()
        if kept:
            last = kept[-1]
            where = f"The last good checkpoint is {last.name} (epoch {last.epoch}, step {last.step})."
            retry = f"resume this run to retry from {last.name}"
        else:
            where = "No checkpoint was written before it."
            retry = "resume this run to start it again from step 0"
        self.divergence = (
            f"training diverged at step {step} (epoch {epoch}): {values}; no checkpoint of that step "
            f"was saved. {where} Lower generator_lr and discriminator_lr (now "
            f"{self.config.generator_lr:g} and {self.config.discriminator_lr:g}) in a new run, or {retry}."
        )
        self.raise_alert("diverged", self.divergence, step, epoch)

    def _end_diverged(self) -> str:
        self.write_running_status(state="diverged", error=self.divergence)
        log.error("run diverged: %s", self.divergence)
        return "diverged"


def mode_collapse_reasons(report, config: TrainConfig) -> list[str]:
    """Return why a QualityReport shows mode collapse under the config's thresholds; empty if it does not.

    An untrained generator draws nearly the same blob from every seed, so it
    reads as collapsed too until it learns distinct digits.
    """
    shares = report.generated.class_shares
    top_class = max(range(len(shares)), key=shares.__getitem__)
    reasons = []
    if shares[top_class] > config.alert_max_class_share:
        reasons.append(
            f"{shares[top_class]:.1%} of {report.samples} generated digits are classified as class "
            f"{top_class}, above alert_max_class_share {config.alert_max_class_share:g}"
        )
    diversity, floor = report.generated.diversity, report.floor.diversity
    if diversity < config.alert_min_diversity_ratio * floor:
        reasons.append(
            f"pixel diversity {diversity:.3f} is below alert_min_diversity_ratio "
            f"{config.alert_min_diversity_ratio:g} times the diversity of real digits, {floor:.3f}"
        )
    return reasons


def _quality_row(report) -> dict[str, float | None]:
    """Return the epochs.csv metric cells of a QualityReport, each to 6 significant digits."""
    generated, floor = report.generated, report.floor
    cells = {
        "frechet_distance": generated.frechet_distance,
        "frechet_floor": floor.frechet_distance,
        "kid": generated.kid,
        "kid_std_error": generated.kid_std_error,
        "kid_floor": floor.kid,
        "class_entropy_bits": generated.class_entropy_bits,
        "class_entropy_floor": floor.class_entropy_bits,
        "max_class_deviation": generated.max_class_deviation,
        "confidence": generated.confidence,
        "confidence_floor": floor.confidence,
        "label_accuracy": generated.label_accuracy,
        "diversity": generated.diversity,
        "diversity_floor": floor.diversity,
    }
    for digit, share in enumerate(generated.class_shares):
        cells[f"share_{digit}"] = share
    # KID is often near 1e-4, where a fixed number of decimals would drop its digits.
    return {name: None if value is None else float(f"{value:.6g}") for name, value in cells.items()}


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

    The state is ``finished``, ``stopped``, or ``diverged`` when a step's loss
    was NaN or infinite; status.json's ``last_error`` then names the step and
    the last good checkpoint.

    ``signals_received`` lists signals that a caller caught before this
    function could install its handlers, as the CLI does while TensorFlow
    imports. A signal in that list stops the run before its first step.

    A ``multi_worker`` run reads its cluster from ``TF_CONFIG``. There the
    chief alone takes the lock, writes train.log and the rest of the run
    folder; the other workers log to stderr only.

    Raises RunLockedError when another trainer holds the run, RunError or
    ConfigError for a bad run folder, ClusterConfigError for a bad TF_CONFIG
    and DataError for a bad data source. Any error during training is
    recorded in status.json as ``failed``.
    """
    run_dir = Path(run_dir)
    config = runs.load_config(run_dir)
    # Read before anything is written, so that a bad TF_CONFIG leaves the run folder as it was.
    cluster = read_cluster() if config.strategy == "multi_worker" else None
    writes_run_folder = cluster is None or cluster.is_chief
    # The chief's lock is the lock of the whole cluster. The other workers take none, because they
    # write nothing in the run folder, and flock does not reach across machines on every filesystem.
    lock = runs.trainer_lock(run_dir) if writes_run_folder else contextlib.nullcontext()
    log_file = _logging_to(run_dir / runs.LOG_FILE) if writes_run_folder else contextlib.nullcontext()
    with lock, log_file, _keeping_dtype_policy():
        trainer = Trainer(run_dir, config, on_progress, cluster)
        previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}

        def request_stop(signum, frame):
            if trainer.stop_requested and signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C does not wait for the step
            log.info("received signal %d; stopping after the current step", signum)
            trainer.stop_requested = True

        # Only a flag is set here: the callback acts on it between steps.
        trainer.signal_handler = request_stop
        trainer.install_signal_handlers()
        if signals_received:
            log.info("received signal %d while starting; stopping before training", signals_received[0])
            trainer.stop_requested = True
        faults.point("start")
        try:
            if writes_run_folder:
                runs.remove_temporary_files(run_dir)
            trainer.setup(resume)
            return trainer.run()
        except Exception as error:
            error = _storage_error(error, run_dir) or error
            if cluster is not None:
                error = multiworker.lost_worker_error(error) or error
            message = str(error) if isinstance(error, StorageError) else f"{type(error).__name__}: {error}"
            log.error("run failed: %s", message)
            if not writes_run_folder:
                raise error from None
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
