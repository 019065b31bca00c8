"""Real training runs on real MNIST digits: the run folder, checkpoints and devices."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image

from gan import checkpoints, runs
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
    untrained = build_gan(16, 8, None, config.seed, 2e-4, 2e-4, 0.5, 0.999)
    grid = np.asarray(Image.open(finished_run / runs.SAMPLES_DIR / "epoch_0000.png"))
    first_tile = grid[2:30, 2:30]
    expected = generate_images(untrained.generator, [config.sample_seed])[0]
    assert np.array_equal(first_tile, expected)


def test_checkpoint_restores_bit_for_bit(finished_run):
    config = tiny_config()
    latest = checkpoints.list_checkpoints(finished_run / runs.CHECKPOINTS_DIR)[-1]
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
    # Two noise draws per step advance the seed state from its initial [seed, 0].
    assert fresh.seed_generator.state.numpy().tolist() == [config.seed, 32]

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
    metrics = pd.read_csv(run_dir / runs.METRICS_FILE)
    assert np.isfinite(metrics[["d_loss", "g_loss"]].to_numpy()).all()


def test_mirrored_strategy_on_two_logical_cpus(tmp_path, mnist_path):
    run_dir = runs.create_run(tmp_path / "mirrored", tiny_config(epochs=1, strategy="mirrored"))
    script = (
        "import tensorflow as tf, sys\n"
        "cpu = tf.config.list_physical_devices('CPU')[0]\n"
        "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)\n"
        "from gan.train import train\n"
        "print(train(sys.argv[1]))\n"
    )
    env = {**os.environ, "GAN_MNIST_PATH": str(mnist_path), "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", script, str(run_dir)], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("finished")
    log = (run_dir / runs.LOG_FILE).read_text()
    assert "MirroredStrategy with 2 replica(s)" in log
    assert len(pd.read_csv(run_dir / runs.EPOCHS_FILE)) == 1


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
