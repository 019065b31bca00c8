"""Generate page: digits from chosen seeds with a run's generator or the shipped one; interpolation."""

from __future__ import annotations

import functools
from pathlib import Path

import streamlit as st
from streamlit.logger import get_logger

from gan import dashboard, demo, generate, runs
from gan.errors import InputError, format_value
from pages import _shared

log = get_logger("pages.generate")

PRETRAINED = "pretrained"
SOURCE_KEY = "generate_source"
SIDEBAR_RUN_KEY = "generate_sidebar_run"
# The generator in the URL: a run's folder name (or a fixed name for a shipped
# generator) and a checkpoint step, never a server path.
RUN_QUERY = "run"
CHECKPOINT_QUERY = "checkpoint"
APPLIED_QUERY_KEY = "generate_applied_query"
# The exact downloadable files of the last grid and strip, for tests and reruns.
GRID_PNG_KEY = "generate_grid_png"
# A function that returns the .npz download of the last grid, in the order shown.
GRID_NPZ_KEY = "generate_grid_npz"
# The last grid's digits with their predicted classes, in the order shown.
PREDICTIONS_KEY = "generate_predictions"
STRIP_PNG_KEY = "generate_strip_png"
# Bounds of the number inputs, against requests that would stall the server;
# demo mode checks its own, lower limits with a message.
MAX_COUNT = 4096
MAX_COLUMNS = 64
MAX_STEPS = 256
MIN_LATENT_SCALE, MAX_LATENT_SCALE = 0.05, 3.0
# The number inputs bound to the URL: key -> (minimum, maximum, integer).
QUERY_NUMBERS = {
    "seed": (0, generate.MAX_SEED, True),
    "count": (1, MAX_COUNT, True),
    "columns": (1, MAX_COLUMNS, True),
    "latent_scale": (MIN_LATENT_SCALE, MAX_LATENT_SCALE, False),
    "from_seed": (0, generate.MAX_SEED, True),
    "to_seed": (0, generate.MAX_SEED, True),
    "steps": (2, MAX_STEPS, True),
}


@st.cache_resource(max_entries=4, show_spinner="Loading the generator…")
def load_generator(_source: dashboard.GeneratorSource, path: str, step: int | None, modified_time: float):
    """Load a generator once per (file or checkpoint, step, modification time), shared by all sessions."""
    return _source.load()


def requested_generator() -> tuple[str, str | None] | None:
    """Return the URL's ``run`` and ``checkpoint`` values when they ask for a generator not yet applied.

    The page writes its own choice back to the URL, so only a fresh load, a
    reload or a copied link brings values that differ from the applied ones.
    """
    run = st.query_params.get(RUN_QUERY)
    if not run:
        return None
    requested = (run, st.query_params.get(CHECKPOINT_QUERY))
    return None if requested == st.session_state.get(APPLIED_QUERY_KEY) else requested


def check_query_numbers() -> None:
    """Warn about URL values that the bound number inputs cannot take, and drop them from the URL."""
    for key, (low, high, integer) in QUERY_NUMBERS.items():
        if key not in st.query_params:
            continue
        message = dashboard.query_number_error(key, st.query_params[key], low, high, integer=integer)
        if message:
            st.warning(dashboard.escape_markdown(message))
            del st.query_params[key]
            forget_initial_query_value(key)


def forget_initial_query_value(key: str) -> None:
    """Drop ``key`` from the URL values that Streamlit seeds bound widgets from.

    Streamlit seeds a bound widget from the query string of the page load,
    not from st.query_params, and an integer input raises OverflowError on
    a value such as 1e999 there.
    """
    # NOTE: QueryParams._initial_query_params is a Streamlit internal (checked
    # with Streamlit 1.67); without it the value stays and the page may fail.
    from streamlit.runtime.state import get_session_state

    with get_session_state().query_params() as query_params:
        initial = getattr(query_params, "_initial_query_params", None)
        if isinstance(initial, dict):
            initial.pop(key, None)


def write_query(run: str, checkpoint: str | None) -> None:
    """Put the chosen generator in the URL, by run folder name and checkpoint step, never by server path."""
    if st.query_params.get(RUN_QUERY) != run:
        st.query_params[RUN_QUERY] = run
    if checkpoint is None:
        st.query_params.pop(CHECKPOINT_QUERY, None)
    elif st.query_params.get(CHECKPOINT_QUERY) != checkpoint:
        st.query_params[CHECKPOINT_QUERY] = checkpoint
    st.session_state[APPLIED_QUERY_KEY] = (run, checkpoint)


def choose_source(runs_dir: Path) -> dashboard.GeneratorSource | None:
    """Draw the generator and checkpoint choosers; return the chosen source, or None if there is none.

    A URL with ``run`` and ``checkpoint`` preselects that generator once, with
    a warning when it no longer exists. Stops the page when the chosen run no
    longer has a generator.
    """
    options: dict[str, str] = {}
    option_by_query: dict[str, str] = {}
    pretrained = dashboard.pretrained_source()
    if pretrained is not None:
        options[PRETRAINED] = pretrained.label
        option_by_query[dashboard.PRETRAINED_QUERY_NAME] = PRETRAINED
    for info in dashboard.dashboard_runs(runs_dir):
        if dashboard.has_generator(info.path):
            options[str(info.path)] = f"Run {dashboard.run_label(info)}"
            # NOTE: a run folder made outside the Train form with a reserved
            # name (pretrained, shipped-demo-run) cannot be linked to.
            option_by_query.setdefault(dashboard.run_query_name(info.path), str(info.path))
    if not options:
        return None

    # Follow the sidebar's run when it changes, if it has a generator.
    current = str(_shared.current_run() or "")
    if current != st.session_state.get(SIDEBAR_RUN_KEY) and current in options:
        st.session_state[SOURCE_KEY] = current
    st.session_state[SIDEBAR_RUN_KEY] = current
    if st.session_state.get(SOURCE_KEY) not in options:
        st.session_state[SOURCE_KEY] = current if current in options else next(iter(options))

    requested = requested_generator()
    if requested is not None:
        if requested[0] in option_by_query:
            st.session_state[SOURCE_KEY] = option_by_query[requested[0]]
        else:
            fallback_label = options[st.session_state[SOURCE_KEY]]
            st.warning(
                dashboard.escape_markdown(
                    f"The link asks for the generator of run {format_value(requested[0])}, which is not in "
                    f"the runs folder or has no checkpoint; showing {fallback_label} instead."
                )
            )
            requested = None

    source_column, checkpoint_column = st.columns(2)
    chosen = source_column.selectbox("Generator", list(options), format_func=options.get, key=SOURCE_KEY)
    if chosen == PRETRAINED:
        checkpoint_column.caption(f"File: {dashboard.shell_path(pretrained.file)}")
        write_query(dashboard.PRETRAINED_QUERY_NAME, None)
        return pretrained

    sources = dashboard.run_generator_sources(Path(chosen))
    if not sources:
        checkpoint_column.warning("This run's checkpoints were removed; choose another generator.")
        st.stop()
    by_label = {source.label: source for source in sources}
    checkpoint_key = f"generate_checkpoint:{chosen}"
    if requested is not None and requested[1] is not None:
        by_query = {dashboard.checkpoint_query_value(source): source for source in sources}
        if requested[1] in by_query:
            st.session_state[checkpoint_key] = by_query[requested[1]].label
        else:
            latest = dashboard.latest_source(sources)
            st.warning(
                dashboard.escape_markdown(
                    f"The link asks for checkpoint {format_value(requested[1])} of run "
                    f"{format_value(requested[0])}, which it no longer has (it keeps the newest "
                    f"checkpoints_kept and its best generator); showing {latest.label} instead."
                )
            )
            st.session_state[checkpoint_key] = latest.label
    if st.session_state.get(checkpoint_key) not in by_label:
        st.session_state[checkpoint_key] = sources[0].label
    latest_label = dashboard.latest_source(sources).label
    label = checkpoint_column.selectbox(
        "Checkpoint",
        list(by_label),
        format_func=lambda label: (
            f"{label} (latest)" if label == latest_label and len(sources) > 1 else label
        ),
        key=checkpoint_key,
        help="The run's best generator (lowest Frechet distance) when it has one, then the checkpoints "
        "it keeps, newest first (checkpoints_kept sets how many).",
    )
    source = by_label[label]
    write_query(dashboard.run_query_name(chosen), dashboard.checkpoint_query_value(source))
    return source


def render_grid(source, generator, num_classes: int | None, dataset: str | None, limits) -> float:
    """Draw the grid settings, the grid, its downloads and its command; return the latent scale.

    ``dataset`` names the shipped classifier that predicts each digit's class, or is None when no
    classifier fits the generator's data.
    """
    digit = None
    if num_classes is not None:
        digit = st.selectbox(
            "Digit class",
            ["rows", *range(num_classes)],
            format_func=lambda value: "all classes, one per row" if value == "rows" else f"class {value}",
            key="generate_digit",
            help="This generator is conditional: it draws the class you choose.",
        )
    seed_column, count_column, columns_column, scale_column = st.columns(4)
    seed = seed_column.number_input(
        "Seed",
        min_value=0,
        max_value=generate.MAX_SEED,
        value=0,
        step=1,
        key="seed",
        bind="query-params",
        help="Digit i of the grid uses seed + i, so any tile can be made again on its own.",
    )
    count = count_column.number_input(
        "Digits",
        min_value=1,
        max_value=MAX_COUNT,
        value=64,
        step=1,
        key="count",
        bind="query-params",
        disabled=digit == "rows",
        help="Number of digits in the grid (with all classes in rows: classes x columns).",
    )
    columns = columns_column.number_input(
        "Columns",
        min_value=1,
        max_value=MAX_COLUMNS,
        value=8,
        step=1,
        key="columns",
        bind="query-params",
        help="Digits per row of the grid.",
    )
    latent_scale = scale_column.number_input(
        "Latent scale",
        min_value=MIN_LATENT_SCALE,
        max_value=MAX_LATENT_SCALE,
        value=1.0,
        step=0.05,
        format="%.2f",
        key="latent_scale",
        bind="query-params",
        help="Multiplies every latent vector (the truncation trick): below 1 gives more typical, "
        "less varied digits.",
    )
    latent_scale = round(float(latent_scale), 4)
    show_predictions, sort_by_confidence = prediction_options(source, dataset)
    request = generate.GridRequest(
        seed=int(seed), count=int(count), columns=int(columns), latent_scale=latent_scale, digit=digit
    )
    total = num_classes * request.columns if digit == "rows" else request.count
    try:
        count_name = "Digits (classes x columns)" if digit == "rows" else "Digits"
        demo.check_generate_request(total, limits=limits, count_name=count_name)
        result = generate.make_grid(generator, request)
    except InputError as error:
        st.error(dashboard.escape_markdown(error))
        for key in (GRID_PNG_KEY, GRID_NPZ_KEY, PREDICTIONS_KEY):
            st.session_state.pop(key, None)
        return latent_scale

    predictions = None
    if dataset is not None and (show_predictions or sort_by_confidence):
        try:
            predictions = dashboard.predict_digits(result.images, dataset)
        except InputError as error:
            st.warning(dashboard.escape_markdown(error))
    if predictions is not None and sort_by_confidence:
        order = dashboard.confidence_order(predictions.confidences)
        result = dashboard.reorder_result(result, order, request.columns)
        predictions = dashboard.DigitPredictions(predictions.classes[order], predictions.confidences[order])

    grid_png = generate.png_bytes(result.grid)
    st.session_state[GRID_PNG_KEY] = grid_png
    last_seed = request.seed + len(result.images) - 1
    caption = f"{len(result.images)} digits from seeds {request.seed} to {last_seed}"
    if predictions is not None:
        captioned_predictions = predictions if show_predictions else None
        annotated = dashboard.annotated_grid(
            result.images, dashboard.digit_captions(result.seeds, captioned_predictions), request.columns
        )
        if sort_by_confidence:
            caption += ", sorted by the classifier's confidence, highest first"
        st.image(generate.png_bytes(annotated), caption=caption, output_format="PNG")
        frame = dashboard.predictions_frame(result.seeds, predictions, result.labels)
        st.session_state[PREDICTIONS_KEY] = frame
        with st.expander(f"Predicted class and confidence of each digit ({dataset} classifier)"):
            st.dataframe(
                frame,
                hide_index=True,
                column_config={"confidence": st.column_config.NumberColumn(format="%.3f")},
            )
    else:
        st.session_state.pop(PREDICTIONS_KEY, None)
        st.image(
            generate.png_bytes(result.grid, dashboard.display_scale(result.grid.shape[1])),
            caption=caption,
            # PNG, so the page shows the pixels of the download; "auto" may re-encode the grid as JPEG.
            output_format="PNG",
        )
    png_column, npz_column = st.columns(2)
    png_column.download_button(
        "Download the grid as PNG",
        data=grid_png,
        file_name="digits.png",
        mime="image/png",
        on_click="ignore",
        help="The grid at its real size, one pixel per generated pixel.",
    )
    npz_data = functools.partial(generate.npz_bytes, result.images, result.seeds, result.labels)
    st.session_state[GRID_NPZ_KEY] = npz_data
    npz_column.download_button(
        "Download the images as .npz",
        data=npz_data,
        file_name="digits.npz",
        mime="application/octet-stream",
        on_click="ignore",
        help="Arrays: images (uint8, N x 28 x 28), seeds, and labels for a conditional generator.",
    )
    if predictions is not None and sort_by_confidence:
        st.caption("The same digits from a shell, in seed order (the command does not sort them):")
    else:
        st.caption("The same grid from a shell:")
    st.code(dashboard.generate_command(source, request, "digits.png"), language="bash", wrap_lines=True)
    return latent_scale


def prediction_options(source, dataset: str | None) -> tuple[bool, bool]:
    """Draw the predicted class options; return (show predictions, sort by confidence)."""
    show_column, sort_column = st.columns(2)
    show = show_column.checkbox(
        "Show predicted class and confidence",
        key="generate_show_predictions",
        disabled=dataset is None,
        help="Under each digit: the class the shipped classifier predicts, its probability, and the "
        "digit's seed. The PNG download stays the plain grid.",
    )
    sort = sort_column.checkbox(
        "Sort by confidence",
        key="generate_sort_by_confidence",
        disabled=dataset is None,
        help="Order the digits by the classifier's confidence, highest first, with each digit's seed "
        "under it, so weak samples end up last. The downloads follow this order.",
    )
    if dataset is None:
        try:
            trained_on = (
                f"this generator was trained on {format_value(runs.load_config(source.run_dir).data)}"
            )
        except InputError:
            trained_on = "this run's config.json does not say which data it was trained on"
        st.caption(
            dashboard.escape_markdown(
                f"No predicted classes: shipped classifiers exist for mnist and fashion_mnist only, and "
                f"{trained_on}."
            )
        )
        return False, False
    return show, sort


def render_pretrained_metrics() -> None:
    """Show the sample quality of the shipped generator from its metrics.json, with the real-data floors."""
    path = dashboard.pretrained_metrics_path()
    with st.expander("Sample quality of the shipped generator", expanded=True):
        try:
            report = dashboard.read_quality_report(path)
        except InputError as error:
            st.info(dashboard.escape_markdown(error))
            return
        st.table(dashboard.quality_report_frame(report))
        samples, seed = report.get("samples"), report.get("seed")
        seeds = (
            f" (seeds {seed} to {seed + samples - 1})"
            if isinstance(samples, int) and isinstance(seed, int)
            else ""
        )
        st.caption(
            dashboard.escape_markdown(
                f"From {dashboard.shell_path(path)}: {samples} generated digits{seeds} against {samples} "
                f"real {report.get('dataset')} test images. The real-data floor is the same metric for as "
                "many real training images, what a perfect generator scores."
            )
        )


def render_interpolation(source, generator, num_classes: int | None, latent_scale: float, limits) -> None:
    st.header("Interpolation")
    st.caption(
        "Digits on the spherical path between the latent vectors of two seeds, with the latent scale above."
    )
    from_column, to_column, steps_column, digit_column = st.columns(4)
    from_seed = from_column.number_input(
        "From seed",
        min_value=0,
        max_value=generate.MAX_SEED,
        value=0,
        step=1,
        key="from_seed",
        bind="query-params",
    )
    to_seed = to_column.number_input(
        "To seed",
        min_value=0,
        max_value=generate.MAX_SEED,
        value=1,
        step=1,
        key="to_seed",
        bind="query-params",
    )
    steps = steps_column.number_input(
        "Steps",
        min_value=2,
        max_value=MAX_STEPS,
        value=10,
        step=1,
        key="steps",
        bind="query-params",
        help="Digits in the strip, both ends included.",
    )
    digit = None
    if num_classes is not None:
        digit = digit_column.selectbox(
            "Digit class of the strip",
            list(range(num_classes)),
            key="generate_interpolation_digit",
            help="A conditional generator keeps one class along the path.",
        )
    request = generate.GridRequest(seed=int(from_seed), latent_scale=latent_scale, digit=digit)
    try:
        demo.check_generate_request(1, int(steps), limits=limits, steps_name="Steps")
        result = generate.make_interpolation(generator, request, int(to_seed), int(steps))
    except InputError as error:
        st.error(dashboard.escape_markdown(error))
        st.session_state.pop(STRIP_PNG_KEY, None)
        return

    strip_png = generate.png_bytes(result.grid)
    st.session_state[STRIP_PNG_KEY] = strip_png
    st.image(
        generate.png_bytes(
            result.grid, dashboard.display_scale(result.grid.shape[1], target=1100, max_scale=4)
        ),
        caption=f"seed {request.seed} to seed {int(to_seed)} in {len(result.images)} steps",
        output_format="PNG",
    )
    animation = dashboard.interpolation_gif(result.images)
    gif_column, downloads_column = st.columns([1, 2])
    gif_column.image(animation, caption="The same path, forth and back")
    downloads_column.download_button(
        "Download the strip as PNG",
        data=strip_png,
        file_name="interpolation.png",
        mime="image/png",
        on_click="ignore",
    )
    downloads_column.download_button(
        "Download the animation as GIF",
        data=animation,
        file_name="interpolation.gif",
        mime="image/gif",
        on_click="ignore",
    )
    st.caption("The same strip from a shell:")
    st.code(
        dashboard.generate_command(
            source, request, "interpolation.png", interpolate_to=int(to_seed), steps=int(steps)
        ),
        language="bash",
        wrap_lines=True,
    )


# Page -------------------------------------------------------------------------------

_shared.run_through_app()
st.title("Generate")
st.caption(
    "Digits from chosen seeds: the same generator, seeds and settings give the same pixels here, "
    "after a reload, in another tab and from `python -m gan generate`."
)
limits = _shared.demo_limits()
_shared.show_demo_notice(limits)
check_query_numbers()

source = choose_source(_shared.runs_dir())
if source is None:
    st.info(
        "No generator yet. Train a run on the **Train** page: its first checkpoint appears after "
        "checkpoint_every_steps steps or one epoch. A checkout with the shipped model also offers "
        f"**Pretrained (shipped)** from {dashboard.PRETRAINED_GENERATOR_NAME}."
    )
    st.stop()

try:
    generator = load_generator(
        source, str(source.file or source.run_dir), source.checkpoint_step, source.modified_time()
    )
except InputError as error:
    log.warning("loading generator %s (%s) failed: %s", source.run_dir or source.file, source.label, error)
    st.error(dashboard.escape_markdown(error))
    st.stop()
num_classes = generate.num_classes_of(generator)
if source.run_dir is None:
    render_pretrained_metrics()

latent_scale = render_grid(source, generator, num_classes, dashboard.classifier_dataset(source), limits)
render_interpolation(source, generator, num_classes, latent_scale, limits)
