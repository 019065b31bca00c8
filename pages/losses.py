"""Losses page: loss and discriminator histories of runs, live while they train, and samples by epoch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from gan import dashboard, history, metrics, names, runs
from gan.errors import InputError
from gan.generate import png_bytes
from pages import _charts, _shared

HISTORIES_KEY = "losses_histories"
DISPLAY_CACHE_KEY = "losses_display_cache"
COMPARE_KEY = "losses_compare"
SMOOTHING_KEY = "losses_smoothing"
# TensorBoard's default smoothing weight.
DEFAULT_SMOOTHING = 0.6
SAMPLES_REFRESH_SECONDS = 5.0
# Alerts shown as messages; the rest are in the table below them.
SHOWN_ALERTS = 3
ALERT_KIND_LABELS = {
    "diverged": "Diverged",
    "discriminator_wins": "Discriminator wins",
    "mode_collapse": "Mode collapse",
}


def tracked_history(run_dir: Path, file_name: str, key: str) -> history.CsvHistory:
    """Return this session's reader of one run's CSV history, created on first use."""
    readers = st.session_state.setdefault(HISTORIES_KEY, {})
    path = run_dir / file_name
    if str(path) not in readers:
        readers[str(path)] = history.CsvHistory(path, key)
    return readers[str(path)]


def read_histories(run_dirs: list[Path], labels: dict[str, str], file_name: str, key: str):
    """Read the new rows of each run's history; return frames by run label and their versions."""
    frames, versions = {}, []
    for run_dir in run_dirs:
        reader = tracked_history(run_dir, file_name, key)
        reader.refresh()
        frames[labels[str(run_dir)]] = reader.frame
        versions.append((str(run_dir), reader.version))
    return frames, tuple(versions)


def show_history_warnings(run_dirs: list[Path], file_name: str, key: str) -> None:
    """Warn about each run's damaged or empty history file, where its charts would be."""
    for run_dir in run_dirs:
        for warning in tracked_history(run_dir, file_name, key).warnings():
            st.warning(dashboard.escape_markdown(warning))


def cached_display_frame(frames, versions, smoothing: float):
    """Smooth and downsample only when a history grew or the smoothing changed."""
    cache_key = (versions, smoothing)
    cached = st.session_state.get(DISPLAY_CACHE_KEY)
    if cached is None or cached[0] != cache_key:
        series = history.LOSS_SERIES + history.DISCRIMINATOR_SERIES
        cached = (cache_key, history.display_frame(frames, series, smoothing=smoothing))
        st.session_state[DISPLAY_CACHE_KEY] = cached
    return cached[1]


@st.fragment(run_every=_shared.REFRESH_SECONDS)
def render_histories(run_dirs: list[Path], labels: dict[str, str], smoothing: float) -> None:
    metrics, versions = read_histories(run_dirs, labels, runs.METRICS_FILE, "step")
    show_history_warnings(run_dirs, runs.METRICS_FILE, "step")
    if all(frame.empty for frame in metrics.values()):
        st.info(
            f"No rows in {runs.METRICS_FILE} yet: the trainer appends one every log_every_steps steps, "
            "and this page shows them within a few seconds."
        )
    else:
        frame = cached_display_frame(metrics, versions, smoothing)
        loss_column, generator_column = st.columns(2)
        loss_column.altair_chart(
            _charts.curve_chart(frame[frame["series"] == "d_loss"], "Discriminator loss", "d_loss")
        )
        generator_column.altair_chart(
            _charts.curve_chart(frame[frame["series"] == "g_loss"], "Generator loss", "g_loss")
        )
        outputs = frame[frame["series"].isin(history.DISCRIMINATOR_SERIES)]
        st.altair_chart(
            _charts.curve_chart(
                outputs,
                "Mean discriminator output on real digits, D(x), and on generated digits, D(G(z))",
                "mean D output",
                several_series=True,
            )
        )
        rows = max(len(frame) for frame in metrics.values())
        if rows > history.DEFAULT_MAX_POINTS:
            st.caption(
                f"The longest history has {rows:,} rows; each curve is drawn with at most "
                f"{history.DEFAULT_MAX_POINTS:,} points that keep every local minimum and maximum."
            )

    epochs, _ = read_histories(run_dirs, labels, runs.EPOCHS_FILE, "epoch")
    show_history_warnings(run_dirs, runs.EPOCHS_FILE, "epoch")
    per_epoch = history.epochs_frame(epochs)
    if not per_epoch.empty:
        seconds_column, rate_column = st.columns(2)
        seconds_column.altair_chart(_charts.epoch_chart(per_epoch, "seconds", "Seconds per epoch", "seconds"))
        rate_column.altair_chart(
            _charts.epoch_chart(per_epoch, "images_per_second", "Images per second", "images/s")
        )
    render_quality(run_dirs[0], epochs)


def render_quality(run_dir: Path, epochs: dict) -> None:
    """Draw the sample-quality metrics of epochs.csv against epoch, and the latest class coverage."""
    st.header("Sample quality")
    if not any(history.has_quality_columns(frame) for frame in epochs.values()):
        st.info(
            f"No sample-quality metrics: {runs.EPOCHS_FILE} of this run has no metric columns, because "
            "the run was recorded before the trainer evaluated generators. Score its generator with "
            f"`python -m gan evaluate --run-dir {dashboard.shell_path(run_dir)}`."
        )
        return
    drawn = 0
    for metric in history.QUALITY_METRICS:
        points = history.quality_points(epochs, metric)
        if points.empty:
            continue
        floors = history.quality_floors(epochs, metric)
        if drawn % 2 == 0:
            column_pair = st.columns(2)
        column = column_pair[drawn % 2]
        column.altair_chart(_charts.quality_chart(points, floors, metric))
        floor_note = (
            "The dashed rule is the real-data floor at the latest evaluation: the same metric for as many "
            "real training images, what a perfect generator scores."
            if not floors.empty
            else ""
        )
        column.caption(f"{metric.hint} {floor_note}".strip())
        drawn += 1
    if drawn == 0:
        st.info(
            "No evaluation yet: the trainer scores the generator with the shipped classifier after every "
            "eval_every_epochs epochs (0 turns the metrics off); epochs without one are gaps in the charts."
        )
        return
    coverage = history.class_coverage_frame(epochs)
    if coverage.empty:
        return
    real_shares, real_note = real_class_shares(run_dir)
    st.altair_chart(_charts.coverage_chart(coverage, real_shares))
    st.caption(
        "Share of the generated digits that the classifier assigns to each class at each run's latest "
        f"evaluation (epoch {', '.join(str(epoch) for epoch in coverage['epoch'].unique())}). {real_note}"
    )


def real_class_shares(run_dir: Path) -> tuple[pd.DataFrame, str]:
    """Return the class shares to draw beside the coverage bars, and a caption saying what they are."""
    try:
        dataset = metrics.dataset_of_source(runs.load_config(run_dir).data)
    except InputError:
        dataset = None
    shares = history.real_class_shares(dataset) if dataset else None
    if shares is None:
        shares = np.full(10, 0.1)
        note = (
            "Black ticks: equal shares of 0.1, because the real class shares of this run's data are unknown."
        )
    else:
        note = f"Black ticks: the class shares of the real {dataset} test images."
    return pd.DataFrame({"digit": np.arange(len(shares)), "share": shares}), note


@st.fragment(run_every=_shared.REFRESH_SECONDS)
def render_alerts(run_dir: Path) -> None:
    """Show the run's diverged state and its alerts.csv rows, newest first."""
    status = runs.read_status(run_dir)
    if status.get("state") == "diverged":
        reason = str(status.get("last_error") or "its losses became NaN or infinite").rstrip(".")
        st.error(
            dashboard.escape_markdown(
                f"Run {run_dir.name} diverged: {reason}. It can resume from its last checkpoint on the "
                "Train page, usually after lowering the learning rates."
            )
        )
    alerts, warnings = history.read_alerts(run_dir)
    for warning in warnings:
        st.warning(dashboard.escape_markdown(warning))
    for alert in alerts[:SHOWN_ALERTS]:
        kind = ALERT_KIND_LABELS.get(alert.kind, alert.kind)
        text = dashboard.escape_markdown(f"{kind} at step {alert.step}, epoch {alert.epoch}: {alert.message}")
        if alert.kind == "diverged":
            st.error(text)
        else:
            st.warning(text)
    if alerts:
        with st.expander(f"All {len(alerts)} alerts of run {run_dir.name}, newest first"):
            st.dataframe(history.alerts_frame(alerts), hide_index=True)


def render_csv_downloads(run_dirs: list[Path], labels: dict[str, str]) -> None:
    """Offer each run's CSV histories, read when the button is pressed.

    Outside the live fragments on purpose: a fragment rerun registers a new
    deferred file for each button and drops the previous one, so a press
    during a rerun would find no file.
    """
    with st.expander("Download the histories as CSV"):
        for run_dir in run_dirs:
            label = labels[str(run_dir)]
            metrics_column, epochs_column = st.columns(2)
            for column, file_name in ((metrics_column, runs.METRICS_FILE), (epochs_column, runs.EPOCHS_FILE)):
                path = run_dir / file_name
                column.download_button(
                    f"{label}: {file_name}",
                    data=lambda path=path: history.complete_csv_bytes(path),
                    file_name=names.download_name(run_dir.name, file_name),
                    mime="text/csv",
                    on_click="ignore",
                    disabled=not path.exists(),
                    key=f"download:{path}",
                )


@st.cache_data(max_entries=8, show_spinner="Encoding the GIF…")
def cached_epoch_gif(signature: tuple[tuple[int, str, int], ...]) -> bytes:
    """Encode the GIF of all epochs once per set of sample files and modification times."""
    return history.epoch_gif({epoch: Path(path) for epoch, path, _ in signature})


@st.cache_data(max_entries=16, show_spinner=False)
def cached_unreadable_samples(signature: tuple[tuple[int, str, int], ...]) -> dict[int, str]:
    """Map each epoch whose grid is not a readable PNG to the reason, once per set of sample files."""
    unreadable = {}
    for epoch, path, _ in signature:
        try:
            history.read_grid(path)
        except history.HistoryError as error:
            unreadable[epoch] = str(error)
    return unreadable


@st.cache_data(max_entries=16, show_spinner=False)
def cached_strip_png(signature: tuple[tuple[int, str, int], ...], epochs: tuple[int, ...]) -> bytes:
    return history.epoch_strip_png({epoch: Path(path) for epoch, path, _ in signature}, epochs)


def follow_latest(key: str, options: list[int]) -> None:
    """Keep a widget on the newest option while it was on the newest one, as new epochs arrive."""
    latest_key = f"{key}:latest"
    if st.session_state.get(key) not in options or st.session_state.get(key) == st.session_state.get(
        latest_key
    ):
        st.session_state[key] = options[-1]
    st.session_state[latest_key] = options[-1]


@st.fragment(run_every=SAMPLES_REFRESH_SECONDS)
def render_samples(run_dir: Path) -> None:
    st.header("Samples by epoch")
    samples = history.list_epoch_samples(run_dir)
    if not samples:
        st.info(
            f"No sample grids yet: the trainer writes {runs.SAMPLES_DIR}/epoch_0000.png "
            "before the first step and one grid after every epoch."
        )
        return
    epochs = list(samples)
    signature = history.samples_signature(samples)
    unreadable = cached_unreadable_samples(signature)
    grids: dict[int, np.ndarray] = {}

    def grid_of(epoch: int) -> np.ndarray | None:
        """Read an epoch's grid once per script run; None for a damaged file."""
        if epoch not in grids and epoch not in unreadable:
            grids[epoch] = history.read_grid(samples[epoch])
        return grids.get(epoch)

    # The width of the first readable grid: every grid of a run has the same size.
    readable_epochs = [epoch for epoch in epochs if epoch not in unreadable]
    grid_width = grid_of(readable_epochs[0]).shape[1] if readable_epochs else 0

    if len(epochs) > 1:
        slider_key = f"losses_epoch:{run_dir}"
        follow_latest(slider_key, epochs)
        epoch = st.select_slider("Epoch", options=epochs, key=slider_key, help="0 is before training.")
    else:
        epoch = epochs[0]
    grid = grid_of(epoch)
    caption = "before training" if epoch == 0 else f"after epoch {epoch}"
    if grid is None:
        st.warning(
            dashboard.escape_markdown(f"The sample grid {caption} cannot be shown: {unreadable[epoch]}")
        )
    else:
        st.image(
            png_bytes(grid, dashboard.display_scale(grid.shape[1], target=420)),
            caption=f"Sample grid {caption}, from the run's fixed sample seeds",
        )

    st.subheader("Epochs side by side")
    strip_key = f"losses_strip:{run_dir}"
    default_key = f"{strip_key}:default"
    default = history.default_strip_epochs(epochs)
    chosen = st.session_state.get(strip_key)
    if chosen is None or chosen == st.session_state.get(default_key):
        # Untouched by the user: follow the default as epochs arrive.
        st.session_state[strip_key] = default
    else:
        st.session_state[strip_key] = [epoch for epoch in chosen if epoch in samples]
    st.session_state[default_key] = default
    chosen = st.multiselect("Epochs", epochs, key=strip_key, help="Grids of these epochs, left to right.")
    for epoch in sorted(chosen):
        if grid_of(epoch) is None:
            st.warning(
                dashboard.escape_markdown(f"Epoch {epoch} is left out of the strip: {unreadable[epoch]}")
            )
    readable = [epoch for epoch in sorted(chosen) if epoch in grids]
    if readable:
        scale = dashboard.display_scale(grid_width * len(readable), target=1100, max_scale=3)
        st.image(
            [png_bytes(grids[epoch], scale) for epoch in readable],
            caption=[f"epoch {epoch}" for epoch in readable],
        )
        strip_column, gif_column = st.columns(2)
        strip_column.download_button(
            "Download the strip as PNG",
            # Bytes, not a callable: this fragment reruns on a timer, which
            # would drop a deferred file before a press could fetch it.
            data=cached_strip_png(signature, tuple(readable)),
            file_name=names.download_name(run_dir.name, "epochs.png"),
            mime="image/png",
            on_click="ignore",
        )
    else:
        gif_column = st.container()
    if unreadable:
        # A GIF of the readable grids would hide the gap, so none is offered.
        damaged = ", ".join(str(samples[epoch]) for epoch in unreadable)
        gif_column.warning(
            dashboard.escape_markdown(
                f"No GIF of the epoch grids: these files are not readable PNGs: {damaged}"
            )
        )
        return
    gif_column.download_button(
        f"Download a GIF of all {len(epochs)} epoch grids",
        data=cached_epoch_gif(signature),
        file_name=names.download_name(run_dir.name, "epochs.gif"),
        mime="image/gif",
        on_click="ignore",
    )


# Page -------------------------------------------------------------------------------

_shared.run_through_app()
st.title("Losses")
st.caption(
    "Losses and discriminator outputs of training runs against step, read from each run's "
    f"{runs.METRICS_FILE} and {runs.EPOCHS_FILE}; live while a run trains."
)
_shared.show_demo_notice(_shared.demo_limits())

run_dir = _shared.current_run()
if run_dir is None or not runs.is_run(run_dir):
    st.info("No run to show yet. Start a run on the **Train** page; its losses appear here while it trains.")
    st.stop()

found = dashboard.dashboard_runs(_shared.runs_dir())
labels = {str(info.path): dashboard.run_label(info) for info in found}
labels.setdefault(str(run_dir), run_dir.name)
others = [path for path in labels if path != str(run_dir)]
st.session_state[COMPARE_KEY] = [path for path in st.session_state.get(COMPARE_KEY, []) if path in others]
compare_column, smoothing_column = st.columns(2)
compared = compare_column.multiselect(
    "Compare with",
    others,
    format_func=labels.get,
    key=COMPARE_KEY,
    help="Runs drawn on the same charts as the current run, one colour each.",
    placeholder="other runs",
    persist_state="session",
)
st.session_state.setdefault(SMOOTHING_KEY, DEFAULT_SMOOTHING)
smoothing = smoothing_column.slider(
    "Smoothing",
    min_value=0.0,
    max_value=0.99,
    step=0.01,
    key=SMOOTHING_KEY,
    help="Weight of TensorBoard's debiased exponential moving average: 0 draws the raw values. "
    "The raw curve stays faint behind the smoothed one.",
    persist_state="session",
)

shown_runs = [run_dir, *map(Path, compared)]
render_alerts(run_dir)
render_histories(shown_runs, labels, smoothing)
render_csv_downloads(shown_runs, labels)
render_samples(run_dir)
