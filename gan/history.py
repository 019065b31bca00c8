"""Loss histories and epoch samples of runs, prepared for display.

A trainer appends to ``metrics.csv`` and ``epochs.csv`` while pages read
them, so ``CsvHistory`` reads only the complete lines added since its last
read and copes with a file that a resumed trainer has rewritten. The display
helpers smooth a series as TensorBoard does and reduce it to a few thousand
points that keep its shape, so a history of millions of rows stays
responsive. The source files are never modified.
"""

from __future__ import annotations

import csv
import functools
import io
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from gan import runs
from gan.errors import InputError
from gan.generate import gif_bytes, png_bytes

log = logging.getLogger(__name__)

# Points per drawn curve: enough for a smooth line a screen wide, few enough
# that Vega-Lite redraws a chart of several runs at once without lag.
DEFAULT_MAX_POINTS = 2000

LOSS_SERIES = ("d_loss", "g_loss")
DISCRIMINATOR_SERIES = ("d_real", "d_fake")
EPOCH_SERIES = ("seconds", "images_per_second")

_SAMPLE_NAME = re.compile(r"^epoch_(\d+)\.png$")
# epochs.csv of runs trained before the quality metrics existed has only the required columns.
_STANDARD_COLUMNS = {runs.METRICS_FILE: runs.METRICS_COLUMNS, runs.EPOCHS_FILE: runs.EPOCHS_REQUIRED_COLUMNS}
# The columns of a history's frame before a valid header is read: all the columns a trainer writes now.
_EMPTY_FRAME_COLUMNS = {runs.METRICS_FILE: runs.METRICS_COLUMNS, runs.EPOCHS_FILE: runs.EPOCHS_COLUMNS}
# Cells that parse as NaN on purpose: the trainer writes "nan" for a diverged loss.
_NAN_CELLS = ("", "nan", "-nan", "+nan")
# Exceptions that Pillow raises for a file that is not a complete PNG. UnidentifiedImageError
# and "image file is truncated" are OSErrors, and a broken chunk raises SyntaxError.
_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


class HistoryError(InputError):
    """A CSV history or sample grid that cannot be read; the message names the file."""


# Incremental reading ----------------------------------------------------------


class CsvHistory:
    """The complete rows of a CSV history that a trainer appends to, read incrementally.

    ``refresh()`` parses only the bytes added since the previous call, from
    the offset that ``runs.read_complete_lines`` returns, so a partial last
    line is left for the next call. ``key`` is the column that grows with
    every row (``step`` or ``epoch``). A resumed trainer replays the steps
    after its checkpoint: rows whose key is at or below a key already read
    replace the rows from that key on.

    ``expected`` lists the columns the header must contain; by default those
    of ``metrics.csv`` or ``epochs.csv`` for files of those names. A file
    whose header lacks one of them gives no rows, and ``warnings()`` says
    why, as it does for an empty file and for damaged lines that were left out.
    """

    def __init__(self, path: str | Path, key: str = "step", expected: Sequence[str] | None = None):
        self.path = Path(path)
        self.key = key
        if expected is None:
            expected = _STANDARD_COLUMNS.get(self.path.name, ())
        self.expected = tuple(expected)
        self._empty_columns = _EMPTY_FRAME_COLUMNS.get(self.path.name, self.expected)
        self.offset = 0
        self.columns: list[str] | None = None
        # Why the header was rejected; its rows stay unread until the file is replaced.
        self.header_problem: str | None = None
        # Complete lines with a wrong number of fields or a cell that is not a number.
        self.damaged_lines = 0
        self._size = 0
        # Incremented whenever the rows change, so callers can cache what they derive.
        self.version = 0
        self._file_id: tuple[int, int] | None = None
        self._chunks: list[pd.DataFrame] = []
        self._frame: pd.DataFrame | None = None

    @property
    def frame(self) -> pd.DataFrame:
        """All complete rows read so far, with numeric columns."""
        if self._frame is None:
            if self._chunks:
                self._frame = pd.concat(self._chunks, ignore_index=True)
            else:
                self._frame = pd.DataFrame(columns=self.columns or list(self._empty_columns))
            self._chunks = [self._frame]
        return self._frame

    def refresh(self) -> int:
        """Read the rows completed since the last call and return how many there were."""
        for _ in range(3):
            before = _file_identity(self.path)
            if before is None:
                if self.offset:
                    self._reset()
                return 0
            identity, size = before
            self._size = size
            if identity != self._file_id or size < self.offset:
                # A new file, or one that truncate_history replaced: read it from the start.
                self._reset()
                self._file_id = identity
            text, offset = runs.read_complete_lines(self.path, self.offset)
            after = _file_identity(self.path)
            if after is not None and after[0] == identity:
                break
            # The file was replaced while it was read, so what was read may mix two files.
            self._file_id = None
        else:
            return 0
        self.offset = offset
        if self.header_problem is not None:
            return 0
        if self.columns is None:
            header, _, text = text.partition("\n")
            if not header:
                return 0
            columns = header.strip().split(",")
            missing = [column for column in self.expected if column not in columns]
            if missing:
                self.header_problem = (
                    f"{self.path} does not start with the header line {','.join(self.expected)!r} "
                    f"(its first line is {_shorten(header)!r}), so its rows are not shown. "
                    "Put that header line at the top of the file to show them."
                )
                self.version += 1
                return 0
            self.columns = columns
        rows, damaged = parse_rows_counted(text, self.columns)
        if damaged:
            self.damaged_lines += damaged
            self.version += 1
        if rows.empty:
            return 0
        self._append(rows)
        return len(rows)

    def _append(self, rows: pd.DataFrame) -> None:
        frame = self.frame
        if not frame.empty and self.key in rows:
            first = rows[self.key].iloc[0]
            if first <= frame[self.key].iloc[-1]:
                frame = frame[frame[self.key] < first]
        self._chunks = [frame, rows] if not frame.empty else [rows]
        self._frame = None
        self.version += 1

    def warnings(self) -> list[str]:
        """Return what is wrong with the file as read so far, one message per problem, naming the file."""
        if self._file_id is not None and self._size == 0:
            return [f"{self.path} is empty, so it has no header and no rows; the trainer writes both."]
        found = [self.header_problem] if self.header_problem else []
        if self.damaged_lines:
            lines = "line is" if self.damaged_lines == 1 else "lines are"
            found.append(
                f"{self.path}: {self.damaged_lines} damaged {lines} left out "
                "(a wrong number of fields, or a cell that is not a number)."
            )
        return found

    def _reset(self) -> None:
        self.offset = 0
        self.columns = None
        self.header_problem = None
        self.damaged_lines = 0
        self._file_id = None
        self._chunks = []
        self._frame = None
        self.version += 1


def _file_identity(path: Path) -> tuple[tuple[int, int], int] | None:
    """Return the (device, inode) pair and the size of a file, or None when it does not exist."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return (stat.st_dev, stat.st_ino), stat.st_size


def parse_rows(text: str, columns: Sequence[str]) -> pd.DataFrame:
    """Parse complete CSV lines without a header into numeric columns.

    A line with the wrong number of fields is what is left of a row that a
    crash cut short (``append_rows`` ends it before appending), so it is
    dropped. Cells that are not numbers become NaN; rows without a valid
    first column are dropped.
    """
    return parse_rows_counted(text, columns)[0]


def parse_rows_counted(text: str, columns: Sequence[str]) -> tuple[pd.DataFrame, int]:
    """Parse like ``parse_rows``; also return how many non-blank lines were damaged.

    A damaged line has the wrong number of fields or a cell that is neither
    a number nor ``nan`` (the trainer writes ``nan`` for a diverged loss).
    """
    commas = len(columns) - 1
    written = [line for line in text.splitlines() if line.strip()]
    lines = [line for line in written if line.count(",") == commas]
    damaged = len(written) - len(lines)
    if not lines:
        return pd.DataFrame(columns=list(columns), dtype=float), damaged
    text = "\n".join(lines)
    try:
        frame = pd.read_csv(io.StringIO(text), header=None, names=list(columns), dtype=np.float64)
    except ValueError:
        # A cell that is not a number: parse as text and coerce, which is about ten times slower.
        cells = pd.read_csv(
            io.StringIO(text), header=None, names=list(columns), dtype=str, keep_default_na=False
        )
        frame = cells.apply(pd.to_numeric, errors="coerce")
        written_nan = cells.apply(lambda column: column.str.strip().str.lower().isin(_NAN_CELLS))
        damaged += int((frame.isna() & ~written_nan).any(axis=1).sum())
    return frame.dropna(subset=[columns[0]]).reset_index(drop=True), damaged


def _shorten(text: str, length: int = 60) -> str:
    return text if len(text) <= length else text[: length - 3] + "..."


def read_history(path: str | Path, key: str = "step") -> pd.DataFrame:
    """Read every complete row of a CSV history at once.

    Raises HistoryError naming the file when the header of ``metrics.csv``
    or ``epochs.csv`` lacks one of the standard columns. Damaged lines are
    left out, as ``CsvHistory`` does.
    """
    history = CsvHistory(path, key)
    history.refresh()
    if history.header_problem:
        raise HistoryError(history.header_problem)
    return history.frame


def complete_csv_bytes(path: str | Path) -> bytes:
    """Return the complete lines of a CSV history, as a download of the file as it is now."""
    text, _ = runs.read_complete_lines(Path(path), 0)
    return text.encode("utf-8")


# Smoothing and downsampling ------------------------------------------------


def smooth(values: Sequence[float] | np.ndarray, weight: float) -> np.ndarray:
    """Smooth a series with TensorBoard's debiased exponential moving average.

    Point i is ``sum(weight**k * x[i-k]) / sum(weight**k)`` over the finite
    values up to i, so the first points are not pulled towards zero. A
    non-finite value is kept as it is and skipped by the average.
    """
    if not 0 <= weight < 1:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight!r}.")
    series = pd.Series(np.asarray(values, dtype=np.float64))
    if weight == 0 or series.empty:
        return series.to_numpy(copy=True)
    finite = np.isfinite(series.to_numpy())
    # pandas' adjusted ewm is this same weighted mean; alpha is 1 - weight.
    averaged = series.where(finite).ewm(alpha=1 - weight, adjust=True, ignore_na=True).mean()
    return np.where(finite, averaged.to_numpy(), series.to_numpy())


def downsample_indices(
    values: Sequence[float] | np.ndarray, max_points: int = DEFAULT_MAX_POINTS
) -> np.ndarray:
    """Return sorted indices of at most ``max_points`` points that keep a series' shape.

    The series is cut into equal buckets, and each bucket keeps the index of
    its minimum and of its maximum, so spikes survive and the global min and
    max are always kept. The first and last points are kept too.
    """
    if max_points < 4:
        raise ValueError(f"max_points must be at least 4, got {max_points}.")
    values = np.asarray(values, dtype=np.float64)
    count = len(values)
    if count <= max_points:
        return np.arange(count)
    buckets = (max_points - 2) // 2
    size = math.ceil(count / buckets)
    rows = math.ceil(count / size)
    padding = rows * size - count
    # NaN never wins: as +inf it loses the minimum, as -inf it loses the maximum.
    low = np.concatenate([np.where(np.isnan(values), np.inf, values), np.full(padding, np.inf)])
    high = np.concatenate([np.where(np.isnan(values), -np.inf, values), np.full(padding, -np.inf)])
    starts = np.arange(rows) * size
    minima = starts + low.reshape(rows, size).argmin(axis=1)
    maxima = starts + high.reshape(rows, size).argmax(axis=1)
    indices = np.concatenate([[0, count - 1], minima, maxima])
    return np.unique(indices[indices < count])


def display_frame(
    histories: Mapping[str, pd.DataFrame],
    series: Sequence[str],
    *,
    smoothing: float = 0.0,
    max_points: int = DEFAULT_MAX_POINTS,
    x: str = "step",
) -> pd.DataFrame:
    """Build the long-form frame that the loss charts draw, for one run or several.

    ``histories`` maps a run's label to its metrics frame. The result has one
    row per drawn point with columns ``run``, ``series``, ``curve`` (``raw``
    or ``smoothed``), ``x`` and ``value``. Each curve is smoothed at full
    resolution first and then reduced to at most ``max_points`` points.
    """
    parts = []
    for run, frame in histories.items():
        if frame.empty or x not in frame:
            continue
        steps = frame[x].to_numpy()
        for name in series:
            if name not in frame:
                continue
            raw = frame[name].to_numpy(dtype=np.float64)
            for curve, values in (("raw", raw), ("smoothed", smooth(raw, smoothing))):
                indices = downsample_indices(values, max_points)
                parts.append(
                    pd.DataFrame(
                        {
                            "run": run,
                            "series": name,
                            "curve": curve,
                            x: steps[indices],
                            "value": values[indices],
                        }
                    )
                )
    if not parts:
        return pd.DataFrame(columns=["run", "series", "curve", x, "value"])
    return pd.concat(parts, ignore_index=True)


def epochs_frame(histories: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Stack the epochs.csv frames of several runs, with a ``run`` column first."""
    parts = [frame.assign(run=run) for run, frame in histories.items() if not frame.empty]
    if not parts:
        return pd.DataFrame(columns=["run", *runs.EPOCHS_COLUMNS])
    combined = pd.concat(parts, ignore_index=True)
    return combined[["run", *[column for column in combined.columns if column != "run"]]]


# Epoch samples ----------------------------------------------------------------


def list_epoch_samples(run_dir: str | Path) -> dict[int, Path]:
    """Map each epoch with a sample grid (0 is before training) to its PNG, in epoch order."""
    folder = Path(run_dir) / runs.SAMPLES_DIR
    if not folder.is_dir():
        return {}
    found = {}
    for path in folder.iterdir():
        match = _SAMPLE_NAME.match(path.name)
        if match:
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def samples_signature(samples: Mapping[int, Path]) -> tuple[tuple[int, str, int], ...]:
    """Return (epoch, path, modification time in ns) per sample grid, a cache key that changes with a grid."""
    signature = []
    for epoch, path in samples.items():
        try:
            modified = Path(path).stat().st_mtime_ns
        except FileNotFoundError:
            modified = 0
        signature.append((epoch, str(path), modified))
    return tuple(signature)


def default_strip_epochs(epochs: Sequence[int], max_count: int = 6) -> list[int]:
    """Pick epoch 0 (or the first), evenly spaced round epochs and the last, at most ``max_count``.

    The spacing is the smallest of 1, 2, 5, 10, 20, 50, ... that fits, so a
    run of 20 epochs gives 0, 5, 10, 15, 20, like a table of epochs in a
    paper or README.
    """
    available = sorted(set(epochs))
    if len(available) <= max_count:
        return available
    first, last = available[0], available[-1]

    def count_with(spacing: int) -> int:
        # The last epoch gets a slot of its own unless the spacing lands on it.
        return (last - first) // spacing + 1 + ((last - first) % spacing != 0)

    spacing = next(spacing for spacing in _round_spacings() if count_with(spacing) <= max_count)
    targets = set(range(first, last + 1, spacing)) | {last}
    return [epoch for epoch in available if epoch in targets]


def _round_spacings():
    for power in range(18):
        for factor in (1, 2, 5):
            yield factor * 10**power


def read_grid(path: str | Path) -> np.ndarray:
    """Read a sample grid PNG as a uint8 grayscale array; raise HistoryError naming a damaged file."""
    try:
        with Image.open(path) as picture:
            return np.asarray(picture.convert("L"))
    except _IMAGE_ERRORS as error:
        raise HistoryError(f"{path} is not a readable PNG image ({type(error).__name__}: {error}).") from None


def captioned(image: np.ndarray, caption: str, band: int = 14) -> np.ndarray:
    """Return the image with a dark band above it that shows ``caption`` in white."""
    picture = Image.new("L", (image.shape[1], image.shape[0] + band), 0)
    picture.paste(Image.fromarray(image, mode="L"), (0, band))
    ImageDraw.Draw(picture).text((2, 1), caption, fill=255, font=ImageFont.load_default(size=11))
    return np.asarray(picture)


def epoch_strip(grids: Mapping[int, np.ndarray], gap: int = 6) -> np.ndarray:
    """Place the grids of several epochs side by side, each captioned with its epoch."""
    if not grids:
        raise ValueError("an epoch strip needs at least one epoch.")
    tiles = [captioned(grid, f"epoch {epoch}") for epoch, grid in grids.items()]
    height = max(tile.shape[0] for tile in tiles)
    width = sum(tile.shape[1] for tile in tiles) + gap * (len(tiles) - 1)
    strip = np.zeros((height, width), dtype=np.uint8)
    left = 0
    for tile in tiles:
        strip[: tile.shape[0], left : left + tile.shape[1]] = tile
        left += tile.shape[1] + gap
    return strip


def epoch_strip_png(samples: Mapping[int, Path], epochs: Sequence[int]) -> bytes:
    """Encode the captioned strip of the chosen epochs' grids as a PNG."""
    grids = {epoch: read_grid(samples[epoch]) for epoch in sorted(epochs)}
    return png_bytes(epoch_strip(grids))


def epoch_gif(samples: Mapping[int, Path], seconds_per_frame: float = 0.4, scale: int = 2) -> bytes:
    """Animate the sample grids of all epochs, each frame captioned with its epoch, as a looping GIF."""
    if not samples:
        raise ValueError("the run has no sample grids yet.")
    frames = [captioned(read_grid(path), f"epoch {epoch}") for epoch, path in samples.items()]
    height = max(frame.shape[0] for frame in frames)
    width = max(frame.shape[1] for frame in frames)
    # A GIF has one size; a grid of another sample_count is padded, never scaled.
    padded = []
    for frame in frames:
        canvas = np.zeros((height, width), dtype=np.uint8)
        canvas[: frame.shape[0], : frame.shape[1]] = frame
        padded.append(canvas)
    return gif_bytes(padded, seconds_per_frame=seconds_per_frame, scale=scale)


# Sample quality -------------------------------------------------------------------

SHARE_COLUMNS = tuple(f"share_{digit}" for digit in range(10))


@dataclass(frozen=True)
class QualityMetric:
    """A sample-quality column of epochs.csv, with its real-data floor column and chart labels."""

    column: str
    title: str
    y_title: str
    hint: str  # which way is better, shown under the chart
    floor_column: str | None = None  # None: epochs.csv records no floor for this metric
    std_error_column: str | None = None


QUALITY_METRICS = (
    QualityMetric(
        "frechet_distance", "Frechet distance", "Frechet distance", "Lower is better.", "frechet_floor"
    ),
    QualityMetric(
        "kid",
        "Kernel distance (KID), with its standard error",
        "KID",
        "Lower is better; the bars span one standard error over the KID subsets.",
        "kid_floor",
        "kid_std_error",
    ),
    QualityMetric(
        "class_entropy_bits",
        "Entropy of the predicted classes",
        "bits",
        "Higher is better, up to log2(10) = 3.32 bits for 10 equal classes.",
        "class_entropy_floor",
    ),
    QualityMetric(
        "max_class_deviation",
        "Largest class share deviation",
        "max |share - real share|",
        "Lower is better. epochs.csv records no real-data floor for this metric.",
    ),
    QualityMetric(
        "confidence",
        "Classifier confidence",
        "mean top probability",
        "Higher is better: recognisable digits get confident predictions.",
        "confidence_floor",
    ),
    QualityMetric(
        "label_accuracy",
        "Label accuracy (conditional models)",
        "share classified as requested",
        "Higher is better. epochs.csv records no real-data floor for this metric.",
    ),
    QualityMetric(
        "diversity",
        "Pixel diversity",
        "mean RMS pixel difference",
        "Near the floor is best; a drop far below it is a sign of mode collapse.",
        "diversity_floor",
    ),
)


def has_quality_columns(frame: pd.DataFrame) -> bool:
    """Tell whether an epochs.csv frame has any sample-quality column (older runs have none)."""
    return any(metric.column in frame.columns for metric in QUALITY_METRICS)


def evaluation_segments(epochs: Sequence[float]) -> np.ndarray:
    """Number the unbroken stretches of evaluated epochs, in ascending order, from 0.

    Consecutive evaluations farther apart than the run's smallest spacing
    start a new stretch, so a missed evaluation shows as a gap in the line
    while an evaluation every N epochs still draws one line.
    """
    epochs = np.asarray(epochs, dtype=np.float64)
    if len(epochs) < 2:
        return np.zeros(len(epochs), dtype=np.int64)
    spacing = np.diff(epochs)
    return np.concatenate([[0], np.cumsum(spacing > spacing.min())]).astype(np.int64)


def quality_points(histories: Mapping[str, pd.DataFrame], metric: QualityMetric) -> pd.DataFrame:
    """Return one row per run and evaluated epoch of ``metric``: run, epoch, value, lower, upper, segment.

    Epochs without an evaluation (an empty or non-finite cell) have no row,
    so the chart shows a gap there, never a zero. ``lower`` and ``upper``
    are value -/+ the standard error, or the value when there is none.
    """
    parts = []
    for run, frame in histories.items():
        if frame.empty or metric.column not in frame or "epoch" not in frame:
            continue
        values = frame[metric.column].to_numpy(dtype=np.float64)
        evaluated = np.isfinite(values)
        if not evaluated.any():
            continue
        rows = frame.loc[evaluated].sort_values("epoch")
        values = rows[metric.column].to_numpy(dtype=np.float64)
        error = np.zeros(len(rows))
        if metric.std_error_column and metric.std_error_column in rows:
            error = np.nan_to_num(rows[metric.std_error_column].to_numpy(dtype=np.float64), nan=0.0)
        epochs = rows["epoch"].to_numpy(dtype=np.float64)
        parts.append(
            pd.DataFrame(
                {
                    "run": run,
                    "epoch": epochs.astype(np.int64),
                    "value": values,
                    "lower": values - error,
                    "upper": values + error,
                    "segment": evaluation_segments(epochs),
                }
            )
        )
    if not parts:
        return pd.DataFrame(columns=["run", "epoch", "value", "lower", "upper", "segment"])
    return pd.concat(parts, ignore_index=True)


def quality_floors(histories: Mapping[str, pd.DataFrame], metric: QualityMetric) -> pd.DataFrame:
    """Return each run's real-data floor of ``metric`` at its latest evaluated epoch: run, epoch, floor.

    A run without a finite floor at that epoch, or a metric without a floor
    column, has no row.
    """
    rows = []
    column = metric.floor_column
    for run, frame in histories.items():
        if column is None or frame.empty or column not in frame or metric.column not in frame:
            continue
        evaluated = frame[np.isfinite(frame[metric.column].to_numpy(dtype=np.float64))]
        if evaluated.empty:
            continue
        latest = evaluated.loc[evaluated["epoch"].idxmax()]
        floor = float(latest[column])
        if math.isfinite(floor):
            rows.append({"run": run, "epoch": int(latest["epoch"]), "floor": floor})
    return pd.DataFrame(rows, columns=["run", "epoch", "floor"])


def class_coverage_frame(histories: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Return the predicted class shares of each run's latest epoch that has all 10 of them.

    Columns: run, epoch, digit, share.
    """
    rows = []
    for run, frame in histories.items():
        if frame.empty or not all(column in frame for column in SHARE_COLUMNS):
            continue
        shares = frame[list(SHARE_COLUMNS)].to_numpy(dtype=np.float64)
        complete = np.isfinite(shares).all(axis=1)
        if not complete.any():
            continue
        candidates = frame.loc[complete]
        position = int(np.argmax(candidates["epoch"].to_numpy()))
        epoch = int(candidates["epoch"].iloc[position])
        for digit, share in enumerate(shares[complete][position]):
            rows.append({"run": run, "epoch": epoch, "digit": digit, "share": float(share)})
    return pd.DataFrame(rows, columns=["run", "epoch", "digit", "share"])


def real_class_shares(dataset: str) -> np.ndarray | None:
    """Return the class shares of the test split of a classifier dataset, or None when it cannot be read.

    These are the shares that ``max_class_deviation`` compares with. Loading
    the split imports TensorFlow, so the result is cached per dataset and
    data path.
    """
    return _real_class_shares(dataset, os.environ.get("GAN_MNIST_PATH"))


@functools.lru_cache(maxsize=4)
def _real_class_shares(dataset: str, mnist_path: str | None) -> np.ndarray | None:
    from gan import classifier, data, metrics

    try:
        labels = data.load_images(classifier.data_source(dataset), split="test").labels
    except (InputError, OSError, ValueError) as error:
        log.warning("reading the %s test labels for the class shares failed: %s", dataset, error)
        return None
    return metrics.class_shares(labels, classifier.NUM_CLASSES)


# Alerts ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Alert:
    """A row of a run's alerts.csv."""

    step: int
    epoch: int
    kind: str  # one of runs.ALERT_KINDS
    message: str
    wall_time: float | None


def read_alerts(run_dir: str | Path) -> tuple[list[Alert], list[str]]:
    """Read a run's alerts.csv, newest first, with warnings about a damaged file.

    A missing file means no alerts. A header without the alert columns gives
    no alerts and a warning, and a row whose step or epoch is not an integer,
    or that has the wrong number of fields, is left out and counted.
    """
    path = Path(run_dir) / runs.ALERTS_FILE
    try:
        text, _ = runs.read_complete_lines(path, 0)
    except FileNotFoundError:
        return [], []
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return [], []
    header = [cell.strip() for cell in rows[0]]
    missing = [column for column in runs.ALERTS_COLUMNS if column not in header]
    if missing:
        return [], [
            f"{path} does not start with the header line {','.join(runs.ALERTS_COLUMNS)!r} "
            f"(its first line is {_shorten(','.join(rows[0]))!r}), so its alerts are not shown."
        ]
    index = {column: header.index(column) for column in runs.ALERTS_COLUMNS}
    alerts, damaged = [], 0
    for row in rows[1:]:
        if not any(cell.strip() for cell in row):
            continue
        try:
            if len(row) != len(header):
                raise ValueError(f"{len(row)} fields")
            wall_time = row[index["wall_time"]].strip()
            alerts.append(
                Alert(
                    step=int(row[index["step"]]),
                    epoch=int(row[index["epoch"]]),
                    kind=row[index["kind"]].strip(),
                    message=row[index["message"]],
                    wall_time=float(wall_time) if wall_time else None,
                )
            )
        except ValueError:
            damaged += 1
    # Newest first: by step, then by the time it was written; sorted() keeps file order for ties.
    alerts = sorted(alerts, key=lambda alert: (alert.step, alert.wall_time or 0.0), reverse=True)
    warnings = []
    if damaged:
        lines = "line is" if damaged == 1 else "lines are"
        warnings.append(
            f"{path}: {damaged} damaged {lines} left out (a wrong number of fields, or a step or "
            "epoch that is not an integer)."
        )
    return alerts, warnings


def alerts_frame(alerts: Sequence[Alert]) -> pd.DataFrame:
    """Tabulate alerts in the given order: step, epoch, kind, message and the UTC time they were written."""
    times = pd.to_datetime([alert.wall_time for alert in alerts], unit="s", utc=True, errors="coerce")
    return pd.DataFrame(
        {
            "step": [alert.step for alert in alerts],
            "epoch": [alert.epoch for alert in alerts],
            "kind": [alert.kind for alert in alerts],
            "message": [alert.message for alert in alerts],
            "time (UTC)": times.strftime("%Y-%m-%d %H:%M:%S"),
        },
        columns=["step", "epoch", "kind", "message", "time (UTC)"],
    )
