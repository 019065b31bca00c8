"""Measure training speed in images per second: gan.train against the TensorFlow DCGAN tutorial's loop.

Each round runs whole epochs of every entry below, one entry at a time, on the
MNIST training digits that ``GAN_MNIST_PATH`` names (``mnist`` through Keras
when it is unset). Every entry's images per second is divided by the
reference's of the same round, so that both sides of a ratio run in the
same minutes when other work shares the machine. A warm-up round builds every model and traces every
training function first, and no figure includes it.

A second ratio uses CPU seconds (``time.process_time`` of the whole process,
in which only the measured entry works while the others wait). Other
processes on the machine stretch wall time far more than this process's CPU
time. CPU time still counts the spin-waits of TensorFlow's thread pools, so
it is not immune to load either. The reference and the ``DCGAN.train_step``
loop below also time the deletion of their ``tf.data`` iterator at the end
of each epoch. In TensorFlow 2.21 it sometimes waits many seconds for
tf.data's autotuning thread (see docs/benchmarks.md), which stretches wall
time but not CPU time. A third ratio therefore takes the reference's wall
seconds without that teardown: the rate of its training steps alone.

Reference, written for this benchmark from the tutorial's description
(tensorflow.org/tutorials/generative/dcgan):

- generator: Dense(7*7*256, no bias), BatchNormalization, LeakyReLU and a
  reshape to 7x7x256. Then come Conv2DTranspose layers of 128 (stride 1),
  64 (stride 2) and 1 (stride 2, tanh) filters of 5x5, all with "same"
  padding and no bias. BatchNormalization and LeakyReLU follow each hidden
  one;
- discriminator: Conv2D layers of 64 and 128 filters of 5x5, stride 2,
  "same" padding, each followed by LeakyReLU and Dropout(0.3), then
  Flatten and Dense(1);
- binary cross-entropy on logits, one Adam(1e-4) per network, noise of 100
  dimensions, batch 256 (``--batch-size``);
- one ``tf.function`` step per batch: the generator runs once, the
  discriminator on the real and the fake batch, and two ``tf.GradientTape``
  objects over that one forward pass give both updates;
- the input is a ``tf.data`` dataset of the digits scaled once to [-1, 1],
  shuffled with a buffer of the whole set and batched, the last batch
  partial. An epoch is the loop over that dataset and nothing else.

``--precision`` sets the Keras policy of the reference, the diagnostic
loops and the tutorial-architecture trainers. The reference's logits,
losses and generator output stay float32, as in ``gan.model``. The
default-configuration trainers keep the default ``precision=auto``, which
their first start resolves (``mixed_bfloat16`` on a CPU with bf16
instructions and no GPU, else float32); the report names the result.

Trainer entries run ``gan.train.train(run_dir)`` on real run folders under
``--work-dir``, each in its own thread. The trainer's ``on_progress``
callback, which it calls after the status.json write that ends every epoch,
pauses that thread until the trainer's next turn. So a timed epoch runs
from the resume of the thread to that callback. It covers the epoch's
``gan.data.make_dataset`` and ``fit`` with the trainer's per-step callback
(metrics.csv rows, status.json heartbeats, step checkpoints). It also
covers the whole epoch end: the evaluation when it is on, the epochs.csv
row, the sample grid, the checkpoint, the generator export and
status.json. The split between ``fit`` and the epoch end comes from the
``seconds`` column that the trainer writes to epochs.csv, which covers
``make_dataset`` and ``fit``.

Substituted in this process, and nothing else:

- ``gan.model.build_generator`` and ``gan.model.build_discriminator``,
  which ``gan.model.build_gan`` calls: in the threads of the
  "tutorial architecture" trainers they return the reference's networks.
  The trainers of the default configuration get the originals.
- ``gan.train.signal``: a stand-in whose ``signal()`` does nothing outside
  the main thread, because Python lets only the main thread install signal
  handlers and ``train`` installs handlers for SIGTERM and SIGINT. Ctrl-C
  reaches the benchmark's main thread, which then stops the trainers.

Trainer settings: the "tutorial architecture" runs use the reference's
batch size, noise size and Adam settings (learning rate 1e-4, beta_1 0.9).
The default-configuration runs use the TrainConfig defaults (batch 64,
gan.model's architecture, Adam 2e-4 with beta_1 0.5, evaluation after
every epoch). All runs set ``checkpoint_every_minutes`` to its maximum, a
week: a trainer waits minutes between its epochs for the other entries,
so the 5-minute timer would otherwise write checkpoints that a trainer
running alone would not. Step checkpoints (every 500 steps) stay on.

Three diagnostic entries split where the time goes. Two use the tutorial
architecture: ``DCGAN.train_step`` of ``gan.model`` called per batch in a
plain ``tf.function`` loop, and bare ``DCGAN.fit`` without callbacks or files.
The third is bare ``DCGAN.fit`` of the default configuration's networks,
batch and optimizers, in the policy that ``precision=auto`` picks: the most
that the default configuration's trainer could reach.

FLOPs are counted from the layer shapes: 2 per multiply-add of every Dense,
Conv2D and Conv2DTranspose layer. Normalisation, activations, dropout and
the optimizer update are left out. A network pass that a gradient flows
through counts 3 times its forward FLOPs (forward, gradient of the inputs,
gradient of the weights), and a pass without one counts once. The
tutorial's step and ``DCGAN.train_step`` are both 3 G + 6 D per image: G
once and D on the real and the fake batch, all differentiated. These counts
are estimates. Where only one of a pass's two gradients is needed,
TensorFlow may prune the other. The matmul peak is the best of several
``tf.linalg.matmul`` calls on 2048x2048 matrices, measured in every round,
in float32 and, when an entry trains in bfloat16, in bfloat16 too. An
entry's share of the peak uses the peak of its own precision.

Timings are only reported, never checked. The exit status is 1 when the
benchmark failed to run and 2 for invalid options.

    GAN_MNIST_PATH=/path/to/mnist.npz python bench/train_speed.py --rounds 3
    GAN_MNIST_PATH=/path/to/mnist.npz python bench/train_speed.py --quick
    GAN_MNIST_PATH=/path/to/mnist.npz python bench/train_speed.py --precision mixed_bfloat16
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from unittest import mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers  # noqa: E402

from gan import data, devices, model, runs  # noqa: E402
from gan import train as trainer_module  # noqa: E402
from gan.config import MAX_CHECKPOINT_MINUTES, TrainConfig  # noqa: E402
from gan.errors import InputError  # noqa: E402

NOISE_DIM = 100
TUTORIAL_LEARNING_RATE = 1e-4
TUTORIAL_BETA_1 = 0.9  # the Keras Adam default, which the tutorial keeps
TUTORIAL_BATCH_SIZE = 256
DROPOUT_RATE = 0.3
SEED = 0
PRECISIONS = ("float32", "mixed_bfloat16")
QUICK_IMAGES = 1024
MATMUL_SIZE = 2048
MATMUL_CALLS = 6
TUTORIAL_TARGET = 0.95  # trainer with the tutorial architecture, float32, evaluation off
DEFAULT_TARGET = 1.5  # trainer with the default configuration
WARM_UP_EPOCHS = 1

TUTORIAL = "tutorial"
OURS = "ours"


# Reference ---------------------------------------------------------------------------------------


def build_tutorial_generator(latent_dim: int = NOISE_DIM) -> keras.Model:
    """Build the tutorial's generator: noise -> 7x7x256 -> 7x7x128 -> 14x14x64 -> 28x28x1 tanh image."""
    return keras.Sequential(
        [
            keras.Input(shape=(latent_dim,)),
            layers.Dense(7 * 7 * 256, use_bias=False),
            layers.BatchNormalization(),
            layers.LeakyReLU(),
            layers.Reshape((7, 7, 256)),
            layers.Conv2DTranspose(128, 5, strides=1, padding="same", use_bias=False),
            layers.BatchNormalization(),
            layers.LeakyReLU(),
            layers.Conv2DTranspose(64, 5, strides=2, padding="same", use_bias=False),
            layers.BatchNormalization(),
            layers.LeakyReLU(),
            # float32 under a mixed policy too, as in gan.model, so that images are exact in [-1, 1].
            layers.Conv2DTranspose(
                1, 5, strides=2, padding="same", use_bias=False, activation="tanh", dtype="float32"
            ),
        ],
        name="tutorial_generator",
    )


def build_tutorial_discriminator() -> keras.Model:
    """Build the tutorial's discriminator: 28x28x1 image -> 14x14x64 -> 7x7x128 -> one float32 logit."""
    return keras.Sequential(
        [
            keras.Input(shape=model.IMAGE_SHAPE),
            layers.Conv2D(64, 5, strides=2, padding="same"),
            layers.LeakyReLU(),
            layers.Dropout(DROPOUT_RATE),
            layers.Conv2D(128, 5, strides=2, padding="same"),
            layers.LeakyReLU(),
            layers.Dropout(DROPOUT_RATE),
            layers.Flatten(),
            layers.Dense(1, dtype="float32"),
        ],
        name="tutorial_discriminator",
    )


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Set this thread's Keras dtype policy (Keras 3 keeps it per thread) and restore it afterwards."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


class TutorialReference:
    """The tutorial's loop: one ``tf.function`` step per batch, both updates from one forward pass."""

    def __init__(self, images: np.ndarray, batch_size: int, precision: str):
        with dtype_policy(precision):
            self.generator = build_tutorial_generator()
            self.discriminator = build_tutorial_discriminator()
        self.generator_optimizer = keras.optimizers.Adam(TUTORIAL_LEARNING_RATE)
        self.discriminator_optimizer = keras.optimizers.Adam(TUTORIAL_LEARNING_RATE)
        self.generator_optimizer.build(self.generator.trainable_variables)
        self.discriminator_optimizer.build(self.discriminator.trainable_variables)
        self.cross_entropy = keras.losses.BinaryCrossentropy(from_logits=True)
        scaled = (images.astype(np.float32) - 127.5) / 127.5
        self.dataset = (
            tf.data.Dataset.from_tensor_slices(scaled[..., np.newaxis])
            .shuffle(len(scaled), seed=SEED)
            .batch(batch_size)
        )
        image_spec = tf.TensorSpec([None, *model.IMAGE_SHAPE], tf.float32)
        self.train_step = tf.function(self._train_step, input_signature=[image_spec])

    def _train_step(self, real_images: tf.Tensor) -> None:
        noise = tf.random.normal([tf.shape(real_images)[0], NOISE_DIM])
        with tf.GradientTape() as generator_tape, tf.GradientTape() as discriminator_tape:
            fake_images = self.generator(noise, training=True)
            real_logits = self.discriminator(real_images, training=True)
            fake_logits = self.discriminator(fake_images, training=True)
            generator_loss = self.cross_entropy(tf.ones_like(fake_logits), fake_logits)
            discriminator_loss = self.cross_entropy(
                tf.ones_like(real_logits), real_logits
            ) + self.cross_entropy(tf.zeros_like(fake_logits), fake_logits)
        generator_variables = self.generator.trainable_variables
        discriminator_variables = self.discriminator.trainable_variables
        generator_gradients = generator_tape.gradient(generator_loss, generator_variables)
        discriminator_gradients = discriminator_tape.gradient(discriminator_loss, discriminator_variables)
        self.generator_optimizer.apply_gradients(zip(generator_gradients, generator_variables, strict=True))
        self.discriminator_optimizer.apply_gradients(
            zip(discriminator_gradients, discriminator_variables, strict=True)
        )

    def run_epochs(self, count: int) -> float:
        started = time.perf_counter()
        self.teardown_seconds = 0.0
        for _ in range(count):
            _, teardown_seconds = train_on(self.dataset, self.train_step)
            self.teardown_seconds += teardown_seconds
        self.generator_optimizer.iterations.numpy()  # waits for the last step
        return time.perf_counter() - started


def train_on(dataset: tf.data.Dataset, train_step: Callable) -> tuple[Any, float]:
    """Call ``train_step`` on every batch of ``dataset``; return its last output and the teardown seconds.

    The iterator is deleted here so that its teardown is timed on its own: in TensorFlow 2.21
    it waits for tf.data's autotuning thread in some epochs (docs/benchmarks.md).
    """
    iterator = iter(dataset)
    output = None
    for batch in iterator:
        output = train_step(batch)
    started = time.perf_counter()
    del iterator
    return output, time.perf_counter() - started


# Diagnostics: gan.model's train step outside the trainer -----------------------------------------


def build_tutorial_dcgan(precision: str) -> model.DCGAN:
    """Build gan.model's DCGAN around the tutorial's networks, with the tutorial's optimizers."""
    with dtype_policy(precision):
        gan = model.DCGAN(build_tutorial_generator(), build_tutorial_discriminator(), NOISE_DIM, seed=SEED)
        gan.compile(
            d_optimizer=keras.optimizers.Adam(TUTORIAL_LEARNING_RATE),
            g_optimizer=keras.optimizers.Adam(TUTORIAL_LEARNING_RATE),
        )
        gan.build_optimizers()
    return gan


class StepLoop:
    """``DCGAN.train_step`` in a plain ``tf.function``, called per batch of ``gan.data.make_dataset``."""

    def __init__(self, images: np.ndarray, batch_size: int, precision: str):
        self.images = images
        self.batch_size = batch_size
        self.gan = build_tutorial_dcgan(precision)
        self.train_step = tf.function(self.gan.train_step)
        self.epoch = 0

    def run_epochs(self, count: int) -> float:
        started = time.perf_counter()
        self.teardown_seconds = 0.0
        outputs = {}
        for _ in range(count):
            dataset = data.make_dataset(
                self.images, None, batch_size=self.batch_size, seed=SEED, epoch=self.epoch
            )
            self.epoch += 1
            outputs, teardown_seconds = train_on(dataset, self.train_step)
            self.teardown_seconds += teardown_seconds
        outputs["d_loss"].numpy()  # waits for the last step
        return time.perf_counter() - started


def build_default_dcgan(precision: str) -> model.DCGAN:
    """Build gan.model's DCGAN as the trainer builds it for the TrainConfig defaults."""
    defaults = TrainConfig()
    with dtype_policy(precision):
        return model.build_gan(
            defaults.latent_dim,
            defaults.width,
            None,
            defaults.seed,
            defaults.generator_lr,
            defaults.discriminator_lr,
            defaults.beta_1,
            defaults.beta_2,
        )


class BareFit:
    """``DCGAN.fit`` once per epoch, without callbacks or files, as ``bench/train_overhead.py`` runs it."""

    def __init__(self, images: np.ndarray, batch_size: int, gan: model.DCGAN):
        self.images = images
        self.batch_size = batch_size
        self.gan = gan
        self.epoch = 0

    def run_epochs(self, count: int) -> float:
        started = time.perf_counter()
        for _ in range(count):
            dataset = data.make_dataset(
                self.images, None, batch_size=self.batch_size, seed=SEED, epoch=self.epoch
            )
            self.gan.fit(dataset, epochs=1, verbose=0, shuffle=False)
            self.epoch += 1
        return time.perf_counter() - started


# The trainer in threads ----------------------------------------------------------------------------

_thread_settings = threading.local()
_original_build_generator = model.build_generator
_original_build_discriminator = model.build_discriminator


def _thread_architecture() -> str:
    return getattr(_thread_settings, "architecture", OURS)


def _build_generator_for_thread(latent_dim: int, width: int = 64, num_classes: int | None = None):
    if _thread_architecture() == OURS:
        return _original_build_generator(latent_dim, width, num_classes)
    if num_classes is not None:
        raise ValueError("the tutorial architecture has no conditional form, so use model 'dcgan'.")
    return build_tutorial_generator(latent_dim)


def _build_discriminator_for_thread(width: int = 64, num_classes: int | None = None):
    if _thread_architecture() == OURS:
        return _original_build_discriminator(width, num_classes)
    if num_classes is not None:
        raise ValueError("the tutorial architecture has no conditional form, so use model 'dcgan'.")
    return build_tutorial_discriminator()


def _install_handler_in_main_thread(signum: int, handler):
    if threading.current_thread() is threading.main_thread():
        return signal.signal(signum, handler)
    return signal.getsignal(signum)


@contextlib.contextmanager
def trainer_substitutions() -> Iterator[None]:
    """Substitute the build functions per thread and ``gan.train.signal`` (see the module docstring)."""
    signals = types.SimpleNamespace(
        SIGTERM=signal.SIGTERM,
        SIGINT=signal.SIGINT,
        getsignal=signal.getsignal,
        signal=_install_handler_in_main_thread,
    )
    with (
        mock.patch.object(model, "build_generator", _build_generator_for_thread),
        mock.patch.object(model, "build_discriminator", _build_discriminator_for_thread),
        mock.patch.object(trainer_module, "signal", signals),
    ):
        yield


class TrainerFailed(RuntimeError):
    """A trainer thread raised an error or ended before the epochs of its turn."""


class BenchmarkStopped(Exception):
    """Raised in a paused trainer thread to end its run when the benchmark stops early."""


@dataclass
class Turn:
    first_epoch: int
    last_epoch: int
    seconds: float


class LiveTrainer:
    """One ``gan.train.train`` run in its own thread, paused after each turn's last epoch end."""

    def __init__(self, run_dir: Path, architecture: str):
        self.run_dir = run_dir
        self.architecture = architecture
        self.turns: list[Turn] = []
        self.error: BaseException | None = None
        self.final_state: str | None = None
        self._resume = threading.Event()
        self._paused = threading.Event()
        self._stopping = False
        self._epochs_left = 0
        self._epochs_done = 0
        self._turn_ended = 0.0
        self._thread = threading.Thread(target=self._train, name=f"trainer {run_dir.name}", daemon=True)
        self._thread.start()

    def run_epochs(self, count: int) -> float:
        """Run ``count`` whole epochs of the trainer and return their wall seconds."""
        first_epoch = self._epochs_done + 1
        self._epochs_left = count
        self._paused.clear()
        started = time.perf_counter()
        self._resume.set()
        self._paused.wait()
        if self.error is not None:
            raise TrainerFailed(f"trainer of {self.run_dir} failed: {self.error}") from self.error
        if self._epochs_left:
            raise TrainerFailed(
                f"trainer of {self.run_dir} ended in state {self.final_state} after epoch "
                f"{self._epochs_done}, before the {count} epochs of its turn. See its train.log."
            )
        seconds = self._turn_ended - started
        self.turns.append(Turn(first_epoch, self._epochs_done, seconds))
        return seconds

    def close(self, stop: bool, timeout: float) -> None:
        """Let the trainer finish (or, with ``stop``, end it at its pause) and wait up to ``timeout`` s."""
        self._stopping = stop
        self._resume.set()
        self._thread.join(timeout)

    def _train(self) -> None:
        _thread_settings.architecture = self.architecture
        self._resume.wait()
        self._resume.clear()
        try:
            if not self._stopping:
                self.final_state = trainer_module.train(self.run_dir, on_progress=self._on_progress)
        except BaseException as error:  # reported by run_epochs in the main thread
            self.error = error
        finally:
            self._paused.set()

    def _on_progress(self, status: dict) -> None:
        # Heartbeats repeat the epoch count, and only the status written at an epoch end raises it.
        if status["state"] != "running" or status["epoch"] <= self._epochs_done:
            return
        ended = time.perf_counter()
        self._epochs_done = status["epoch"]
        self._epochs_left -= 1
        if self._epochs_left > 0:
            return
        self._turn_ended = ended
        self._resume.clear()
        self._paused.set()
        # close() sets _stopping before _resume, so a stop that comes before the clear above is seen here.
        if not self._stopping:
            self._resume.wait()
        if self._stopping:
            raise BenchmarkStopped("the benchmark stopped before this run's last epoch")

    def recorded_fit_seconds(self, turn: Turn) -> float | None:
        """Return the sum of epochs.csv ``seconds`` (make_dataset and fit) over the epochs of ``turn``."""
        path = self.run_dir / runs.EPOCHS_FILE
        try:
            with open(path, newline="") as handle:
                rows = list(csv.DictReader(handle))
        except OSError:
            return None
        seconds = [
            float(row["seconds"])
            for row in rows
            if row.get("seconds") and turn.first_epoch <= int(row["epoch"]) <= turn.last_epoch
        ]
        if len(seconds) != turn.last_epoch - turn.first_epoch + 1:
            return None
        return sum(seconds)


# Entries -----------------------------------------------------------------------------------------


class Runner(Protocol):
    def run_epochs(self, count: int) -> float: ...


@dataclass
class Entry:
    """One measured row: its runner, its settings and its timings."""

    key: str
    label: str
    batch_size: int
    architecture: str
    loop: str  # TUTORIAL: the reference's own loop; OURS: gan.model.DCGAN.train_step
    evaluation: bool
    precision: str = ""  # the Keras policy it trained in, set when its runner starts
    runner: Runner | None = None
    warm_up_seconds: float = 0.0
    warm_up_cpu_seconds: float = 0.0
    seconds: list[float] = field(default_factory=list)  # wall seconds per timed round
    cpu_seconds: list[float] = field(default_factory=list)  # process CPU seconds per timed round
    # Seconds of tf.data iterator teardown per timed round, for the loops that can time it.
    teardown_seconds: list[float] = field(default_factory=list)


def tutorial_trainer_config(batch_size: int, evaluation: bool) -> TrainConfig:
    return TrainConfig(
        batch_size=batch_size,
        latent_dim=NOISE_DIM,
        generator_lr=TUTORIAL_LEARNING_RATE,
        discriminator_lr=TUTORIAL_LEARNING_RATE,
        beta_1=TUTORIAL_BETA_1,
        eval_every_epochs=1 if evaluation else 0,
    )


def default_trainer_config(evaluation: bool) -> TrainConfig:
    config = TrainConfig()
    if not evaluation:
        config.eval_every_epochs = 0
    return config


def finish_config(
    config: TrainConfig, epochs: int, max_images: int | None, precision: str | None
) -> TrainConfig:
    """Set the run length and the checkpoint timer; ``precision`` None keeps the config's own."""
    config.epochs = epochs
    config.max_images = max_images
    if precision is not None:
        config.precision = precision
    config.checkpoint_every_minutes = MAX_CHECKPOINT_MINUTES
    return config


def make_entries(batch_size: int, breakdown: bool) -> list[Entry]:
    default_batch = TrainConfig.batch_size
    entries = [
        Entry("reference", "reference: tutorial loop", batch_size, TUTORIAL, TUTORIAL, False),
        Entry("trainer_tutorial", "gan.train, tutorial architecture", batch_size, TUTORIAL, OURS, False),
        Entry(
            "trainer_tutorial_eval",
            "gan.train, tutorial architecture, evaluation on",
            batch_size,
            TUTORIAL,
            OURS,
            True,
        ),
        Entry("trainer_default", "gan.train, default configuration", default_batch, OURS, OURS, True),
        Entry(
            "trainer_default_no_eval",
            "gan.train, default configuration, evaluation off",
            default_batch,
            OURS,
            OURS,
            False,
        ),
    ]
    if breakdown:
        entries += [
            Entry("step_loop", "DCGAN.train_step in a tf.function loop", batch_size, TUTORIAL, OURS, False),
            Entry("bare_fit", "DCGAN.fit without callbacks", batch_size, TUTORIAL, OURS, False),
            Entry(
                "bare_fit_default",
                "DCGAN.fit without callbacks, default configuration",
                default_batch,
                OURS,
                OURS,
                False,
            ),
        ]
    return entries


def trainer_config_of(entry: Entry) -> TrainConfig:
    if entry.architecture == TUTORIAL:
        return tutorial_trainer_config(entry.batch_size, entry.evaluation)
    return default_trainer_config(entry.evaluation)


def start_runner(entry: Entry, images: np.ndarray, args: argparse.Namespace, work_dir: Path) -> Runner:
    """Build the reference or a diagnostic loop, or start a trainer thread on a new run folder."""
    entry.precision = args.precision
    if entry.key == "reference":
        return TutorialReference(images, entry.batch_size, args.precision)
    if entry.key == "step_loop":
        return StepLoop(images, entry.batch_size, args.precision)
    if entry.key == "bare_fit":
        return BareFit(images, entry.batch_size, build_tutorial_dcgan(args.precision))
    if entry.key == "bare_fit_default":
        entry.precision = devices.auto_precision(devices.visible_gpus(), devices.cpu_flags())
        return BareFit(images, entry.batch_size, build_default_dcgan(entry.precision))
    epochs = WARM_UP_EPOCHS + args.rounds * args.epochs_per_round
    precision = args.precision if entry.architecture == TUTORIAL else None
    config = finish_config(trainer_config_of(entry), epochs, args.max_images, precision)
    if config.precision == "auto":
        entry.precision = devices.auto_precision(devices.visible_gpus(), devices.cpu_flags())
    run_dir = runs.create_run(work_dir / entry.key, config)
    return LiveTrainer(run_dir, entry.architecture)


# Measurements ------------------------------------------------------------------------------------


def matmul_peak_gflops(dtype: tf.DType = tf.float32) -> float:
    """Return the best GFLOP/s of MATMUL_CALLS square matmuls of MATMUL_SIZE, after one warm-up call.

    The matmul runs in a ``tf.function``, as the training steps do.
    """
    a = tf.cast(tf.random.normal([MATMUL_SIZE, MATMUL_SIZE]), dtype)
    b = tf.cast(tf.random.normal([MATMUL_SIZE, MATMUL_SIZE]), dtype)
    matmul = tf.function(tf.linalg.matmul, autograph=False)
    matmul(a, b)[0, 0].numpy()
    best = float("inf")
    for _ in range(MATMUL_CALLS):
        started = time.perf_counter()
        matmul(a, b)[0, 0].numpy()
        best = min(best, time.perf_counter() - started)
    return 2 * MATMUL_SIZE**3 / best / 1e9


def forward_flops(network: keras.Model) -> int:
    """Count 2 FLOPs per multiply-add of the Dense, Conv2D and Conv2DTranspose layers for one image."""
    total = 0
    for layer in network.layers:
        kernel_size = int(np.prod(layer.kernel.shape)) if hasattr(layer, "kernel") else 0
        if isinstance(layer, layers.Dense):
            total += 2 * kernel_size
        elif isinstance(layer, layers.Conv2DTranspose):
            height, width = layer.input.shape[1:3]
            total += 2 * height * width * kernel_size
        elif isinstance(layer, layers.Conv2D):
            height, width = layer.output.shape[1:3]
            total += 2 * height * width * kernel_size
    return total


@dataclass
class Flops:
    generator: int
    discriminator: int

    @property
    def per_image(self) -> int:
        """FLOPs of one training image: G and D on the real and the fake batch, all differentiated."""
        return 3 * self.generator + 6 * self.discriminator


def count_flops() -> dict[str, Flops]:
    return {
        TUTORIAL: Flops(
            forward_flops(build_tutorial_generator()), forward_flops(build_tutorial_discriminator())
        ),
        OURS: Flops(
            forward_flops(_original_build_generator(NOISE_DIM, TrainConfig.width)),
            forward_flops(_original_build_discriminator(TrainConfig.width)),
        ),
    }


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gpus = len(tf.config.list_physical_devices("GPU"))
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs, {gpus} GPU(s); TensorFlow {tf.__version__}, "
        f"Keras {keras.__version__}, Python {platform.python_version()}"
    )


# Rounds ------------------------------------------------------------------------------------------


@dataclass
class Round:
    number: int  # 0 is the warm-up
    load: str
    peak_gflops: float
    bfloat16_peak_gflops: float | None = None


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_round(number: int, entries: list[Entry], epochs: int, bfloat16: bool) -> Round:
    """Run ``epochs`` epochs of every entry, starting at a different entry each round."""
    round_ = Round(number, load_average(), matmul_peak_gflops())
    if bfloat16:
        round_.bfloat16_peak_gflops = matmul_peak_gflops(tf.bfloat16)
    offset = number % len(entries)
    for entry in entries[offset:] + entries[:offset]:
        cpu_started = time.process_time()
        seconds = entry.runner.run_epochs(epochs)
        cpu_seconds = time.process_time() - cpu_started
        if number == 0:
            entry.warm_up_seconds += seconds
            entry.warm_up_cpu_seconds += cpu_seconds
        else:
            entry.seconds.append(seconds)
            entry.cpu_seconds.append(cpu_seconds)
            if hasattr(entry.runner, "teardown_seconds"):
                entry.teardown_seconds.append(entry.runner.teardown_seconds)
        progress(f"round {number}: {entry.label}: {seconds:.1f} s, {cpu_seconds:.1f} CPU s")
    return round_


# Report ------------------------------------------------------------------------------------------


def images_per_second(entry: Entry, images_per_round: int) -> list[float]:
    return [images_per_round / seconds for seconds in entry.seconds]


def ratios(entry: Entry, reference: Entry, cpu: bool = False, without_teardown: bool = False) -> list[float]:
    """Return the entry's images per second (or per CPU second) over the reference's, per round.

    ``without_teardown`` takes the reference's wall seconds without the deletion of its
    tf.data iterators, which is the rate its steps alone reached.
    """
    own = entry.cpu_seconds if cpu else entry.seconds
    theirs = reference.cpu_seconds if cpu else reference.seconds
    if without_teardown:
        theirs = [
            seconds - teardown for seconds, teardown in zip(theirs, reference.teardown_seconds, strict=True)
        ]
    return [reference_seconds / seconds for seconds, reference_seconds in zip(own, theirs, strict=True)]


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def round_table(entries: list[Entry], rounds: list[Round], images_per_round: int) -> str:
    reference = entries[0]
    rows = []
    for index, round_ in enumerate(rounds):
        peak = f"{round_.peak_gflops:.0f}"
        if round_.bfloat16_peak_gflops is not None:
            peak += f" (bfloat16 {round_.bfloat16_peak_gflops:.0f})"
        for entry in entries:
            seconds, cpu_seconds = entry.seconds[index], entry.cpu_seconds[index]
            teardown = f"{entry.teardown_seconds[index]:.1f}" if entry.teardown_seconds else ""
            rows.append(
                [
                    str(round_.number),
                    round_.load,
                    peak,
                    entry.label,
                    f"{seconds:.1f}",
                    teardown,
                    f"{cpu_seconds:.1f}",
                    f"{images_per_round / seconds:.0f}",
                    f"{reference.seconds[index] / seconds:.3f}",
                    f"{reference.cpu_seconds[index] / cpu_seconds:.3f}",
                ]
            )
    header = [
        "round",
        "load (1, 5, 15 min)",
        "matmul peak GFLOP/s",
        "entry",
        "s",
        "of it tf.data teardown s",
        "CPU s",
        "images/s",
        "ratio",
        "CPU ratio",
    ]
    return markdown_table(header, rows)


def summary_table(
    entries: list[Entry], rounds: list[Round], images_per_round: int, flops: dict[str, Flops]
) -> str:
    reference = entries[0]
    rows = []
    for entry in entries:
        rates = images_per_second(entry, images_per_round)
        per_image = flops[entry.architecture].per_image
        achieved = [rate * per_image / 1e9 for rate in rates]
        peaks = [
            round_.bfloat16_peak_gflops if entry.precision == "mixed_bfloat16" else round_.peak_gflops
            for round_ in rounds
        ]
        shares = [gflops / peak for gflops, peak in zip(achieved, peaks, strict=True)]
        wall_ratios = ratios(entry, reference)
        rows.append(
            [
                entry.label,
                str(entry.batch_size),
                entry.architecture,
                entry.precision,
                "on" if entry.evaluation else "off",
                f"{statistics.median(rates):.0f}",
                ", ".join(f"{ratio:.2f}" for ratio in wall_ratios),
                f"{statistics.median(wall_ratios):.3f}",
                f"{statistics.median(ratios(entry, reference, without_teardown=True)):.3f}",
                f"{statistics.median(ratios(entry, reference, cpu=True)):.3f}",
                f"{per_image / 1e6:.0f}",
                f"{statistics.median(achieved):.1f}",
                f"{100 * statistics.median(shares):.0f}%",
            ]
        )
    header = [
        "entry",
        "batch",
        "architecture",
        "precision",
        "evaluation",
        "images/s (median)",
        "ratio per round",
        "median ratio",
        "median ratio, reference without teardown",
        "median CPU ratio",
        "MFLOP per image",
        "GFLOP/s (median)",
        "of matmul peak (median)",
    ]
    return markdown_table(header, rows)


def split_table(entries: list[Entry]) -> str:
    """Split each trainer epoch into make_dataset + fit (epochs.csv ``seconds``) and the epoch end."""
    rows = []
    for entry in entries:
        if not isinstance(entry.runner, LiveTrainer):
            continue
        turns = entry.runner.turns[1:]  # the first turn is the warm-up
        fits = [entry.runner.recorded_fit_seconds(turn) for turn in turns]
        if any(fit is None for fit in fits):
            rows.append([entry.label, f"{statistics.median(entry.seconds):.1f}", "n/a", "n/a", "n/a"])
            continue
        ends = [turn.seconds - fit for turn, fit in zip(turns, fits, strict=True)]
        rows.append(
            [
                entry.label,
                f"{statistics.median(entry.seconds):.1f}",
                f"{statistics.median(fits):.1f}",
                f"{statistics.median(ends):.2f}",
                f"{100 * statistics.median(e / t.seconds for e, t in zip(ends, turns, strict=True)):.1f}%",
            ]
        )
    header = ["trainer entry", "whole epochs s", "make_dataset + fit s", "epoch end s", "epoch end share"]
    return markdown_table(header, rows)


def flops_table(flops: dict[str, Flops]) -> str:
    rows = []
    for name, counts in flops.items():
        rows.append(
            [
                "tutorial" if name == TUTORIAL else "gan.model, width 64",
                f"{counts.generator / 1e6:.1f}",
                f"{counts.discriminator / 1e6:.1f}",
                f"{counts.per_image / 1e6:.0f}",
            ]
        )
    header = ["architecture", "G forward MFLOP", "D forward MFLOP", "training step (3 G + 6 D)"]
    return markdown_table(header, rows)


def target_lines(entries: list[Entry], precision: str) -> list[str]:
    by_key = {entry.key: entry for entry in entries}
    reference = by_key["reference"]
    default_precision = by_key["trainer_default"].precision
    lines = []
    for key, target, text in (
        ("trainer_tutorial", TUTORIAL_TARGET, "gan.train with the tutorial architecture, evaluation off"),
        ("trainer_default", DEFAULT_TARGET, f"gan.train, default configuration ({default_precision})"),
    ):
        measures = (
            ("median ratio", ratios(by_key[key], reference)),
            ("without the reference's teardown", ratios(by_key[key], reference, without_teardown=True)),
            ("median CPU ratio", ratios(by_key[key], reference, cpu=True)),
        )
        figures = ", ".join(
            f"{name} {statistics.median(values):.3f} "
            f"({'met' if statistics.median(values) >= target else 'not met'})"
            for name, values in measures
        )
        lines.append(f"- {text} (target >= {target}): {figures}")
    if precision != "float32":
        lines.append(f"- the targets compare with a float32 reference; this run's reference used {precision}")
    return lines


def print_header(args: argparse.Namespace, entries: list[Entry], num_images: int) -> None:
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"date: {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"machine: {machine_description()}")
    print(
        f"data: {num_images} digits of {os.environ.get(data.MNIST_PATH_ENV) or 'mnist (Keras)'}, "
        f"precision {args.precision}, {args.rounds} timed round(s) of {args.epochs_per_round} epoch(s), "
        f"load average at the end {load_average()}"
    )
    print()
    print("Warm-up (set-up, tracing and the first epoch, not in any figure below):")
    for entry in entries:
        print(f"- {entry.label}: {entry.warm_up_seconds:.1f} s, {entry.warm_up_cpu_seconds:.1f} CPU s")


def print_report(
    args: argparse.Namespace,
    entries: list[Entry],
    rounds: list[Round],
    num_images: int,
    flops: dict[str, Flops],
) -> None:
    print_header(args, entries, num_images)
    images_per_round = num_images * args.epochs_per_round
    print()
    print(
        "Timed rounds (ratio: images/s of the entry over the reference's in the same round. "
        "CPU ratio: the same with the process's CPU seconds):"
    )
    print(round_table(entries, rounds, images_per_round))
    print()
    print("Summary:")
    print(summary_table(entries, rounds, images_per_round, flops))
    print()
    print("FLOPs per training image (forward 1x, a differentiated pass 3x):")
    print(flops_table(flops))
    print()
    print("Trainer epochs split by the seconds column of epochs.csv (medians):")
    print(split_table(entries))
    print()
    print("Targets:")
    print("\n".join(target_lines(entries, args.precision)))


# Command line ------------------------------------------------------------------------------------


def positive_integer(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer of at least 1, got {text!r}.") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer of at least 1, got {value}.")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=positive_integer, help="timed rounds after the warm-up (default 3)")
    parser.add_argument(
        "--epochs-per-round",
        type=positive_integer,
        default=1,
        help="epochs of every entry per round (default 1)",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_integer,
        default=TUTORIAL_BATCH_SIZE,
        help=f"images per step of the reference and the tutorial-architecture entries "
        f"(default {TUTORIAL_BATCH_SIZE}). The default-configuration entries keep {TrainConfig.batch_size}.",
    )
    parser.add_argument(
        "--precision", choices=PRECISIONS, default="float32", help="Keras dtype policy of every entry"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: the first {QUICK_IMAGES} digits and 1 timed round unless --rounds is given",
    )
    parser.add_argument(
        "--no-breakdown",
        dest="breakdown",
        action="store_false",
        help="skip the three diagnostic entries (DCGAN.train_step loop and the two bare DCGAN.fit)",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        help="folder for the trainers' run folders, kept afterwards (default: a temporary folder, deleted)",
    )
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    args.max_images = QUICK_IMAGES if args.quick else None
    return args


def run(args: argparse.Namespace, work_dir: Path) -> None:
    digits = data.load_images(TrainConfig.data, max_images=args.max_images)
    images = digits.images
    entries = make_entries(args.batch_size, args.breakdown)
    largest_batch = max(entry.batch_size for entry in entries)
    if largest_batch > len(images):
        raise InputError(
            f"batch size {largest_batch} is larger than the {len(images)} training digits. "
            "Choose a smaller --batch-size."
        )
    rounds = []
    with trainer_substitutions():
        try:
            for entry in entries:
                entry.runner = start_runner(entry, images, args, work_dir)
            bfloat16 = any(entry.precision == "mixed_bfloat16" for entry in entries)
            progress(f"warm-up round: {len(entries)} entries on {len(images)} digits")
            run_round(0, entries, WARM_UP_EPOCHS, bfloat16)
            for number in range(1, args.rounds + 1):
                rounds.append(run_round(number, entries, args.epochs_per_round, bfloat16))
        except BaseException:
            # A trainer in the middle of an epoch checks for the stop only at the epoch end,
            # so do not wait long.
            close_trainers(entries, stop=True, timeout=10)
            raise
        close_trainers(entries, stop=False, timeout=600)
    print_report(args, entries, rounds, len(images), count_flops())


def close_trainers(entries: list[Entry], stop: bool, timeout: float) -> None:
    for entry in entries:
        if isinstance(entry.runner, LiveTrainer):
            entry.runner.close(stop=stop, timeout=timeout)


def run_in_work_dir(name: str, args: argparse.Namespace, run_benchmark: Callable) -> int:
    """Call ``run_benchmark(args, work_dir)`` in ``--work-dir`` or a temporary folder; return the exit status.

    The temporary folder is deleted afterwards. A failure prints one line
    prefixed with ``name`` and gives 1, Ctrl-C gives 130.
    """
    if args.work_dir is not None:
        work_dir = args.work_dir
        work_dir.mkdir(parents=True, exist_ok=True)
    else:
        work_dir = Path(tempfile.mkdtemp(prefix=f"{name}-"))
    try:
        run_benchmark(args, work_dir)
    except (InputError, TrainerFailed, OSError) as error:
        print(f"{name}: failed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    finally:
        if args.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_in_work_dir("train_speed", parse_args(argv), run)


if __name__ == "__main__":
    sys.exit(main())
