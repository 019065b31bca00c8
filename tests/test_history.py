"""gan.history: incremental CSV reading, smoothing, downsampling and epoch samples, without Streamlit."""

import io
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from gan import history, runs

HEADER = ",".join(runs.METRICS_COLUMNS) + "\n"


def metrics_line(step: int, d_loss: float = 1.0) -> str:
    return f"{step},1,{d_loss},0.7,0.6,0.4,{1000.0 + step}\n"


def write(path, text: str, mode: str = "w") -> None:
    with open(path, mode) as handle:
        handle.write(text)


def write_csv_fast(path, frame: pd.DataFrame) -> None:
    """Write a CSV history as the trainer does, through Arrow: pandas takes seconds per million rows."""
    import pyarrow
    import pyarrow.csv

    write(path, ",".join(frame.columns) + "\n")
    with open(path, "ab") as handle:
        table = pyarrow.Table.from_pandas(frame, preserve_index=False)
        pyarrow.csv.write_csv(table, handle, pyarrow.csv.WriteOptions(include_header=False))


def tensorboard_smooth(values, weight):
    """TensorBoard's scalar smoothing loop, as a reference."""
    last, count, smoothed = 0.0, 0, []
    for value in values:
        if not np.isfinite(value):
            smoothed.append(value)
            continue
        last = last * weight + (1 - weight) * value
        count += 1
        smoothed.append(last / (1 - weight**count))
    return np.array(smoothed)


# CsvHistory -------------------------------------------------------------------------


def test_history_missing_file_is_empty(tmp_path):
    reader = history.CsvHistory(tmp_path / "metrics.csv")
    assert reader.refresh() == 0
    assert reader.frame.empty


def test_history_ignores_partial_last_line(tmp_path):
    path = tmp_path / "metrics.csv"
    write(path, HEADER + metrics_line(2) + metrics_line(4) + "6,1,0.9")
    reader = history.CsvHistory(path)

    assert reader.refresh() == 2
    assert reader.frame["step"].tolist() == [2, 4]
    assert reader.offset == len((HEADER + metrics_line(2) + metrics_line(4)).encode())

    write(path, ",0.7,0.6,0.4,1006.0\n", "a")
    assert reader.refresh() == 1
    assert reader.frame["step"].tolist() == [2, 4, 6]
    assert reader.frame["d_loss"].tolist() == [1.0, 1.0, 0.9]


def test_history_reads_only_new_bytes(tmp_path):
    path = tmp_path / "metrics.csv"
    write(path, HEADER + metrics_line(2))
    reader = history.CsvHistory(path)
    reader.refresh()
    first_offset = reader.offset
    version = reader.version

    assert reader.refresh() == 0
    assert reader.version == version

    write(path, metrics_line(4), "a")
    assert reader.refresh() == 1
    assert reader.offset == first_offset + len(metrics_line(4))
    assert reader.version > version


def test_history_rereads_replaced_file(tmp_path):
    path = tmp_path / "metrics.csv"
    write(path, HEADER + "".join(metrics_line(step) for step in (2, 4, 6, 8)))
    reader = history.CsvHistory(path)
    reader.refresh()

    # What a resume from a checkpoint at step 4 does: drop the later rows, atomically.
    runs.truncate_history(path, "step", 4)
    reader.refresh()
    assert reader.frame["step"].tolist() == [2, 4]


def test_history_rereads_file_truncated_in_place(tmp_path):
    path = tmp_path / "metrics.csv"
    write(path, HEADER + "".join(metrics_line(step) for step in (2, 4, 6)))
    reader = history.CsvHistory(path)
    reader.refresh()

    with open(path, "r+") as handle:
        handle.truncate(len(HEADER + metrics_line(2)))
    reader.refresh()
    assert reader.frame["step"].tolist() == [2]


def test_history_replayed_steps_replace_old_rows(tmp_path):
    path = tmp_path / "metrics.csv"
    write(path, HEADER + "".join(metrics_line(step, 1.0) for step in (2, 4, 6, 8)))
    reader = history.CsvHistory(path)
    reader.refresh()

    # A resumed trainer appends the steps after its checkpoint again.
    write(path, metrics_line(6, 0.5) + metrics_line(8, 0.5), "a")
    reader.refresh()
    assert reader.frame["step"].tolist() == [2, 4, 6, 8]
    assert reader.frame["d_loss"].tolist() == [1.0, 1.0, 0.5, 0.5]


def test_history_drops_cut_and_bad_rows(tmp_path):
    path = tmp_path / "metrics.csv"
    # A crash cut "6,1,..." short; append_rows then ended the line before the next row.
    write(path, HEADER + metrics_line(4) + "6,1,0.9\n" + metrics_line(8) + "x,1,1,1,1,1,1\n")
    frame = history.read_history(path)
    assert frame["step"].tolist() == [4, 8]


def test_history_keeps_nan_losses(tmp_path):
    path = tmp_path / "metrics.csv"
    write(path, HEADER + "2,1,nan,0.7,0.6,0.4,1000\n")
    frame = history.read_history(path)
    assert frame["step"].tolist() == [2]
    assert np.isnan(frame["d_loss"].iloc[0])


def test_complete_csv_bytes_excludes_partial_line(tmp_path):
    path = tmp_path / "metrics.csv"
    write(path, HEADER + metrics_line(2) + "4,1,0.")
    assert history.complete_csv_bytes(path) == (HEADER + metrics_line(2)).encode()


# Smoothing and downsampling -----------------------------------------------------------


@pytest.mark.parametrize("weight", [0.0, 0.3, 0.6, 0.99])
def test_smooth_matches_tensorboard(weight):
    values = np.random.default_rng(0).normal(size=500)
    values[[10, 200]] = [np.nan, np.inf]
    smoothed = history.smooth(values, weight)
    expected = tensorboard_smooth(values, weight)
    np.testing.assert_allclose(smoothed, expected, rtol=1e-12)


def test_smooth_first_point_is_unbiased():
    assert history.smooth([5.0, 5.0, 5.0], 0.9).tolist() == pytest.approx([5.0, 5.0, 5.0])


def test_smooth_rejects_weight_of_one():
    with pytest.raises(ValueError, match="smoothing weight"):
        history.smooth([1.0], 1.0)


def test_downsample_short_series_unchanged():
    assert history.downsample_indices(np.arange(10.0), 100).tolist() == list(range(10))


def test_downsample_keeps_spikes_and_ends():
    values = np.zeros(100_000)
    values[12_345] = 50.0
    values[67_890] = -50.0
    indices = history.downsample_indices(values, 200)
    assert len(indices) <= 200
    assert 12_345 in indices
    assert 67_890 in indices
    assert indices[0] == 0
    assert indices[-1] == len(values) - 1
    assert np.all(np.diff(indices) > 0)


def test_downsample_ignores_nan_for_extremes():
    values = np.linspace(0, 1, 10_000)
    values[::7] = np.nan
    indices = history.downsample_indices(values, 100)
    assert np.nanmax(values) in values[indices]
    assert np.nanmin(values) in values[indices]


def test_display_frame_of_million_rows(tmp_path):
    count = 1_000_000
    rng = np.random.default_rng(1)
    steps = np.arange(1, count + 1)
    columns = {
        "step": steps,
        "epoch": steps // 1000 + 1,
        "d_loss": rng.normal(1.0, 0.1, count),
        "g_loss": rng.normal(2.0, 0.3, count),
        "d_real": rng.uniform(0.3, 0.9, count),
        "d_fake": rng.uniform(0.1, 0.7, count),
        "wall_time": 1e9 + steps * 0.01,
    }
    # Outliers far inside the file, as a diverging step would leave.
    columns["d_loss"][123_457] = 40.0
    columns["g_loss"][876_543] = -5.0
    path = tmp_path / runs.METRICS_FILE
    write_csv_fast(path, pd.DataFrame(columns))

    metrics = history.read_history(path)
    assert len(metrics) == count
    series = ("d_loss", "g_loss", "d_real", "d_fake")
    frame = history.display_frame({"big": metrics}, series, smoothing=0.6)

    cap = history.DEFAULT_MAX_POINTS
    for name in series:
        for curve in ("raw", "smoothed"):
            drawn = frame[(frame["series"] == name) & (frame["curve"] == curve)]
            assert 0 < len(drawn) <= cap, (name, curve, len(drawn))
        raw = frame[(frame["series"] == name) & (frame["curve"] == "raw")]["value"]
        assert raw.max() == metrics[name].max(), name
        assert raw.min() == metrics[name].min(), name
        smoothed_full = history.smooth(metrics[name].to_numpy(), 0.6)
        drawn_smoothed = frame[(frame["series"] == name) & (frame["curve"] == "smoothed")]["value"]
        assert drawn_smoothed.max() == smoothed_full.max(), name
        assert drawn_smoothed.min() == smoothed_full.min(), name
    assert os.path.getsize(path) > 0  # the file is read, never rewritten


def test_display_frame_of_several_runs():
    first = pd.DataFrame({"step": [1, 2, 3], "d_loss": [1.0, 2.0, 3.0]})
    second = pd.DataFrame({"step": [1, 2], "d_loss": [4.0, 5.0]})
    frame = history.display_frame({"a": first, "b": second}, ["d_loss"])
    assert sorted(frame["run"].unique()) == ["a", "b"]
    assert len(frame[(frame["run"] == "a") & (frame["curve"] == "raw")]) == 3
    assert set(frame.columns) == {"run", "series", "curve", "step", "value"}


def test_display_frame_of_empty_histories():
    frame = history.display_frame({"a": pd.DataFrame()}, ["d_loss"])
    assert frame.empty
    assert "value" in frame.columns


def test_epochs_frame_stacks_runs():
    first = pd.DataFrame({"epoch": [1, 2], "seconds": [3.0, 2.0]})
    second = pd.DataFrame({"epoch": [1], "seconds": [9.0]})
    frame = history.epochs_frame({"a": first, "b": second, "c": pd.DataFrame()})
    assert frame.columns[0] == "run"
    assert frame["run"].tolist() == ["a", "a", "b"]


# Epoch samples --------------------------------------------------------------------------


def write_grid(path, value: int, size: int = 62) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, dtype=np.uint8), mode="L").save(path)


def test_list_epoch_samples_in_epoch_order(tmp_path):
    samples = tmp_path / runs.SAMPLES_DIR
    for epoch in (10, 0, 2):
        write_grid(samples / f"epoch_{epoch:04d}.png", epoch)
    (samples / ".epoch_0003.png.123.tmp").write_bytes(b"partial")
    found = history.list_epoch_samples(tmp_path)
    assert list(found) == [0, 2, 10]
    assert found[2].name == "epoch_0002.png"


def test_list_epoch_samples_without_folder(tmp_path):
    assert history.list_epoch_samples(tmp_path) == {}


@pytest.mark.parametrize(
    ("epochs", "expected"),
    [
        (range(3), [0, 1, 2]),
        (range(21), [0, 5, 10, 15, 20]),
        (range(101), [0, 20, 40, 60, 80, 100]),
        (range(24), [0, 5, 10, 15, 20, 23]),
        (range(1001), [0, 200, 400, 600, 800, 1000]),
    ],
)
def test_default_strip_epochs(epochs, expected):
    assert history.default_strip_epochs(list(epochs)) == expected


def test_epoch_strip_side_by_side():
    grids = {0: np.full((62, 62), 10, np.uint8), 5: np.full((62, 62), 200, np.uint8)}
    strip = history.epoch_strip(grids, gap=6)
    assert strip.dtype == np.uint8
    assert strip.shape[1] == 62 * 2 + 6
    assert strip.shape[0] > 62  # a caption band above the grids
    assert strip[-1, 0] == 10
    assert strip[-1, -1] == 200


def test_epoch_strip_png_decodes(tmp_path):
    for epoch in (0, 1, 2):
        write_grid(tmp_path / runs.SAMPLES_DIR / f"epoch_{epoch:04d}.png", 40 * epoch)
    samples = history.list_epoch_samples(tmp_path)
    with Image.open(io.BytesIO(history.epoch_strip_png(samples, [2, 0]))) as picture:
        assert picture.width == 62 * 2 + 6


def test_epoch_gif_frame_per_epoch(tmp_path):
    for epoch in range(4):
        write_grid(tmp_path / runs.SAMPLES_DIR / f"epoch_{epoch:04d}.png", 60 * epoch)
    samples = history.list_epoch_samples(tmp_path)
    with Image.open(io.BytesIO(history.epoch_gif(samples, scale=1))) as picture:
        assert picture.format == "GIF"
        assert picture.n_frames == 4


def test_epoch_gif_without_samples():
    with pytest.raises(ValueError, match="no sample grids"):
        history.epoch_gif({})


def test_samples_signature_changes_with_grid(tmp_path):
    path = tmp_path / "epoch_0001.png"
    path.write_bytes(b"first")
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    before = history.samples_signature({1: path})
    assert before == ((1, str(path), 1_000_000_000),)
    os.utime(path, ns=(2_000_000_000, 2_000_000_000))
    assert history.samples_signature({1: path}) != before
    assert history.samples_signature({2: tmp_path / "gone.png"}) == ((2, str(tmp_path / "gone.png"), 0),)
