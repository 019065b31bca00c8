"""Session state and layout that every page shares: the runs folder, the current run, demo mode.

``streamlit_app.py`` draws the sidebar with ``render_sidebar`` before the
page runs. The pages read the same keys through the functions here, which
fall back to the defaults when a page runs without the sidebar.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from streamlit.errors import StreamlitSecretNotFoundError

from gan import dashboard, demo, runs
from gan.errors import InputError

# Session state keys; RUNS_DIR_KEY and RUN_KEY are also the sidebar widgets' keys.
RUNS_DIR_KEY = "runs_dir"
RUN_KEY = "run"
PENDING_RUN_KEY = "pending_run"

# Seconds between two reads of a run folder by the live parts of the pages.
REFRESH_SECONDS = 2.0


def demo_limits() -> demo.DemoLimits | None:
    """Return the demo limits from $GAN_DEMO or the secret ``demo``; stop the page when they are invalid."""
    try:
        secret = st.secrets.get("demo")
    except (StreamlitSecretNotFoundError, FileNotFoundError):
        secret = None  # no secrets.toml: only the environment decides
    try:
        return demo.load_limits(secret)
    except InputError as error:
        st.error(dashboard.escape_markdown(f"Demo mode is misconfigured: {error}"))
        st.stop()


def show_demo_notice(limits: demo.DemoLimits | None) -> None:
    if limits is None:
        return
    lines = "\n".join(f"- {dashboard.escape_markdown(line)}" for line in limits.describe())
    st.info(f"**Demo mode.** Requests past these limits are rejected:\n{lines}")


def runs_dir() -> Path:
    """Return the runs root of this session; demo mode always uses the server's default.

    Raises InputError for a "Runs folder" input that names no usable folder,
    which the sidebar reports before any page runs.
    """
    if demo_limits() is not None:
        return runs.runs_root()
    return dashboard.check_runs_folder(st.session_state.get(RUNS_DIR_KEY))


def current_run() -> Path | None:
    value = st.session_state.get(RUN_KEY)
    return Path(value) if value else None


def select_run(run_dir: Path) -> None:
    """Make ``run_dir`` the current run on the next script run (the sidebar applies it)."""
    st.session_state[PENDING_RUN_KEY] = str(run_dir)


def render_sidebar() -> None:
    """Draw the runs folder and run choosers in the sidebar and keep their values in session state."""
    limits = demo_limits()
    if RUNS_DIR_KEY not in st.session_state or limits is not None:
        st.session_state[RUNS_DIR_KEY] = str(runs.runs_root())
    with st.sidebar:
        st.text_input(
            "Runs folder",
            key=RUNS_DIR_KEY,
            disabled=limits is not None,
            help="Folder that contains one subfolder per run (python -m gan --runs-dir, $GAN_RUNS_DIR). "
            "Fixed in demo mode.",
        )
    try:
        root = runs_dir()
    except InputError as error:
        st.session_state.pop(RUN_KEY, None)
        st.error(dashboard.escape_markdown(error))
        st.stop()
    with st.sidebar:
        found = dashboard.dashboard_runs(root)
        if not found:
            if root.exists():
                st.caption("No runs in this folder yet. Start one on the Train page.")
            else:
                st.caption("This folder does not exist yet: starting a run on the Train page creates it.")
            st.session_state.pop(RUN_KEY, None)
            return
        # No state in the labels: the sidebar is drawn once per page run, so a
        # state here would go stale, while each page shows the live one.
        labels = {str(info.path): dashboard.run_label(info) for info in found}
        pending = st.session_state.pop(PENDING_RUN_KEY, None)
        if pending in labels:
            st.session_state[RUN_KEY] = pending
        elif st.session_state.get(RUN_KEY) not in labels:
            st.session_state[RUN_KEY] = next(iter(labels))
        st.selectbox(
            "Run",
            options=list(labels),
            format_func=labels.get,
            key=RUN_KEY,
            help="The run that the Train, Losses and Generate pages show.",
        )


def run_through_app() -> None:
    """Rerun through streamlit_app.py when Streamlit has run this page file on its own.

    Streamlit treats a folder named pages/ beside the entry script as an
    old-style multipage app until the process first calls st.navigation. So
    the first request after a server start for /losses runs pages/losses.py
    alone, without the sidebar, and lists every file in pages/ as a page.
    """
    # NOTE: PagesManager.uses_pages_directory is a Streamlit internal (checked
    # with Streamlit 1.67). st.navigation clears it too, for the whole process.
    # So when two sessions open deep links on a fresh server, the second one can
    # find it cleared and render this page alone. A reload fixes that session.
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()
