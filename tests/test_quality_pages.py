"""Sample quality on the pages under AppTest: metric charts, class coverage, alerts, predicted classes.

The run is trained once with an evaluation after every epoch on 64 digits,
so its epochs.csv, alerts.csv, best.json and generator_best.keras come from
the real trainer.
"""

import csv
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow
import pytest
from test_pages import FAST, REPOSITORY, copy_run, messages, open_page, runs_dir
from test_quality_training import old_format_run

from gan import classifier, dashboard, generate, history, runs
from gan.config import TrainConfig

__all__ = ["runs_dir"]  # a fixture, imported for the AppTest sessions

QUALITY = {**FAST, "epochs": 4, "eval_every_epochs": 1, "eval_samples": 64}
# The epoch whose evaluation a copy of the run loses, to check that the charts leave a gap.
MISSED_EPOCH = 3
FLOOR_CAPTION = "The dashed rule is the real-data floor at the latest evaluation"


# Fixtures and helpers -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def quality_run(tmp_path_factory, mnist_path):
    """A finished run of 4 epochs, evaluated on 64 digits after each."""
    from gan.train import train

    # gan.metrics maps the data path to the MNIST classifier through this variable.
    os.environ["GAN_MNIST_PATH"] = str(mnist_path)
    run_dir = runs.create_run(
        tmp_path_factory.mktemp("quality") / "scored", TrainConfig(data=str(mnist_path), **QUALITY)
    )
    assert train(run_dir) == "finished"
    frame = history.read_history(run_dir / runs.EPOCHS_FILE, "epoch")
    assert frame["frechet_distance"].notna().all(), frame
    return run_dir


def epochs_of(run_dir: Path) -> pd.DataFrame:
    return history.read_history(run_dir / runs.EPOCHS_FILE, "epoch").set_index("epoch")


def edit_epochs(run_dir: Path, edit) -> None:
    """Rewrite epochs.csv with ``edit(row)`` applied to each row, a dict of the row's cells as text."""
    path = run_dir / runs.EPOCHS_FILE
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        columns, rows = reader.fieldnames, list(reader)
    for row in rows:
        edit(row)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def miss_evaluation(row: dict) -> None:
    """Empty the quality cells of MISSED_EPOCH, as on an epoch without an evaluation."""
    if int(row["epoch"]) == MISSED_EPOCH:
        for column in runs.EPOCHS_QUALITY_COLUMNS:
            row[column] = ""


def chart_frames(chart) -> list[pd.DataFrame]:
    """Return every dataset of a chart: a layered chart has one per layer with its own data."""
    return [
        pyarrow.ipc.open_stream(dataset.data.data).read_all().to_pandas() for dataset in chart.proto.datasets
    ]


def charts_by_title(at) -> dict[str, object]:
    return {json.loads(chart.proto.spec).get("title"): chart for chart in at.get("vega_lite_chart")}


def frame_with(chart, *columns: str) -> pd.DataFrame:
    """Return the one dataset of a chart that has all ``columns``."""
    found = [frame for frame in chart_frames(chart) if all(column in frame for column in columns)]
    assert len(found) == 1, [list(frame.columns) for frame in chart_frames(chart)]
    return found[0]


# Losses page ---------------------------------------------------------------------------------


def test_quality_charts_values_floors_gaps(runs_dir, quality_run):
    run_dir = copy_run(quality_run, runs_dir, "scored")
    edit_epochs(run_dir, miss_evaluation)
    written = epochs_of(run_dir)
    at = open_page("pages/losses.py", run=str(run_dir))
    charts = charts_by_title(at)

    for metric in history.QUALITY_METRICS:
        if metric.column == "label_accuracy":
            assert metric.title not in charts  # an unconditional run has no label accuracy
            continue
        points = frame_with(charts[metric.title], "value", "line").sort_values("epoch")
        assert points["epoch"].tolist() == [1, 2, 4], metric.column
        expected = written.loc[[1, 2, 4], metric.column].to_numpy()
        np.testing.assert_allclose(points["value"], expected, err_msg=metric.column)
        # Epochs 1 and 2 are one line; the missed epoch 3 breaks it before epoch 4.
        segments = points["segment"].tolist()
        assert segments[0] == segments[1], metric.column
        assert segments[2] != segments[1], metric.column
        if metric.floor_column:
            floors = frame_with(charts[metric.title], "floor")
            assert floors["floor"].tolist() == pytest.approx([written.loc[4, metric.floor_column]])
            assert floors["epoch"].tolist() == [4]

    kid = frame_with(charts[history.QUALITY_METRICS[1].title], "value", "line").sort_values("epoch")
    std_error = written.loc[[1, 2, 4], "kid_std_error"].to_numpy()
    np.testing.assert_allclose(kid["upper"] - kid["value"], std_error, atol=1e-12)
    np.testing.assert_allclose(kid["value"] - kid["lower"], std_error, atol=1e-12)
    assert any(FLOOR_CAPTION in text for text in messages(at, "caption"))


def test_quality_coverage_bars_latest_epoch(runs_dir, quality_run):
    run_dir = copy_run(quality_run, runs_dir, "coverage")
    at = open_page("pages/losses.py", run=str(run_dir))
    chart = charts_by_title(at)["Predicted classes at the latest evaluation"]
    frames = chart_frames(chart)
    bars = next(frame for frame in frames if "run" in frame).sort_values("digit")
    real = next(frame for frame in frames if "run" not in frame).sort_values("digit")

    latest = epochs_of(run_dir).loc[QUALITY["epochs"]]
    assert bars["digit"].tolist() == list(range(10))
    assert set(bars["epoch"]) == {QUALITY["epochs"]}
    np.testing.assert_allclose(bars["share"], [latest[f"share_{digit}"] for digit in range(10)])
    # The real test split's class shares, each near 0.1.
    assert real["digit"].tolist() == list(range(10))
    assert real["share"].sum() == pytest.approx(1.0)
    assert real["share"].between(0.08, 0.12).all(), real
    np.testing.assert_allclose(real["share"], history.real_class_shares("mnist"))


def test_quality_charts_compare_runs(runs_dir, quality_run):
    first = copy_run(quality_run, runs_dir, "first")
    second = copy_run(quality_run, runs_dir, "second")
    edit_epochs(second, lambda row: row.update(label_accuracy="0.5"))
    at = open_page("pages/losses.py", run=str(first))
    at.multiselect(key="losses_compare").set_value([str(second)]).run()
    assert not at.exception, at.exception
    charts = charts_by_title(at)

    frechet = frame_with(charts["Frechet distance"], "value", "line")
    assert set(frechet["run"]) == {"first", "second"}
    assert set(frame_with(charts["Frechet distance"], "floor")["run"]) == {"first", "second"}
    accuracy = frame_with(charts["Label accuracy (conditional models)"], "value", "line")
    assert set(accuracy["run"]) == {"second"}
    assert accuracy["value"].tolist() == [0.5] * QUALITY["epochs"]


def test_quality_alerts_newest_first(runs_dir, quality_run):
    run_dir = copy_run(quality_run, runs_dir, "alerting")
    rows = [
        {
            "step": 8,
            "epoch": 1,
            "kind": "discriminator_wins",
            "message": "d_loss below 0.05",
            "wall_time": 1.0,
        },
        {
            "step": 16,
            "epoch": 2,
            "kind": "mode_collapse",
            "message": "class 8 has 0.9, of 64",
            "wall_time": 2.0,
        },
        {"step": 20, "epoch": 3, "kind": "diverged", "message": "d_loss is nan", "wall_time": 3.0},
    ]
    (run_dir / runs.ALERTS_FILE).unlink(missing_ok=True)
    runs.append_rows(run_dir / runs.ALERTS_FILE, runs.ALERTS_COLUMNS, rows)
    status = json.loads((run_dir / runs.STATUS_FILE).read_text())
    status.update(state="diverged", last_error="losses became non-finite at step 20")
    (run_dir / runs.STATUS_FILE).write_text(json.dumps(status))

    at = open_page("pages/losses.py", run=str(run_dir))
    errors = messages(at, "error")
    assert "Run alerting diverged: losses became non-finite at step 20." in errors[0], errors
    assert "Diverged at step 20, epoch 3: d_loss is nan" in errors, errors
    warnings = messages(at, "warning")
    assert warnings == [
        "Mode collapse at step 16, epoch 2: class 8 has 0.9, of 64",
        "Discriminator wins at step 8, epoch 1: d_loss below 0.05",
    ]
    table = at.dataframe[0].value
    assert table["step"].tolist() == [20, 16, 8]
    assert table["kind"].tolist() == ["diverged", "mode_collapse", "discriminator_wins"]
    assert table["message"].tolist()[1] == "class 8 has 0.9, of 64"


def test_quality_damaged_alerts_file_warns(runs_dir, quality_run):
    run_dir = copy_run(quality_run, runs_dir, "damaged")
    path = run_dir / runs.ALERTS_FILE
    path.write_text(
        "step,epoch,kind,message,wall_time\n"
        "8,1,mode_collapse,one class only,1.0\n"
        "nine,1,mode_collapse,garbage step,1.0\n"
        "16,2,mode_collapse,still one class"  # cut short by a crash: no newline yet
    )
    at = open_page("pages/losses.py", run=str(run_dir))
    warnings = messages(at, "warning")
    assert f"{path}: 1 damaged line is left out" in warnings[0], warnings
    assert "Mode collapse at step 8, epoch 1: one class only" in warnings
    assert not any("still one class" in text for text in warnings)


def test_quality_old_run_shows_note(runs_dir):
    old_run = old_format_run(runs_dir / "old")
    at = open_page("pages/losses.py", run=str(old_run))
    assert any("No sample-quality metrics" in text for text in messages(at, "info"))
    # Losses, discriminator outputs and the two epoch charts only.
    assert len(at.get("vega_lite_chart")) == 5
    assert messages(at, "warning") == []
    assert messages(at, "error") == []


def test_shipped_run_charts_every_epoch_metric(runs_dir):
    shipped = copy_run(REPOSITORY / "assets" / "demo-run", runs_dir, "shipped")
    epochs = pd.read_csv(shipped / runs.EPOCHS_FILE)
    assert epochs["frechet_distance"].notna().all()
    assert len(epochs) == 30
    at = open_page("pages/losses.py", run=str(shipped))
    assert not any("No sample-quality metrics" in text for text in messages(at, "info"))
    assert len(at.get("vega_lite_chart")) > 5
    assert messages(at, "error") == []


# Generate page --------------------------------------------------------------------------------


def npz_arrays(at) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(at.session_state["generate_grid_npz"]())) as arrays:
        return {name: arrays[name] for name in arrays.files}


def test_generate_predictions_match_classifier(runs_dir, quality_run):
    run_dir = copy_run(quality_run, runs_dir, "predicted")
    at = open_page("pages/generate.py", run=str(run_dir))
    at.number_input(key="count").set_value(20).run()
    plain_png = at.session_state["generate_grid_png"]
    assert "generate_predictions" not in at.session_state

    at.checkbox(key="generate_show_predictions").check().run()
    assert not at.exception, at.exception
    table = at.session_state["generate_predictions"]
    arrays = npz_arrays(at)
    _, probabilities = classifier.classify(classifier.load_classifier("mnist"), arrays["images"])
    assert table["seed"].tolist() == arrays["seeds"].tolist() == list(range(20))
    assert table["predicted class"].tolist() == probabilities.argmax(axis=1).tolist()
    np.testing.assert_allclose(table["confidence"], probabilities.max(axis=1))
    assert at.dataframe[0].value["predicted class"].tolist() == table["predicted class"].tolist()
    # The shown image carries the captions; the download stays the plain grid.
    assert at.session_state["generate_grid_png"] == plain_png


def test_generate_sort_by_confidence(runs_dir, quality_run):
    run_dir = copy_run(quality_run, runs_dir, "sorted")
    at = open_page("pages/generate.py", run=str(run_dir))
    at.number_input(key="seed").set_value(5).run()
    at.number_input(key="count").set_value(24).run()
    unsorted = npz_arrays(at)

    at.checkbox(key="generate_sort_by_confidence").check().run()
    assert not at.exception, at.exception
    table = at.session_state["generate_predictions"]
    confidences = table["confidence"].to_numpy()
    assert (np.diff(confidences) <= 0).all(), confidences
    assert sorted(table["seed"]) == list(range(5, 29))
    arrays = npz_arrays(at)
    assert arrays["seeds"].tolist() == table["seed"].tolist()
    # Each digit keeps its pixels under its seed, and the PNG follows the shown order.
    np.testing.assert_array_equal(arrays["images"], unsorted["images"][arrays["seeds"] - 5])
    expected_png = generate.png_bytes(generate.grid_image(arrays["images"], 8))
    assert at.session_state["generate_grid_png"] == expected_png
    assert any("in seed order" in text for text in messages(at, "caption"))


def test_generate_best_generator_first(runs_dir, quality_run):
    run_dir = copy_run(quality_run, runs_dir, "best")
    best = runs.read_best(run_dir)
    assert best is not None
    at = open_page("pages/generate.py", run=str(run_dir))
    checkpoint = at.selectbox(key=f"generate_checkpoint:{run_dir}")
    expected = f"best: epoch {best['epoch']} (Frechet distance {best['frechet_distance']:.2f})"
    assert checkpoint.options[0] == expected
    assert checkpoint.options[1] == "epoch 4, step 32 (latest)"
    assert checkpoint.value == expected
    assert at.query_params["checkpoint"] == "best"
    assert f"--generator {run_dir / runs.BEST_GENERATOR_FILE}" in at.code[0].value

    linked = open_page("pages/generate.py", query={"run": "best", "checkpoint": "best"})
    assert linked.selectbox(key=f"generate_checkpoint:{run_dir}").value == expected
    assert linked.session_state["generate_grid_png"] == at.session_state["generate_grid_png"]


def test_generate_pretrained_metrics_shown(runs_dir, monkeypatch):
    shipped = REPOSITORY / "assets" / "pretrained"
    monkeypatch.setattr(dashboard, "PRETRAINED_GENERATOR", shipped / "generator.keras")
    report = json.loads((shipped / "metrics.json").read_text())
    at = open_page("pages/generate.py")
    assert at.selectbox(key="generate_source").value == "pretrained"
    table = at.table[0].value.set_index("metric")
    assert table.loc["Frechet distance", "generated"] == f"{report['generated']['frechet_distance']:.3f}"
    assert table.loc["Frechet distance", "real-data floor"] == f"{report['floor']['frechet_distance']:.3f}"
    assert table.loc["confidence", "real-data floor"] == f"{report['floor']['confidence']:.3f}"
    assert "label accuracy" not in table.index


def test_generate_damaged_pretrained_metrics(runs_dir, tmp_path, monkeypatch):
    folder = tmp_path / "pretrained"
    folder.mkdir()
    shutil.copy(REPOSITORY / "assets" / "pretrained" / "generator.keras", folder)
    (folder / "metrics.json").write_text('{"generated": {"frechet_distance": 1')
    monkeypatch.setattr(dashboard, "PRETRAINED_GENERATOR", folder / "generator.keras")
    at = open_page("pages/generate.py")
    assert any("is not a readable JSON report" in text for text in messages(at, "info"))
    assert "generate_grid_png" in at.session_state


def test_generate_predictions_need_classifier(runs_dir, quality_run, tmp_path, mnist_path):
    run_dir = copy_run(quality_run, runs_dir, "other-data")
    # Another copy of the digits: a path that no shipped classifier is known to fit.
    other_data = tmp_path / "digits.npz"
    shutil.copy(mnist_path, other_data)
    config = json.loads((run_dir / runs.CONFIG_FILE).read_text())
    config["data"] = str(other_data)
    (run_dir / runs.CONFIG_FILE).write_text(json.dumps(config))

    at = open_page("pages/generate.py", run=str(run_dir))
    assert at.checkbox(key="generate_show_predictions").disabled
    assert at.checkbox(key="generate_sort_by_confidence").disabled
    assert any(
        "shipped classifiers exist for mnist and fashion_mnist" in text for text in messages(at, "caption")
    )
    assert "generate_grid_png" in at.session_state


# Train page -----------------------------------------------------------------------------------


def test_train_form_has_quality_fields(runs_dir):
    at = open_page("pages/train.py")
    assert at.number_input(key="train_eval_every_epochs").value == 1
    assert at.number_input(key="train_eval_samples").value == 2000
    assert at.text_input(key="train_alert_d_loss_below").value == "0.05"
    assert "**Quality metrics and alerts**" in [text.value for text in at.markdown]
