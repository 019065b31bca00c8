"""Real training runs on real MNIST digits: the run folder, checkpoints and devices."""

import contextlib
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image

from gan import checkpoints, data, devices, runs
from gan.config import ConfigError, TrainConfig
from gan.errors import DataError
from gan.generate import generate_images, latent_vectors, load_generator, load_generator_file
from gan.model import build_gan
from gan.train import train

REPO = Path(__file__).resolve().parents[1]


def tiny_config(**changes) -> TrainConfig:
    values = dict(
        data="mnist",
        max_images=256,
        epochs=2,
        batch_size=32,
        width=8,
        latent_dim=16,
        sample_count=16,
        log_every_steps=2,
        checkpoint_every_steps=5,
        checkpoints_kept=2,
        eval_every_epochs=0,  # tests/test_quality_training.py covers the quality metrics
    )
    values.update(changes)
    return TrainConfig(**values)


@contextlib.contextmanager
def policy_of(run_dir):
    """Build models under the dtype policy that the run trained with (what precision="auto" chose)."""
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(runs.load_config(run_dir).precision)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


@pytest.fixture(autouse=True)
def local_mnist(mnist_path, monkeypatch):
    monkeypatch.setenv("GAN_MNIST_PATH", str(mnist_path))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, mnist_path):
    os.environ["GAN_MNIST_PATH"] = str(mnist_path)
    run_dir = runs.create_run(tmp_path_factory.mktemp("runs") / "tiny", tiny_config())
    assert train(run_dir) == "finished"
    return run_dir


def test_run_writes_every_file(finished_run):
    run_dir = finished_run
    config = json.loads((run_dir / runs.CONFIG_FILE).read_text())
    assert config["version"]
    assert config["epochs"] == 2

    status = json.loads((run_dir / runs.STATUS_FILE).read_text())
    assert status["state"] == "finished"
    assert status["epoch"] == 2
    assert status["step"] == status["total_steps"] == 16
    assert status["pid"] == os.getpid()
    assert status["heartbeat"] > 0

    metrics = pd.read_csv(run_dir / runs.METRICS_FILE)
    assert tuple(metrics.columns) == runs.METRICS_COLUMNS
    assert list(metrics["step"]) == list(range(2, 17, 2))
    assert list(metrics["epoch"]) == [1, 1, 1, 1, 2, 2, 2, 2]
    assert metrics[["d_loss", "g_loss"]].notna().all().all()
    assert metrics["d_real"].between(0, 1).all()

    epochs = pd.read_csv(run_dir / runs.EPOCHS_FILE)
    assert tuple(epochs.columns) == runs.EPOCHS_COLUMNS
    assert list(epochs["epoch"]) == [1, 2]
    assert list(epochs["step"]) == [8, 16]
    assert (epochs["images_per_second"] > 0).all()

    samples = sorted(path.name for path in (run_dir / runs.SAMPLES_DIR).iterdir())
    assert samples == ["epoch_0000.png", "epoch_0001.png", "epoch_0002.png"]
    grid = np.asarray(Image.open(run_dir / runs.SAMPLES_DIR / "epoch_0002.png"))
    assert grid.shape == (4 * 30 + 2, 4 * 30 + 2)

    kept = checkpoints.list_checkpoints(run_dir / runs.CHECKPOINTS_DIR)
    assert [info.step for info in kept] == [13, 16]  # every 5 steps and at epoch ends; 2 kept
    assert kept[-1].epoch == 2
    assert not list((run_dir / runs.CHECKPOINTS_DIR).glob("ckpt-5*"))

    assert (run_dir / runs.GENERATOR_FILE).stat().st_size > 0
    log = (run_dir / runs.LOG_FILE).read_text()
    assert "epoch 2/2" in log
    assert "finished at epoch 2, step 16" in log
    assert (run_dir / runs.LOCK_FILE).exists()
    assert not runs._lock_held(run_dir)


def test_epoch_zero_sample_is_untrained_generator(finished_run):
    import keras

    config = tiny_config()
    keras.utils.set_random_seed(config.seed)
    with policy_of(finished_run):
        untrained = build_gan(16, 8, None, config.seed, 2e-4, 2e-4, 0.5, 0.999)
    grid = np.asarray(Image.open(finished_run / runs.SAMPLES_DIR / "epoch_0000.png"))
    first_tile = grid[2:30, 2:30]
    expected = generate_images(untrained.generator, [config.sample_seed])[0]
    assert np.array_equal(first_tile, expected)


def test_checkpoint_restores_bit_for_bit(finished_run):
    config = tiny_config()
    latest = checkpoints.list_checkpoints(finished_run / runs.CHECKPOINTS_DIR)[-1]
    with policy_of(finished_run):
        fresh = build_gan(16, 8, None, 99, 2e-4, 2e-4, 0.5, 0.999)
    epoch = tf.Variable(0, dtype=tf.int64)
    step = tf.Variable(0, dtype=tf.int64)
    store = checkpoints.CheckpointStore(
        finished_run / runs.CHECKPOINTS_DIR,
        checkpoints.training_checkpoint(fresh, epoch, step),
        max_to_keep=config.checkpoints_kept,
    )
    restored, skipped = store.restore_latest()
    assert restored.step == latest.step
    assert skipped == []
    assert int(epoch.numpy()) == 2
    assert int(step.numpy()) == 16
    assert int(fresh.g_optimizer.iterations.numpy()) == 16
    assert int(fresh.d_optimizer.iterations.numpy()) == 16
    # One noise draw per step advances the seed state from its initial [seed, 0].
    assert fresh.seed_generator.state.numpy().tolist() == [config.seed, 16]

    exported = load_generator_file(finished_run / runs.GENERATOR_FILE)
    latents = latent_vectors(range(40), 16)
    restored_images = fresh.generator(latents, training=False).numpy()
    exported_images = exported(latents, training=False).numpy()
    assert np.array_equal(restored_images, exported_images)
    from_run = load_generator(finished_run, checkpoint_step=16)
    assert np.array_equal(from_run(latents, training=False).numpy(), restored_images)


def test_optimizer_moments_restored(finished_run):
    latest = checkpoints.list_checkpoints(finished_run / runs.CHECKPOINTS_DIR)[-1]
    reader = tf.train.load_checkpoint(str(latest.path))
    fresh = build_gan(16, 8, None, 1, 2e-4, 2e-4, 0.5, 0.999)
    store = checkpoints.CheckpointStore(
        finished_run / runs.CHECKPOINTS_DIR,
        checkpoints.training_checkpoint(
            fresh, tf.Variable(0, dtype=tf.int64), tf.Variable(0, dtype=tf.int64)
        ),
        max_to_keep=2,
    )
    store.restore_latest()  # returns (restored, skipped)
    for name, optimizer in (("g_optimizer", fresh.g_optimizer), ("d_optimizer", fresh.d_optimizer)):
        # Adam's first and second moments, one pair per trainable variable.
        moments = [
            (index, v)
            for index, v in enumerate(optimizer.variables)
            if "momentum" in v.path or "velocity" in v.path
        ]
        assert len(moments) > 0
        for index, variable in moments:
            key = f"{name}/_variables/{index}/.ATTRIBUTES/VARIABLE_VALUE"
            assert np.array_equal(reader.get_tensor(key), variable.numpy()), variable.path
        saved_iterations = reader.get_tensor(f"{name}/_iterations/.ATTRIBUTES/VARIABLE_VALUE")
        assert int(saved_iterations) == int(optimizer.iterations.numpy()) == 16
        assert any(np.abs(v.numpy()).sum() > 0 for _, v in moments)


def test_load_generator_missing_checkpoint(finished_run):
    with pytest.raises(
        checkpoints.CheckpointError, match=r"no checkpoint at step 3; available steps: 13, 16"
    ):
        load_generator(finished_run, checkpoint_step=3)


def test_incomplete_checkpoint_ignored_on_resume(tmp_path):
    run_dir = runs.create_run(tmp_path / "run", tiny_config(epochs=1))
    assert train(run_dir) == "finished"
    # A trainer killed after writing TensorFlow's files but before the marker.
    directory = run_dir / runs.CHECKPOINTS_DIR
    for source in directory.glob("ckpt-8.*"):
        if source.suffix != ".json":
            (directory / source.name.replace("ckpt-8", "ckpt-99")).write_bytes(source.read_bytes())
    assert [info.step for info in checkpoints.list_checkpoints(directory)] == [5, 8]


def test_resume_extends_nothing_when_finished(finished_run):
    before = (finished_run / runs.METRICS_FILE).read_text()
    assert train(finished_run, resume=True) == "finished"
    assert (finished_run / runs.METRICS_FILE).read_text() == before


def test_second_start_without_resume_rejected(finished_run):
    with pytest.raises(runs.RunError, match=r"already has checkpoints; continue it with --resume"):
        train(finished_run)


def test_conditional_run(tmp_path):
    run_dir = runs.create_run(tmp_path / "cond", tiny_config(model="conditional", epochs=1, sample_count=20))
    assert train(run_dir) == "finished"
    generator = load_generator(run_dir)
    assert len(generator.inputs) == 2
    grid = np.asarray(Image.open(run_dir / runs.SAMPLES_DIR / "epoch_0001.png"))
    assert grid.shape == (2 * 30 + 2, 10 * 30 + 2)  # ten classes across, two rows


def test_bad_data_marks_run_failed(tmp_path):
    broken = tmp_path / "broken.npz"
    np.savez(broken, x_train=np.zeros((4, 32, 32), np.uint8), y_train=np.zeros(4, np.uint8))
    run_dir = runs.create_run(tmp_path / "run", tiny_config(data=str(broken)))
    with pytest.raises(DataError):
        train(run_dir)
    status = runs.read_status(run_dir)
    assert status["state"] == "failed"
    assert "DataError" in status["last_error"]


def test_batch_larger_than_data_rejected(tmp_path):
    run_dir = runs.create_run(tmp_path / "run", tiny_config(max_images=20))
    with pytest.raises(ConfigError, match=r"batch_size 32 is larger than the 20 training images"):
        train(run_dir)


def test_mixed_bfloat16_run(tmp_path):
    import keras

    run_dir = runs.create_run(tmp_path / "bf16", tiny_config(epochs=1, precision="mixed_bfloat16"))
    assert train(run_dir) == "finished"
    assert keras.mixed_precision.global_policy().name == "float32"
    generator = load_generator_file(run_dir / runs.GENERATOR_FILE)
    assert generator.get_layer("deconv1").compute_dtype == "bfloat16"
    assert generator.get_layer("image").compute_dtype == "float32"
    # A generator rebuilt from the checkpoint computes under the run's policy too, to the same pixels.
    latents = latent_vectors(range(8), 16)
    from_checkpoint = load_generator(run_dir)
    assert from_checkpoint.get_layer("deconv1").compute_dtype == "bfloat16"
    assert np.array_equal(from_checkpoint(latents).numpy(), generator(latents).numpy())
    metrics = pd.read_csv(run_dir / runs.METRICS_FILE)
    assert np.isfinite(metrics[["d_loss", "g_loss"]].to_numpy()).all()

    # Both networks restored from the checkpoint under the run's policy: bfloat16 inside, float32 out.
    with policy_of(run_dir):
        restored = build_gan(16, 8, None, 0, 2e-4, 2e-4, 0.5, 0.999)
    counters = (tf.Variable(0, dtype=tf.int64), tf.Variable(0, dtype=tf.int64))
    store = checkpoints.CheckpointStore(
        run_dir / runs.CHECKPOINTS_DIR, checkpoints.training_checkpoint(restored, *counters), max_to_keep=2
    )
    store.restore_latest()
    digits = data.load_images("mnist", max_images=8).images
    real_batch = next(iter(data.make_dataset(digits, None, batch_size=8, seed=0, epoch=0)))
    fake_batch = restored.generator(latents, training=False)
    assert fake_batch.dtype == tf.float32
    discriminator = restored.discriminator
    assert discriminator.get_layer("conv2").compute_dtype == "bfloat16"
    assert discriminator.get_layer("logit").compute_dtype == "float32"
    for batch in (real_batch, fake_batch):
        logits = discriminator(batch, training=False)
        assert logits.dtype == tf.float32
        assert np.isfinite(logits.numpy()).all()


def epochs_in_config(run_dir, epochs: int, drop: tuple[str, ...] = ()) -> None:
    """Set a finished run's epochs in config.json, so that a resume trains more; drop the keys in ``drop``."""
    values = json.loads((run_dir / runs.CONFIG_FILE).read_text())
    values = {key: value for key, value in values.items() if key not in drop}
    runs.write_atomic(run_dir / runs.CONFIG_FILE, json.dumps({**values, "epochs": epochs}))


@pytest.mark.parametrize("jit_compile", [False, True])
def test_jit_compile_run_and_resume(tmp_path, jit_compile):
    """Train and resume with XLA on and off. config.json keeps the setting, and the resume uses it."""
    config = tiny_config(epochs=1, precision="float32", jit_compile=jit_compile)
    run_dir = runs.create_run(tmp_path / "run", config)
    assert json.loads((run_dir / runs.CONFIG_FILE).read_text())["jit_compile"] is jit_compile
    assert train(run_dir) == "finished"
    assert f"jit_compile: {jit_compile}" in (run_dir / runs.LOG_FILE).read_text()

    generator = load_generator_file(run_dir / runs.GENERATOR_FILE)
    images = generator(latent_vectors(range(5), config.latent_dim), training=False)
    assert generator.output_shape == (None, 28, 28, 1)
    assert images.shape == (5, 28, 28, 1)
    assert np.isfinite(images.numpy()).all()

    epochs_in_config(run_dir, 2)
    assert train(run_dir, resume=True) == "finished"
    assert runs.load_config(run_dir).jit_compile is jit_compile
    assert runs.run_info(run_dir).jit_compile is jit_compile
    assert (run_dir / runs.LOG_FILE).read_text().count(f"jit_compile: {jit_compile}") == 2
    metrics = pd.read_csv(run_dir / runs.METRICS_FILE)
    assert list(metrics["step"]) == list(range(2, 17, 2))
    assert np.isfinite(metrics[["d_loss", "g_loss", "d_real", "d_fake"]].to_numpy()).all()


def test_cli_jit_compile_flag(tmp_path, mnist_path):
    """``python -m gan train --jit-compile`` records the setting, and a resume cannot change it."""
    run_dir = tmp_path / "cli"
    settings = ["--max-images", "64", "--epochs", "1", "--batch-size", "32", "--width", "8"]
    settings += ["--latent-dim", "16", "--sample-count", "4", "--eval-every-epochs", "0"]
    settings += ["--precision", "float32"]
    env = {**os.environ, "GAN_MNIST_PATH": str(mnist_path)}
    command = [sys.executable, "-m", "gan", "train", "--run-dir", str(run_dir)]
    result = subprocess.run(
        [*command, "--jit-compile", *settings], capture_output=True, text=True, env=env, cwd=REPO, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((run_dir / runs.CONFIG_FILE).read_text())["jit_compile"] is True
    assert "jit_compile: True" in (run_dir / runs.LOG_FILE).read_text()

    result = subprocess.run(
        [*command, "--resume", "--no-jit-compile"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 2
    assert (
        "--resume continues the run with its saved config (--no-jit-compile differs from the saved "
        "jit_compile=True); remove --no-jit-compile" in result.stderr
    )

    # Flags that repeat the saved settings are accepted.
    result = subprocess.run(
        [*command, "--resume", "--jit-compile", "--batch-size", "32"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((run_dir / runs.CONFIG_FILE).read_text())["jit_compile"] is True


def test_config_without_jit_compile_resumes_off(tmp_path):
    """A config.json written before the jit_compile field existed loads, lists and resumes with it off."""
    run_dir = runs.create_run(tmp_path / "old", tiny_config(epochs=1, precision="float32"))
    assert train(run_dir) == "finished"
    epochs_in_config(run_dir, 2, drop=("jit_compile",))
    assert "jit_compile" not in json.loads((run_dir / runs.CONFIG_FILE).read_text())

    assert runs.load_config(run_dir).jit_compile is False
    assert runs.run_info(run_dir).jit_compile is False
    assert runs.run_info(run_dir).warnings == ()
    assert train(run_dir, resume=True) == "finished"
    assert (run_dir / runs.LOG_FILE).read_text().count("jit_compile: False") == 2
    assert runs.read_status(run_dir)["step"] == 16


@pytest.mark.parametrize(
    ("gpus", "flags", "expected"),
    [
        ((), {"avx2", "avx512_bf16"}, "mixed_bfloat16"),
        ((), {"amx_bf16", "amx_tile"}, "mixed_bfloat16"),
        ((), {"avx2", "avx512f"}, "float32"),
        (("/physical_device:GPU:0",), {"avx512_bf16"}, "float32"),
    ],
)
def test_auto_precision_choice(gpus, flags, expected):
    assert devices.auto_precision(gpus, frozenset(flags)) == expected


def test_cpu_flags_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\n\nprocessor\t: 1\nflags\t: fpu\n")
    assert devices.cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512_bf16"}
    assert devices.cpu_flags(tmp_path / "missing") == frozenset()


def test_auto_precision_recorded_once_and_kept_on_resume(tmp_path):
    """The first start writes the resolved policy into config.json; a resume reads it back as it is."""
    run_dir = runs.create_run(tmp_path / "auto", tiny_config(epochs=1))
    assert runs.load_config(run_dir).precision == "auto"
    created = runs.created_time(run_dir)
    version = json.loads((run_dir / runs.CONFIG_FILE).read_text())["version"]
    assert train(run_dir) == "finished"
    expected = devices.auto_precision(devices.visible_gpus(), devices.cpu_flags())
    saved = json.loads((run_dir / runs.CONFIG_FILE).read_text())
    assert saved["precision"] == expected
    assert saved["version"] == version
    assert runs.created_time(run_dir) == created
    log = (run_dir / runs.LOG_FILE).read_text()
    assert f"precision auto resolved to {expected}" in log
    generator = load_generator_file(run_dir / runs.GENERATOR_FILE)
    compute = "bfloat16" if expected == "mixed_bfloat16" else "float32"
    assert generator.get_layer("deconv1").compute_dtype == compute

    # A run moved to a machine that would resolve differently keeps its recorded policy.
    other = "float32" if expected == "mixed_bfloat16" else "mixed_bfloat16"
    config = runs.load_config(run_dir)
    runs.rewrite_config(run_dir, replace(config, precision=other, epochs=2))
    assert train(run_dir, resume=True) == "finished"
    assert runs.load_config(run_dir).precision == other
    assert (run_dir / runs.LOG_FILE).read_text().count("precision auto resolved") == 1


# Tolerances of |mirrored - single device| in the first metrics.csv rows.
# The docstring of test_mirrored_strategy_on_two_logical_cpus gives their source.
MIRRORED_TOLERANCES = {"d_real": 0.005, "d_fake": 0.07, "d_loss": 0.25, "g_loss": 0.12}
MIRRORED_SCRIPT = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from gan.config import ConfigError
from gan.train import train
print(train(sys.argv[1]))
try:
    train(sys.argv[2])
except ConfigError as error:
    print(f"ConfigError: {error}")


def stop_after_first_epoch(status):
    if status["epoch"] == 1 and status["state"] == "running":
        signal.raise_signal(signal.SIGTERM)


import signal
print(train(sys.argv[3], on_progress=stop_after_first_epoch))
print(train(sys.argv[3], resume=True))
try:
    train(sys.argv[4])
except ConfigError as error:
    print(f"ConfigError: {error}")
"""


@pytest.mark.skipif(
    bool(tf.config.list_physical_devices("GPU")), reason="with GPUs, strategy mirrored uses them, not CPUs"
)
def test_mirrored_strategy_on_two_logical_cpus(tmp_path, mnist_path):
    """Two replicas on two logical CPUs train like one device of the same seed, within measured tolerances.

    The runs cannot match exactly: each replica draws its own latent noise and normalises its half
    of the batch with its own batch statistics. Over seeds 0 to 5 of this config (float32, one
    metrics.csv row per step), the largest |mirrored - single| was 0.0015 for d_real in steps 1
    to 3, and in step 1 0.034 for d_fake, 0.136 for d_loss and 0.057 for g_loss. The tolerances
    in MIRRORED_TOLERANCES are about twice those. d_real is the sharp check, because it depends
    only on the real batch and the discriminator's weights, and these stay alike while both runs
    update them alike. A run of seed 1, with other initial weights, is 0.34 away in step 1's
    d_real, and the test checks that it falls outside the tolerance.
    """
    settings = dict(epochs=1, precision="float32", log_every_steps=1)
    mirrored_dir = runs.create_run(tmp_path / "mirrored", tiny_config(strategy="mirrored", **settings))
    xla_dir = runs.create_run(
        tmp_path / "mirrored-xla", tiny_config(strategy="mirrored", jit_compile=True, **settings)
    )
    resumed_dir = runs.create_run(tmp_path / "mirrored-resumed", tiny_config(strategy="mirrored", epochs=2))
    # 257 images in batches of 32 leave a last batch of 1 image for 2 replicas.
    uneven_dir = runs.create_run(
        tmp_path / "mirrored-uneven", tiny_config(strategy="mirrored", max_images=257)
    )
    env = {**os.environ, "GAN_MNIST_PATH": str(mnist_path), "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            MIRRORED_SCRIPT,
            *(str(path) for path in (mirrored_dir, xla_dir, resumed_dir, uneven_dir)),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[-5] == "finished"
    assert lines[-4].startswith("ConfigError: jit_compile cannot train with 2 replicas (strategy mirrored)")
    assert runs.read_status(xla_dir)["state"] == "failed"
    # Stopped after epoch 1 and resumed from its checkpoint under the same strategy.
    assert lines[-3:-1] == ["stopped", "finished"]
    # The uneven last batch is refused before the first step, with the numbers and the fix.
    assert lines[-1].startswith("ConfigError: the last batch of every epoch would hold 1 of 257 images")
    assert "a multiple of batch_size 32" in lines[-1]
    uneven = runs.read_status(uneven_dir)
    assert uneven["state"] == "failed"
    assert uneven.get("step", 0) == 0
    assert checkpoints.list_checkpoints(uneven_dir / runs.CHECKPOINTS_DIR) == []
    resumed_log = (resumed_dir / runs.LOG_FILE).read_text()
    assert "resumed from ckpt-8: epoch 1, step 8" in resumed_log
    assert resumed_log.count("MirroredStrategy with 2 replica(s)") == 2
    assert list(pd.read_csv(resumed_dir / runs.EPOCHS_FILE)["epoch"]) == [1, 2]
    assert list(pd.read_csv(resumed_dir / runs.METRICS_FILE)["step"]) == list(range(2, 17, 2))

    log = (mirrored_dir / runs.LOG_FILE).read_text()
    assert "devices: /physical_device:CPU:0, /device:CPU:0, /device:CPU:1" in log
    assert "MirroredStrategy with 2 replica(s) on /job:localhost/replica:0/task:0/device:CPU:0, " in log
    assert len(pd.read_csv(mirrored_dir / runs.EPOCHS_FILE)) == 1
    status = runs.read_status(mirrored_dir)
    assert status["devices"] == ["/physical_device:CPU:0", "/device:CPU:0", "/device:CPU:1"]
    assert status["replica_devices"] == [
        "/job:localhost/replica:0/task:0/device:CPU:0",
        "/job:localhost/replica:0/task:0/device:CPU:1",
    ]

    single_dir = runs.create_run(tmp_path / "single", tiny_config(strategy="default", **settings))
    other_dir = runs.create_run(tmp_path / "other-seed", tiny_config(strategy="default", seed=1, **settings))
    for run_dir in (single_dir, other_dir):
        assert train(run_dir) == "finished"
    status = runs.read_status(single_dir)
    assert status["devices"] == ["/physical_device:CPU:0"]
    assert status["replica_devices"] == ["/device:CPU:0"]

    single = pd.read_csv(single_dir / runs.METRICS_FILE)
    mirrored = pd.read_csv(mirrored_dir / runs.METRICS_FILE)
    other = pd.read_csv(other_dir / runs.METRICS_FILE)
    assert list(mirrored["step"]) == list(single["step"]) == list(range(1, 9))
    for name, tolerance in MIRRORED_TOLERANCES.items():
        difference = abs(mirrored[name][0] - single[name][0])
        assert difference <= tolerance, f"step 1 {name}: |{mirrored[name][0]} - {single[name][0]}|"
    for step in range(3):
        difference = abs(mirrored["d_real"][step] - single["d_real"][step])
        assert difference <= MIRRORED_TOLERANCES["d_real"], f"step {step + 1} d_real differs by {difference}"
    seed_difference = abs(other["d_real"][0] - single["d_real"][0])
    assert seed_difference > MIRRORED_TOLERANCES["d_real"], "seed 1 is within the tolerance of seed 0"


def test_resume_skips_corrupt_newest_checkpoint(tmp_path):
    run_dir = runs.create_run(tmp_path / "run", tiny_config(epochs=1))
    assert train(run_dir) == "finished"
    directory = run_dir / runs.CHECKPOINTS_DIR
    data_file = next(directory.glob("ckpt-8.data-*"))
    data_file.write_bytes(data_file.read_bytes()[:10])
    # Pretend the run stopped after its step-5 checkpoint: one more epoch to go.
    config = json.loads((run_dir / runs.CONFIG_FILE).read_text())
    runs.write_atomic(run_dir / runs.CONFIG_FILE, json.dumps({**config, "epochs": 2}))

    assert train(run_dir, resume=True) == "finished"

    status = runs.read_status(run_dir)
    assert status["step"] == 16
    assert len(status["warnings"]) == 1
    assert status["warnings"][0].startswith("checkpoint ckpt-8 could not be restored")
    log = (run_dir / runs.LOG_FILE).read_text()
    assert "resumed from ckpt-5: epoch 0, step 5" in log
    metrics = pd.read_csv(run_dir / runs.METRICS_FILE)
    assert metrics["step"].is_unique
    assert metrics["step"].is_monotonic_increasing


def test_load_generator_corrupt_checkpoint(finished_run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(finished_run, copy)
    data_file = next((copy / runs.CHECKPOINTS_DIR).glob("ckpt-16.data-*"))
    data_file.write_bytes(b"")
    with pytest.raises(
        checkpoints.CheckpointError, match=r"ckpt-16 could not be read .*choose another checkpoint"
    ):
        load_generator(copy, checkpoint_step=16)
