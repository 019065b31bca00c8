"""Quality metrics, alerts and the best generator of real training runs on real MNIST digits."""

import csv
import io
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from test_train import tiny_config as train_tiny_config

from gan import checkpoints, cli, history, metrics, runs
from gan.config import GROUPS, ConfigError, TrainConfig, field_group
from gan.faults import NAN_LOSS_VARIABLE
from gan.generate import load_generator_file
from gan.model import DCGAN
from gan.train import Trainer, mode_collapse_reasons, train

REPO = Path(__file__).resolve().parents[1]
QUALITY_CELLS = [column for column in runs.EPOCHS_QUALITY_COLUMNS if column != "label_accuracy"]
# Thresholds that every tiny run crosses: its d_loss is always below 100.
TRIGGERING = {"alert_d_loss_below": 100.0, "alert_d_loss_steps": 3, "alert_max_class_share": 0.0001}


def tiny_config(**changes) -> TrainConfig:
    """256 digits in 8 steps per epoch, with metrics of 64 digits after every epoch."""
    quality = {"checkpoints_kept": 10, "eval_every_epochs": 1, "eval_samples": 64}
    return train_tiny_config(**{**quality, **changes})


def raw_rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def status_output(run_dir: Path, capsys) -> str:
    capsys.readouterr()
    assert cli.main(["status", "--run-dir", str(run_dir)]) == 0
    return capsys.readouterr().out


@pytest.fixture(autouse=True)
def local_mnist(mnist_path, monkeypatch):
    monkeypatch.setenv("GAN_MNIST_PATH", str(mnist_path))


@pytest.fixture(scope="module")
def module_mnist(mnist_path):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GAN_MNIST_PATH", str(mnist_path))
        yield


@pytest.fixture(scope="module")
def metrics_run(tmp_path_factory, module_mnist):
    """A finished 3-epoch run with metrics after every epoch and the default alert thresholds."""
    run_dir = runs.create_run(tmp_path_factory.mktemp("runs") / "metrics", tiny_config(epochs=3))
    assert train(run_dir) == "finished"
    return run_dir


@pytest.fixture(scope="module")
def alerting_run(tmp_path_factory, module_mnist):
    """A finished 2-epoch run whose alert thresholds are set to fire."""
    run_dir = runs.create_run(tmp_path_factory.mktemp("runs") / "alerting", tiny_config(**TRIGGERING))
    assert train(run_dir) == "finished"
    return run_dir


# Config ---------------------------------------------------------------------------------------


def test_quality_fields_in_their_group():
    assert "quality" in GROUPS
    config = TrainConfig()
    for name in ("eval_every_epochs", "eval_samples", "alert_d_loss_below", "alert_d_loss_steps"):
        assert field_group(name) == "quality", name
    assert field_group("alert_max_class_share") == "quality"
    assert field_group("alert_min_diversity_ratio") == "quality"
    assert config.eval_every_epochs == 1
    assert config.eval_samples == 2000


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"eval_every_epochs": -1}, "eval_every_epochs must be an integer from 0 to 100000"),
        ({"eval_samples": 1}, "eval_samples must be an integer from 2 to 10000"),
        ({"eval_samples": 10_001}, "eval_samples must be an integer from 2 to 10000"),
        ({"alert_d_loss_steps": 0}, "alert_d_loss_steps must be an integer from 1"),
        ({"alert_d_loss_below": -0.1}, "alert_d_loss_below must be a number from 0 to 1000"),
        ({"alert_d_loss_below": math.nan}, "alert_d_loss_below must be a number from 0 to 1000, got nan"),
        ({"alert_max_class_share": 1.5}, "alert_max_class_share must be a number from 0 to 1"),
        ({"alert_min_diversity_ratio": math.inf}, "alert_min_diversity_ratio must be a number from 0 to 1"),
    ],
)
def test_quality_field_out_of_range_rejected(changes, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**changes).validate()


# Metrics and the best generator ------------------------------------------------------------------


def test_metric_columns_written_every_epoch(metrics_run):
    epochs = pd.read_csv(metrics_run / runs.EPOCHS_FILE)
    assert tuple(epochs.columns) == runs.EPOCHS_COLUMNS
    assert list(epochs["epoch"]) == [1, 2, 3]
    assert epochs[QUALITY_CELLS].notna().all().all()
    assert epochs["label_accuracy"].isna().all()  # an unconditional model has no requested classes
    shares = epochs[[f"share_{digit}" for digit in range(10)]].sum(axis=1)
    assert np.allclose(shares, 1.0, atol=1e-4)
    assert epochs["frechet_floor"].nunique() == 1  # the floor is computed once per process
    assert (epochs["frechet_distance"] > epochs["frechet_floor"]).all()


def test_one_quality_log_line_per_epoch(metrics_run):
    log = (metrics_run / runs.LOG_FILE).read_text()
    for epoch in (1, 2, 3):
        assert log.count(f"epoch {epoch} quality: Frechet distance ") == 1
    assert "real-data floor" in log


def test_best_json_names_lowest_frechet_epoch(metrics_run):
    epochs = pd.read_csv(metrics_run / runs.EPOCHS_FILE)
    lowest = epochs.loc[epochs["frechet_distance"].idxmin()]
    best = runs.read_best(metrics_run)
    assert best is not None
    assert best["epoch"] == lowest["epoch"]
    assert best["step"] == lowest["step"]
    assert best["frechet_distance"] == pytest.approx(lowest["frechet_distance"])
    assert best["file"] == runs.BEST_GENERATOR_FILE


def test_best_generator_loads_and_scores_as_recorded(metrics_run):
    generator = load_generator_file(metrics_run / runs.BEST_GENERATOR_FILE)
    report = metrics.evaluate_generator(generator, "mnist", 64, seed=0)
    best = runs.read_best(metrics_run)
    assert report.generated.frechet_distance == pytest.approx(best["frechet_distance"], rel=1e-4)


def test_status_prints_best_epoch(metrics_run, capsys):
    best = runs.read_best(metrics_run)
    output = status_output(metrics_run, capsys)
    assert f"best: epoch {best['epoch']}, step {best['step']}, Frechet distance " in output
    assert f"{best['frechet_distance']:.3f}" in output


def test_eval_off_leaves_metric_cells_empty(tmp_path):
    run_dir = runs.create_run(tmp_path / "off", tiny_config(eval_every_epochs=0))
    assert train(run_dir) == "finished"
    rows = raw_rows(run_dir / runs.EPOCHS_FILE)
    assert [row["epoch"] for row in rows] == ["1", "2"]
    for row in rows:
        assert all(row[column] == "" for column in runs.EPOCHS_QUALITY_COLUMNS), row
    assert not (run_dir / runs.BEST_FILE).exists()
    assert not (run_dir / runs.BEST_GENERATOR_FILE).exists()
    assert "quality:" not in (run_dir / runs.LOG_FILE).read_text()


def test_eval_every_second_epoch(tmp_path):
    run_dir = runs.create_run(tmp_path / "second", tiny_config(epochs=4, eval_every_epochs=2))
    assert train(run_dir) == "finished"
    epochs = pd.read_csv(run_dir / runs.EPOCHS_FILE)
    evaluated = epochs.loc[epochs["frechet_distance"].notna(), "epoch"]
    assert list(evaluated) == [2, 4]
    assert runs.read_best(run_dir)["epoch"] in (2, 4)


def test_data_without_classifier_skips_metrics(tmp_path, mnist_path):
    with np.load(mnist_path) as source:
        subset = {name: source[name][:256] for name in ("x_train", "y_train", "x_test", "y_test")}
    data_path = tmp_path / "digits.npz"
    np.savez(data_path, **subset)
    run_dir = runs.create_run(tmp_path / "unknown", tiny_config(data=str(data_path), epochs=1))
    assert train(run_dir) == "finished"
    log = (run_dir / runs.LOG_FILE).read_text()
    assert log.count("quality metrics are off: data") == 1
    assert all(row["frechet_distance"] == "" for row in raw_rows(run_dir / runs.EPOCHS_FILE))
    assert runs.read_best(run_dir) is None


def test_conditional_run_records_label_accuracy(tmp_path):
    run_dir = runs.create_run(tmp_path / "classes", tiny_config(model="conditional", epochs=1))
    assert train(run_dir) == "finished"
    epochs = pd.read_csv(run_dir / runs.EPOCHS_FILE)
    assert epochs["label_accuracy"].between(0, 1).all()


# Alerts ---------------------------------------------------------------------------------------


def test_alerts_fire_on_triggering_thresholds(alerting_run):
    rows = raw_rows(alerting_run / runs.ALERTS_FILE)
    assert (alerting_run / runs.ALERTS_FILE).read_text().startswith("step,epoch,kind,message,wall_time\n")
    wins = [row for row in rows if row["kind"] == "discriminator_wins"]
    collapse = [row for row in rows if row["kind"] == "mode_collapse"]
    # d_loss never rises above 100, so the streak never ends: one alert, at its third step.
    assert [(row["step"], row["epoch"]) for row in wins] == [("3", "1")]
    assert "d_loss stayed below 100 for 3 consecutive steps" in wins[0]["message"]
    assert [(row["step"], row["epoch"]) for row in collapse] == [("8", "1"), ("16", "2")]
    assert "above alert_max_class_share 0.0001" in collapse[0]["message"]


def test_alerts_in_status_json_and_log(alerting_run, capsys):
    status = json.loads((alerting_run / runs.STATUS_FILE).read_text())
    kinds = [alert["kind"] for alert in status["alerts"]]
    assert kinds == ["discriminator_wins", "mode_collapse", "mode_collapse"]
    assert set(status["alerts"][0]) == set(runs.ALERTS_COLUMNS)
    log = (alerting_run / runs.LOG_FILE).read_text()
    assert log.count("WARNING gan.train: alert ") == 3
    output = status_output(alerting_run, capsys)
    assert "alert: discriminator_wins at epoch 1, step 3: d_loss stayed below 100" in output
    assert output.count("alert: mode_collapse") == 2


def test_discriminator_alert_silent_on_defaults(metrics_run):
    rows = raw_rows(metrics_run / runs.ALERTS_FILE) if (metrics_run / runs.ALERTS_FILE).exists() else []
    assert [row for row in rows if row["kind"] != "mode_collapse"] == []


def test_untrained_generator_reads_as_collapsed(metrics_run):
    # After 8 to 24 steps the generator draws nearly the same blob from every seed,
    # so the default thresholds report it: this is why a tiny run alerts on mode collapse.
    rows = raw_rows(metrics_run / runs.ALERTS_FILE)
    assert {row["kind"] for row in rows} == {"mode_collapse"}
    epochs = pd.read_csv(metrics_run / runs.EPOCHS_FILE)
    assert (epochs["diversity"] < 0.5 * epochs["diversity_floor"]).all()


def test_trained_generator_passes_default_collapse_thresholds():
    generator = load_generator_file(REPO / "assets" / "pretrained" / "generator.keras")
    report = metrics.evaluate_generator(generator, "mnist", 500, seed=0)
    assert mode_collapse_reasons(report, TrainConfig()) == []
    assert mode_collapse_reasons(report, TrainConfig(alert_max_class_share=0.0001))


# Divergence -----------------------------------------------------------------------------------


def nan_losses_from(step: int):
    """Return a DCGAN.train_step that reports NaN losses from run step ``step`` on."""
    original = DCGAN.train_step

    def train_step(self, data):
        results = original(self, data)
        # The optimizer's iteration count after this step's update is the run's step.
        diverged = self.d_optimizer.iterations >= step
        for name in ("d_loss", "g_loss"):
            value = results[name]
            results[name] = tf.where(diverged, tf.constant(math.nan, value.dtype), value)
        return results

    return train_step


def test_nan_loss_stops_run_as_diverged(tmp_path, monkeypatch, capsys):
    run_dir = runs.create_run(tmp_path / "nan", tiny_config(eval_every_epochs=0))
    original_train_step = DCGAN.train_step
    monkeypatch.setattr(DCGAN, "train_step", nan_losses_from(7))
    assert train(run_dir) == "diverged"

    status = runs.read_status(run_dir)
    assert status["state"] == "diverged"
    assert status["step"] == 6
    assert "training diverged at step 7 (epoch 1): d_loss nan, g_loss nan" in status["last_error"]
    assert "The last good checkpoint is ckpt-5 (epoch 0, step 5)" in status["last_error"]
    assert "Lower generator_lr and discriminator_lr" in status["last_error"]
    assert "resume this run to retry from ckpt-5" in status["last_error"]
    assert [info.step for info in checkpoints.list_checkpoints(run_dir / runs.CHECKPOINTS_DIR)] == [5]
    assert not (run_dir / runs.GENERATOR_FILE).exists()  # no epoch ended, so nothing was exported
    assert max(int(row["step"]) for row in raw_rows(run_dir / runs.METRICS_FILE)) <= 6
    alerts = raw_rows(run_dir / runs.ALERTS_FILE)
    assert [(row["step"], row["kind"]) for row in alerts] == [("7", "diverged")]
    assert [alert["kind"] for alert in status["alerts"]] == ["diverged"]
    assert "diverged" in runs.RESUMABLE_STATES
    assert "alert: diverged at epoch 1, step 7" in status_output(run_dir, capsys)

    # Resuming retries from ckpt-5 and drops the alert of the replayed step 7.
    monkeypatch.setattr(DCGAN, "train_step", original_train_step)
    kept_at_restore = []
    setup_quality = Trainer._setup_quality

    def record_alerts(trainer):
        kept_at_restore.extend(raw_rows(trainer.run_dir / runs.ALERTS_FILE))
        setup_quality(trainer)

    monkeypatch.setattr(Trainer, "_setup_quality", record_alerts)
    assert train(run_dir, resume=True) == "finished"
    assert kept_at_restore == []
    assert raw_rows(run_dir / runs.ALERTS_FILE) == []


def test_cli_train_exits_1_on_nan_loss(tmp_path, mnist_path):
    run_dir = tmp_path / "nan-cli"
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "GAN_MNIST_PATH": str(mnist_path),
        "PYTHONPATH": str(REPO),
        NAN_LOSS_VARIABLE: "3",
    }
    flags = ["--max-images", "256", "--batch-size", "32", "--epochs", "1", "--width", "8"]
    flags += ["--latent-dim", "16", "--sample-count", "16", "--eval-every-epochs", "0"]
    result = subprocess.run(
        [sys.executable, "-m", "gan", "train", "--run-dir", str(run_dir), *flags],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr
    assert "error: training diverged at step 3 (epoch 1): d_loss nan, g_loss nan" in result.stderr
    assert "No checkpoint was written before it." in result.stderr
    assert "resume this run to start it again from step 0" in result.stderr
    assert "Traceback" not in result.stderr
    assert runs.read_status(run_dir)["state"] == "diverged"
    assert checkpoints.list_checkpoints(run_dir / runs.CHECKPOINTS_DIR) == []


# Resume ---------------------------------------------------------------------------------------


def test_resume_drops_replayed_best_and_alerts(alerting_run, tmp_path):
    run_dir = shutil.copytree(alerting_run, tmp_path / "resumed", ignore=shutil.ignore_patterns("*.lock"))
    assert runs.read_best(run_dir)["epoch"] >= 1
    # A crash after step 5 leaves ckpt-5 as the newest complete checkpoint: later markers are gone.
    for info in checkpoints.list_checkpoints(run_dir / runs.CHECKPOINTS_DIR):
        if info.step > 5:
            info.path.with_name(f"{info.name}.json").unlink()
    at_restore = {}
    setup_quality = Trainer._setup_quality

    def record_files(trainer):
        at_restore["best"] = (trainer.run_dir / runs.BEST_FILE).exists()
        at_restore["generator"] = (trainer.run_dir / runs.BEST_GENERATOR_FILE).exists()
        at_restore["alert steps"] = [row["step"] for row in raw_rows(trainer.run_dir / runs.ALERTS_FILE)]
        setup_quality(trainer)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Trainer, "_setup_quality", record_files)
        assert train(run_dir, resume=True) == "finished"

    assert at_restore == {"best": False, "generator": False, "alert steps": ["3"]}
    log = (run_dir / runs.LOG_FILE).read_text()
    assert "resumed from ckpt-5: epoch 0, step 5" in log
    assert "removed best.json of epoch" in log
    # The replayed epochs are evaluated again, and best.json follows them.
    epochs = pd.read_csv(run_dir / runs.EPOCHS_FILE)
    assert list(epochs["epoch"]) == [1, 2]
    assert runs.read_best(run_dir)["epoch"] == epochs.loc[epochs["frechet_distance"].idxmin(), "epoch"]


def old_format_run(run_dir: Path) -> Path:
    """Copy the shipped run to ``run_dir`` as a run from before the quality metrics.

    Such a run has no quality fields in config.json, no metric columns in
    epochs.csv, and no best.json or alerts.csv.
    """
    shutil.copytree(REPO / "assets" / "demo-run", run_dir)
    config = json.loads((run_dir / runs.CONFIG_FILE).read_text())
    quality_fields = {name for name in TrainConfig.__dataclass_fields__ if field_group(name) == "quality"}
    old_config = {name: value for name, value in config.items() if name not in quality_fields}
    (run_dir / runs.CONFIG_FILE).write_text(json.dumps(old_config, indent=2))
    epochs = pd.read_csv(run_dir / runs.EPOCHS_FILE)
    epochs[list(runs.EPOCHS_REQUIRED_COLUMNS)].to_csv(run_dir / runs.EPOCHS_FILE, index=False)
    for name in (runs.BEST_FILE, runs.ALERTS_FILE, runs.BEST_GENERATOR_FILE):
        (run_dir / name).unlink()
    return run_dir


def test_old_run_folder_reads_resumes_and_appends(tmp_path):
    run_dir = old_format_run(tmp_path / "old")
    old_header = (run_dir / runs.EPOCHS_FILE).read_text().splitlines()[0]
    assert old_header == ",".join(runs.EPOCHS_REQUIRED_COLUMNS)
    assert len(history.read_history(run_dir / runs.EPOCHS_FILE, key="epoch")) == 30

    # The old config.json has no quality fields. The run is shrunk so that it trains in
    # seconds, and eval_samples keeps its evaluation small.
    config = json.loads((run_dir / runs.CONFIG_FILE).read_text())
    assert "eval_every_epochs" not in config
    small = {"max_images": 256, "batch_size": 32, "width": 8, "latent_dim": 16, "sample_count": 16}
    config.update(small, epochs=2, checkpoint_every_steps=5, eval_samples=64)
    (run_dir / runs.CONFIG_FILE).write_text(json.dumps(config))
    assert train(run_dir, resume=True) == "finished"  # no checkpoint: epochs 1 and 2 again

    best = runs.read_best(run_dir)
    best_generator = (run_dir / runs.BEST_GENERATOR_FILE).read_bytes()
    config["epochs"] = 3
    (run_dir / runs.CONFIG_FILE).write_text(json.dumps(config))
    assert train(run_dir, resume=True) == "finished"  # from the checkpoint of epoch 2

    lines = (run_dir / runs.EPOCHS_FILE).read_text().splitlines()
    assert lines[0] == old_header
    assert [line.count(",") for line in lines] == [len(runs.EPOCHS_REQUIRED_COLUMNS) - 1] * 4
    epochs = history.read_history(run_dir / runs.EPOCHS_FILE, key="epoch")
    assert list(epochs["epoch"]) == [1, 2, 3]
    assert list(epochs["step"]) == [8, 16, 24]
    log = (run_dir / runs.LOG_FILE).read_text()
    assert "resumed from ckpt-16: epoch 2, step 16" in log
    assert "has the header of a run from before the quality metrics" in log
    # The metrics still choose the best generator, and the resume kept the best of epoch 1 or 2.
    assert best["epoch"] in (1, 2)
    if "epoch 3 quality" in log and runs.read_best(run_dir)["epoch"] == 3:
        assert runs.read_best(run_dir)["frechet_distance"] < best["frechet_distance"]
    else:
        assert runs.read_best(run_dir) == best
        assert (run_dir / runs.BEST_GENERATOR_FILE).read_bytes() == best_generator


def test_read_best_copes_with_missing_and_damaged(tmp_path):
    assert runs.read_best(tmp_path) is None
    path = tmp_path / runs.BEST_FILE
    for text in ("", "{", "[]", '{"epoch": "3", "step": 8, "frechet_distance": 1.0}', "\xff"):
        path.write_text(text)
        assert runs.read_best(tmp_path) is None, text
    path.write_text(json.dumps({"epoch": 1, "step": 8, "frechet_distance": math.nan, "file": "x"}))
    assert runs.read_best(tmp_path) is None
    valid = {"epoch": 1, "step": 8, "frechet_distance": 9.5, "file": runs.BEST_GENERATOR_FILE}
    path.write_text(json.dumps(valid))
    assert runs.read_best(tmp_path) == valid
