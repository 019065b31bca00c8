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
