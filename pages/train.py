"""Train page: start a run from a form, follow it live, stop it and resume it."""

from __future__ import annotations

from dataclasses import Field, fields
from pathlib import Path

import streamlit as st
from streamlit.logger import get_logger

from gan import dashboard, demo, devices, history, runs
from gan.cluster import check_batch_split, require_chief_for_launch
from gan.config import GROUPS, MODEL_KINDS, PRECISIONS, STRATEGIES, TrainConfig, field_group, field_help
from gan.errors import InputError
from gan.generate import png_bytes
from pages import _shared

log = get_logger("pages.train")

FORM_KEY_PREFIX = "train_"
RUN_NAME_KEY = FORM_KEY_PREFIX + dashboard.RUN_NAME_FIELD
ERRORS_KEY = "train_errors"
FORM_MESSAGE_KEY = "train_message"
CONTROL_MESSAGE_KEY = "train_control_message"
FORM_ERROR = "form"  # errors that belong to no single field
CHOICES = {"model": MODEL_KINDS, "strategy": STRATEGIES, "precision": PRECISIONS}
FORM_COLUMNS = 3
LOG_LINES = 40


def widget_key(name: str) -> str:
    return FORM_KEY_PREFIX + name


def is_float_field(field: Field) -> bool:
    return "float" in str(field.type)


def init_form_state(runs_dir: Path, limits: demo.DemoLimits | None) -> None:
    """Put the TrainConfig defaults, within the demo limits, into the form's session state once."""
    defaults = demo.default_config(limits)
    for field in fields(TrainConfig):
        key = widget_key(field.name)
        if key not in st.session_state:
            value = getattr(defaults, field.name)
            # Float fields are text inputs, so that 2e-4 can be typed.
            st.session_state[key] = repr(value) if is_float_field(field) else value
    if RUN_NAME_KEY not in st.session_state:
        st.session_state[RUN_NAME_KEY] = dashboard.default_run_name(runs_dir)


def form_values() -> dict:
    return {field.name: st.session_state.get(widget_key(field.name)) for field in fields(TrainConfig)}


# Actions (button callbacks, which run before the page is drawn again) -------------


def submit_form(runs_dir: Path, limits: demo.DemoLimits | None) -> None:
    """Validate the form; start the run when it is valid, else record each field's error."""
    config, errors = dashboard.config_from_form(form_values(), limits)
    run_dir = None
    try:
        run_dir = dashboard.check_run_name(st.session_state.get(RUN_NAME_KEY, ""), runs_dir)
    except dashboard.RunNameError as error:
        errors[dashboard.RUN_NAME_FIELD] = str(error)
    st.session_state[ERRORS_KEY] = errors
    if errors or config is None or run_dir is None:
        return
    try:
        dashboard.check_data_file(config)
    except InputError as error:
        st.session_state[ERRORS_KEY] = {dashboard.error_field(str(error)) or "data": str(error)}
        return
    try:
        # A multi_worker run started here is the chief of the server's TF_CONFIG.
        cluster = require_chief_for_launch(config.strategy)
        if cluster is not None:
            check_batch_split(config.batch_size, cluster.num_workers, "workers of TF_CONFIG")
    except InputError as error:
        st.session_state[ERRORS_KEY] = {dashboard.error_field(str(error)) or "strategy": str(error)}
        return

    try:
        with demo.admission_lock(runs_dir):
            demo.check_train_request(config, runs_dir, limits)
            if limits is not None:
                for deleted in demo.prune_runs(runs_dir, limits):
                    log.info("demo mode deleted the old run %s to make room", deleted)
            runs.create_run(run_dir, config)
            pid = runs.launch(run_dir)
    except demo.DemoLimitError as error:
        st.session_state[ERRORS_KEY] = error.errors or {FORM_ERROR: str(error)}
        return
    except (InputError, OSError) as error:
        log.warning("starting run %s failed: %s", run_dir, error)
        st.session_state[ERRORS_KEY] = {FORM_ERROR: f"Starting the trainer failed: {error}"}
        return
    log.info("started run %s, trainer pid %d", run_dir, pid)
    st.session_state[FORM_MESSAGE_KEY] = (
        f"Started run {run_dir.name} (trainer pid {pid}). It is now the current run; "
        "its progress appears below within a few seconds."
    )
    st.session_state[RUN_NAME_KEY] = dashboard.default_run_name(runs_dir)
    _shared.select_run(run_dir)


def set_control_message(run_dir: Path, kind: str, text: str) -> None:
    """Keep the outcome of a Stop, Resume or Start press until the next press on that run, or Dismiss.

    It lives in session state because the run's fragment reruns every few
    seconds and would otherwise drop a message drawn only once.
    """
    st.session_state[CONTROL_MESSAGE_KEY] = {"run": str(run_dir), "kind": kind, "text": text}


def dismiss_control_message() -> None:
    st.session_state.pop(CONTROL_MESSAGE_KEY, None)


def stop_run(run_dir: Path) -> None:
    try:
        runs.stop(run_dir)
    except InputError as error:
        set_control_message(run_dir, "error", str(error))
        return
    except OSError as error:
        log.warning("stopping run %s failed: %s", run_dir, error)
        set_control_message(run_dir, "error", f"Stopping {run_dir.name} failed: {error}")
        return
    log.info("sent SIGTERM to the trainer of run %s", run_dir)
    set_control_message(
        run_dir,
        "info",
        f"Asked run {run_dir.name} to stop: it writes a checkpoint after the current step and exits.",
    )


def start_run(run_dir: Path, resume: bool, runs_dir: Path, limits: demo.DemoLimits | None) -> None:
    """Start a new run's trainer, or resume a stopped one, from its saved config."""
    try:
        with demo.admission_lock(runs_dir):
            demo.check_train_request(runs.load_config(run_dir), runs_dir, limits)
            pid = runs.launch(run_dir, resume=resume)
    except InputError as error:
        set_control_message(run_dir, "error", str(error))
        return
    except OSError as error:
        log.warning("starting run %s failed: %s", run_dir, error)
        set_control_message(run_dir, "error", f"Starting the trainer failed: {error}")
        return
    log.info("%s run %s, trainer pid %d", "resumed" if resume else "started", run_dir, pid)
    verb = "Resumed" if resume else "Started"
    set_control_message(run_dir, "info", f"{verb} run {run_dir.name} (trainer pid {pid}).")


# Layout -----------------------------------------------------------------------------


def field_widget(field: Field, error: str | None) -> None:
    key = widget_key(field.name)
    help_text = field_help(field.name)
    if field.name in CHOICES:
        st.selectbox(field.name, CHOICES[field.name], key=key, help=help_text, persist_state="session")
    elif str(field.type) == "bool":
        st.checkbox(field.name, key=key, help=help_text, persist_state="session")
    elif is_float_field(field):
        st.text_input(
            field.name,
            key=key,
            help=help_text + " Accepts scientific notation such as 2e-4.",
            persist_state="session",
        )
    elif field.name == "data":
        st.text_input(field.name, key=key, help=help_text, persist_state="session")
    else:
        # No min_value: TrainConfig.validate checks the range and its message shows here.
        st.number_input(
            field.name,
            step=1,
            key=key,
            help=help_text,
            # value=None keeps the field clearable after a number was entered:
            # with the default value="min", Streamlit turns an emptied field into 0.
            value=None if field.name == "max_images" else "min",
            placeholder="every image" if field.name == "max_images" else None,
            persist_state="session",
        )
    if error:
        st.error(dashboard.escape_markdown(error))


def render_form(runs_dir: Path, limits: demo.DemoLimits | None, expanded: bool) -> None:
    errors = st.session_state.get(ERRORS_KEY, {})
    with st.expander("New run", expanded=expanded or bool(errors)), st.form("train_form", border=False):
        st.text_input(
            "Run name",
            key=RUN_NAME_KEY,
            help="Name of the run's folder under the runs folder: letters, digits, '.', '_' and '-'.",
        )
        if errors.get(dashboard.RUN_NAME_FIELD):
            st.error(dashboard.escape_markdown(errors[dashboard.RUN_NAME_FIELD]))
        for group, title in GROUPS.items():
            st.markdown(f"**{title}**")
            columns = st.columns(FORM_COLUMNS)
            group_fields = [field for field in fields(TrainConfig) if field_group(field.name) == group]
            for index, field in enumerate(group_fields):
                with columns[index % FORM_COLUMNS]:
                    field_widget(field, errors.get(field.name))
        if errors.get(FORM_ERROR):
            st.error(dashboard.escape_markdown(errors[FORM_ERROR]))
        st.form_submit_button(
            "Start training",
            type="primary",
            on_click=submit_form,
            args=(runs_dir, limits),
        )
    message = st.session_state.pop(FORM_MESSAGE_KEY, None)
    if message:
        st.success(dashboard.escape_markdown(message))


@st.fragment(run_every=_shared.REFRESH_SECONDS)
def render_runs_table(runs_dir: Path) -> None:
    found = dashboard.dashboard_runs(runs_dir)
    if not found:
        folder = dashboard.escape_markdown(runs_dir)
        st.info(f"No runs in {folder} yet: fill in the form above and press **Start training**.")
        return
    st.dataframe(dashboard.runs_frame(found), hide_index=True)


@st.fragment(run_every=_shared.REFRESH_SECONDS)
def render_run(run_dir: Path, runs_dir: Path, limits: demo.DemoLimits | None) -> None:
    """Show the progress, controls, latest sample grid and log of one run, refreshed on a timer."""
    if not runs.is_run(run_dir):
        st.warning(
            dashboard.escape_markdown(
                f"{run_dir} is no longer a run folder; choose another run in the sidebar."
            )
        )
        return
    info = runs.run_info(run_dir)
    read_only = dashboard.is_read_only(run_dir)
    st.subheader(dashboard.escape_markdown(dashboard.run_label(info)))

    live = info.state in runs.LIVE_STATES
    if info.state == "starting":
        text = "starting: the trainer is importing TensorFlow and loading the data"
    else:
        text = f"epoch {info.epoch}/{info.epochs}, step {info.step}/{info.total_steps}"
    st.progress(dashboard.progress_fraction(info.step, info.total_steps), text=text)
    state_column, rate_column, eta_column = st.columns(3)
    state_column.metric("State", info.state)
    rate = info.images_per_second
    rate_column.metric("Images per second", f"{rate:,.0f}" if rate else "–")
    eta = dashboard.format_duration(info.eta_seconds) if info.state == "running" else ""
    eta_column.metric("ETA", eta or "–")

    if info.state in ("failed", "crashed", "diverged") and info.last_error:
        st.error(dashboard.escape_markdown(f"Last error: {info.last_error}"))
    elif info.state == "crashed":
        st.warning(
            "The trainer process is gone (killed or crashed). Resume continues from the last checkpoint."
        )
    shown_error = info.last_error if info.state in ("failed", "crashed", "diverged") else None
    for warning in info.warnings:
        if warning != shown_error:
            st.warning(dashboard.escape_markdown(warning))
    render_controls(run_dir, info.state, read_only, runs_dir, limits)

    samples = history.list_epoch_samples(run_dir)
    if samples:
        epoch, path = list(samples.items())[-1]
        caption = "before training" if epoch == 0 else f"after epoch {epoch}"
        try:
            grid = history.read_grid(path)
        except history.HistoryError as error:
            st.warning(dashboard.escape_markdown(f"The sample grid {caption} cannot be shown: {error}"))
        else:
            st.image(
                png_bytes(grid, dashboard.display_scale(grid.shape[1], target=360)),
                caption=f"Sample grid {caption}, from the run's fixed sample seeds",
            )
    elif live:
        st.caption("The first sample grid appears once the trainer has built the model.")

    log_path = run_dir / runs.LOG_FILE
    with st.expander(f"{runs.LOG_FILE}, last {LOG_LINES} lines", expanded=info.state == "failed"):
        st.code(dashboard.log_tail(log_path, LOG_LINES) or "(empty)", language=None, wrap_lines=True)


def render_controls(
    run_dir: Path, state: str, read_only: bool, runs_dir: Path, limits: demo.DemoLimits | None
) -> None:
    if read_only:
        st.caption("The shipped demo run is read-only: train your own run with the form above.")
        return
    if state in ("starting", "running"):
        st.button("Stop", key="stop_run", on_click=stop_run, args=(run_dir,))
    elif state == "stopping":
        st.caption("Stopping: the trainer writes a checkpoint after the current step, then exits.")
    elif state in runs.RESUMABLE_STATES:
        st.button(
            "Resume",
            key="resume_run",
            type="primary",
            on_click=start_run,
            args=(run_dir, True, runs_dir, limits),
            help="Continue from the latest checkpoint with the same config, step and optimizer state.",
        )
    elif state == "new":
        st.button(
            "Start",
            key="start_run",
            type="primary",
            on_click=start_run,
            args=(run_dir, False, runs_dir, limits),
        )
    render_control_message(run_dir)


def render_control_message(run_dir: Path) -> None:
    """Show the kept outcome of the last press on this run; a message about another run is dropped."""
    message = st.session_state.get(CONTROL_MESSAGE_KEY)
    if not message:
        return
    if message["run"] != str(run_dir):
        dismiss_control_message()
        return
    text = dashboard.escape_markdown(message["text"])
    text_column, dismiss_column = st.columns([6, 1], vertical_alignment="center")
    (text_column.error if message["kind"] == "error" else text_column.info)(text)
    dismiss_column.button("Dismiss", key="dismiss_control_message", on_click=dismiss_control_message)


@st.fragment(run_every=_shared.REFRESH_SECONDS)
def render_devices(run_dir: Path | None) -> None:
    """Show the GPUs visible to this server's TensorFlow, and the devices the selected run's trainer recorded.

    It refreshes on a timer because a trainer records its devices a few
    seconds after its run is started from the form.
    """
    gpus = devices.visible_gpus()
    if gpus:
        st.caption(f"GPUs visible to TensorFlow: {', '.join(gpus)}.")
    else:
        st.info("No GPU is visible to TensorFlow, so training runs on the CPU.")
    if run_dir is not None and runs.is_run(run_dir):
        text = dashboard.run_devices_text(run_dir.name, runs.read_status(run_dir))
        st.caption(dashboard.escape_markdown(text))


# Page -------------------------------------------------------------------------------

_shared.run_through_app()
st.title("Train")
st.caption(
    "Start a DCGAN training run on handwritten digits, watch it, stop it and resume it. "
    "Every run is a folder; `python -m gan` starts, stops and lists the same runs from a shell."
)
limits = _shared.demo_limits()
_shared.show_demo_notice(limits)
device_notice = st.empty()

runs_dir = _shared.runs_dir()
init_form_state(runs_dir, limits)
render_form(runs_dir, limits, expanded=not dashboard.dashboard_runs(runs_dir))

st.header("Runs")
render_runs_table(runs_dir)
run_dir = _shared.current_run()
if run_dir is not None:
    render_run(run_dir, runs_dir, limits)

# Last, because the first call imports TensorFlow, which takes a few seconds.
with device_notice.container():
    render_devices(run_dir)
