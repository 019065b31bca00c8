"""Altair charts of the Losses page, built from the frames of ``gan.history``."""

from __future__ import annotations

import altair as alt
import pandas as pd

SERIES_LABELS = {"d_real": "D(x)", "d_fake": "D(G(z))"}
CURVE_HEIGHT = 280
EPOCH_HEIGHT = 220
RAW_OPACITY = 0.25
# A categorical palette: the default one of the Streamlit theme shades one hue for a few series.
PALETTE = alt.Scale(scheme="tableau10")


def curve_chart(
    frame: pd.DataFrame, title: str, y_title: str, *, several_series: bool = False
) -> alt.LayerChart:
    """Draw each run's raw curve faint behind its smoothed curve, against step.

    ``frame`` is a ``gan.history.display_frame``. Colour distinguishes the
    runs. With ``several_series`` and one run, colour distinguishes the series
    instead, and with several runs the series differ by dash.
    """
    frame = frame.assign(series=frame["series"].replace(SERIES_LABELS))
    several_runs = frame["run"].nunique() > 1
    encodings = {
        "x": alt.X("step:Q", title="step"),
        "y": alt.Y("value:Q", title=y_title, scale=alt.Scale(zero=False)),
        "detail": "series:N",
    }
    if several_series and not several_runs:
        encodings["color"] = alt.Color("series:N", title=None, scale=PALETTE)
    else:
        encodings["color"] = alt.Color("run:N", title="run", scale=PALETTE)
        if several_series:
            encodings["strokeDash"] = alt.StrokeDash("series:N", title=None)
    base = alt.Chart(frame).encode(**encodings)
    raw = base.transform_filter(alt.datum.curve == "raw").mark_line(opacity=RAW_OPACITY, strokeWidth=1)
    smoothed = (
        base.transform_filter(alt.datum.curve == "smoothed")
        .mark_line(strokeWidth=2)
        .encode(
            tooltip=[
                alt.Tooltip("run:N"),
                alt.Tooltip("series:N"),
                alt.Tooltip("step:Q", format=","),
                alt.Tooltip("value:Q", title="smoothed", format=".4f"),
            ]
        )
    )
    return alt.layer(raw, smoothed).properties(title=title, height=CURVE_HEIGHT).interactive(bind_y=False)


def epoch_chart(frame: pd.DataFrame, column: str, title: str, y_title: str) -> alt.Chart:
    """Draw one epochs.csv column against epoch, a line with points per run."""
    return (
        alt.Chart(frame)
        .mark_line(point=True)
        .encode(
            x=alt.X("epoch:Q", title="epoch", axis=alt.Axis(tickMinStep=1)),
            y=alt.Y(f"{column}:Q", title=y_title),
            color=alt.Color("run:N", title="run", scale=PALETTE),
            tooltip=[
                alt.Tooltip("run:N"),
                alt.Tooltip("epoch:Q"),
                alt.Tooltip(f"{column}:Q", title=y_title, format=",.1f"),
            ],
        )
        .properties(title=title, height=EPOCH_HEIGHT)
    )


GENERATED_LINE = "generated digits"
FLOOR_LINE = "real-data floor"
# Solid for the generated digits, dashed for the floor rule.
LINE_STYLES = alt.Scale(domain=[GENERATED_LINE, FLOOR_LINE], range=[[1, 0], [6, 4]])


def quality_chart(points: pd.DataFrame, floors: pd.DataFrame, metric) -> alt.LayerChart:
    """Draw one sample-quality metric against epoch per run, with each run's real-data floor as a dashed rule.

    ``points`` and ``floors`` come from ``gan.history.quality_points`` and
    ``quality_floors`` for ``metric`` (a ``gan.history.QualityMetric``).
    Each unbroken stretch of evaluated epochs is its own line, so a missed
    evaluation is a gap. A metric with a standard error gets error bars.
    """
    x = alt.X("epoch:Q", title="epoch", axis=alt.Axis(tickMinStep=1))
    color = alt.Color("run:N", title="run", scale=PALETTE)
    # Stroke symbols, so the legend shows the dash pattern and not the line's points.
    style = alt.StrokeDash("line:N", title=None, scale=LINE_STYLES, legend=alt.Legend(symbolType="stroke"))
    value_format = ".4g"
    line = (
        alt.Chart(points.assign(line=GENERATED_LINE))
        .mark_line(point=True)
        .encode(
            x=x,
            y=alt.Y("value:Q", title=metric.y_title, scale=alt.Scale(zero=False)),
            color=color,
            strokeDash=style,
            detail="segment:N",
            tooltip=[
                alt.Tooltip("run:N"),
                alt.Tooltip("epoch:Q"),
                alt.Tooltip("value:Q", title=metric.y_title, format=value_format),
            ],
        )
    )
    layers = [line]
    if metric.std_error_column:
        layers.append(
            alt.Chart(points)
            .mark_errorbar(ticks=True)
            .encode(x=x, y=alt.Y("lower:Q", title=metric.y_title), y2="upper:Q", color=color)
        )
    if not floors.empty:
        layers.append(
            alt.Chart(floors.assign(line=FLOOR_LINE))
            .mark_rule(strokeWidth=1.5)
            .encode(
                y=alt.Y("floor:Q", title=metric.y_title),
                color=color,
                strokeDash=style,
                tooltip=[
                    alt.Tooltip("run:N"),
                    alt.Tooltip("floor:Q", title="real-data floor", format=value_format),
                    alt.Tooltip("epoch:Q", title="at epoch"),
                ],
            )
        )
    return alt.layer(*layers).properties(title=metric.title, height=EPOCH_HEIGHT)


def coverage_chart(coverage: pd.DataFrame, real_shares: pd.DataFrame) -> alt.LayerChart:
    """Draw the share of each predicted class as bars, one colour per run, with a tick at each real share.

    ``coverage`` comes from ``gan.history.class_coverage_frame``;
    ``real_shares`` has the columns digit and share.
    """
    x = alt.X("digit:O", title="predicted class", axis=alt.Axis(labelAngle=0))
    bars = (
        alt.Chart(coverage)
        .mark_bar()
        .encode(
            x=x,
            xOffset="run:N",
            y=alt.Y("share:Q", title="share of generated digits"),
            color=alt.Color("run:N", title="run", scale=PALETTE),
            tooltip=[
                alt.Tooltip("run:N"),
                alt.Tooltip("epoch:Q"),
                alt.Tooltip("digit:O", title="class"),
                alt.Tooltip("share:Q", format=".3f"),
            ],
        )
    )
    real = (
        alt.Chart(real_shares)
        .mark_tick(color="black", thickness=2)
        .encode(
            x=x,
            y=alt.Y("share:Q", title="share of generated digits"),
            tooltip=[
                alt.Tooltip("digit:O", title="class"),
                alt.Tooltip("share:Q", title="real share", format=".3f"),
            ],
        )
    )
    return alt.layer(bars, real).properties(
        title="Predicted classes at the latest evaluation", height=EPOCH_HEIGHT
    )
