"""The dashboard pages under Streamlit's AppTest, on real runs trained with a tiny config.

AppTest runs the scripts in this process, so the monkeypatched environment
and gan.dashboard paths reach the pages. Trainers the Train page launches are
real detached processes; every test stops the ones it started.
"""

import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from gan import dashboard, history, runs
from gan.config import TrainConfig

REPOSITORY = Path(__file__).resolve().parents[1]
APP = REPOSITORY / "streamlit_app.py"
TIMEOUT = 60

# Small enough to train in seconds on a CPU, with checkpoints and samples on the way.
FAST = {
    "max_images": 256,
    "epochs": 2,
    "batch_size": 32,
    "width": 8,
    "latent_dim": 16,
    "sample_count": 16,
    "log_every_steps": 2,
    "checkpoint_every_steps": 4,
    "eval_every_epochs": 0,  # the quality metrics add seconds per epoch
}


# Fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, mnist_path):
    """A finished run of the fast config, trained once for the whole module."""
    from gan.train import train

    run_dir = runs.create_run(
        tmp_path_factory.mktemp("trained") / "fast", TrainConfig(data=str(mnist_path), **FAST)
    )
    assert train(run_dir) == "finished"
    return run_dir


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory, mnist_path):
    """A finished run of the fast config with the conditional model."""
    from gan.train import train

    config = TrainConfig(data=str(mnist_path), model="conditional", **FAST)
    run_dir = runs.create_run(tmp_path_factory.mktemp("conditional") / "classes", config)
    assert train(run_dir) == "finished"
    return run_dir


@pytest.fixture
def runs_dir(tmp_path, monkeypatch, mnist_path):
    """An empty runs root for the pages, with no shipped assets and demo mode off."""
    root = tmp_path / "runs"
    root.mkdir()
    monkeypatch.setenv("GAN_RUNS_DIR", str(root))
    monkeypatch.setenv("GAN_MNIST_PATH", str(mnist_path))
    monkeypatch.delenv("GAN_DEMO", raising=False)
    monkeypatch.setattr(dashboard, "DEMO_RUN_DIR", tmp_path / "no-demo-run")
    monkeypatch.setattr(dashboard, "PRETRAINED_GENERATOR", tmp_path / "no-pretrained.keras")
    yield root
    for info in runs.list_runs(root):
        if info.state in runs.LIVE_STATES:
            stop_trainer(info.path)


def stop_trainer(run_dir: Path) -> None:
    # RunError: the trainer exited between the listing and the stop.
    with contextlib.suppress(runs.RunError):
        runs.stop(run_dir, wait_seconds=30)
    status = runs.read_status(run_dir)
    if status["state"] in runs.LIVE_STATES and status.get("pid"):
        os.kill(status["pid"], signal.SIGKILL)


def copy_run(run_dir: Path, runs_root: Path, name: str) -> Path:
    copy = runs_root / name
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("*.lock"))
    return copy


def open_page(page: str, query: dict[str, str] | None = None, **session) -> AppTest:
    """Run the app, switch to ``page`` (e.g. "pages/train.py") and run it with ``session`` values set.

    ``query`` is the URL's query string, as a browser that opens a copied link sends it.
    """
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.query_params.update(query or {})
    for key, value in session.items():
        at.session_state[key] = value
    at.run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def wait_for_state(run_dir: Path, states: tuple[str, ...], timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    state = runs.read_status(run_dir)["state"]
    while state not in states:
        if time.monotonic() > deadline:
            log = dashboard.log_tail(run_dir / runs.LOG_FILE)
            raise AssertionError(f"run {run_dir.name} is {state} after {timeout} s, not {states}:\n{log}")
        time.sleep(0.5)
        state = runs.read_status(run_dir)["state"]
    return state


def run_folders(runs_dir: Path) -> list[Path]:
    return [path for path in runs_dir.iterdir() if path.is_dir()]


def messages(at: AppTest, kind: str) -> list[str]:
    """Return the texts of the ``kind`` elements (error, info, ...) as the browser shows them.

    The pages escape Markdown punctuation in messages with user input, so
    this removes the backslash of each escape, as the Markdown renderer does.
    """
    return [re.sub(r"\\(.)", r"\1", element.value) for element in getattr(at, kind)]


def button_keys(at: AppTest) -> list[str]:
    return [button.key for button in at.button]


def submit_train_form(at: AppTest, run_name: str, **values) -> AppTest:
    at.text_input(key="train_run_name").set_value(run_name)
    for name, value in values.items():
        widget_key = f"train_{name}"
        if isinstance(value, str):
            at.text_input(key=widget_key).set_value(value)
        else:
            at.number_input(key=widget_key).set_value(value)
    submit = next(button for button in at.button if button.label == "Start training")
    submit.click().run()
    assert not at.exception, at.exception
    return at


def chart_data(chart) -> "pyarrow.Table":
    return pyarrow.ipc.open_stream(chart.proto.datasets[0].data.data).read_all().to_pandas()


# All pages ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("page", "hint"),
    [
        ("pages/train.py", "fill in the form above"),
        ("pages/losses.py", "Start a run on the **Train** page"),
        ("pages/generate.py", "Train a run on the **Train** page"),
    ],
)
def test_page_without_runs_says_next_step(runs_dir, page, hint):
    at = open_page(page)
    assert any(hint in text for text in messages(at, "info")), messages(at, "info")


def test_app_imports_tensorflow_before_page(runs_dir, monkeypatch):
    """The first script run imports TensorFlow under the lock before the page runs; later runs skip it."""
    calls = []
    original = dashboard.import_tensorflow

    def recorded():
        calls.append(dashboard.tensorflow_ready())
        original()

    monkeypatch.setattr(dashboard, "_tensorflow_ready", False)
    monkeypatch.setattr(dashboard, "import_tensorflow", recorded)
    at = open_page("pages/losses.py")
    assert not at.exception
    assert calls == [False]
    assert dashboard.tensorflow_ready()

    at.run()
    assert calls == [False]


def test_train_page_reports_device(runs_dir):
    at = open_page("pages/train.py")
    notices = messages(at, "info") + messages(at, "caption")
    assert any("GPU" in text for text in notices)


def test_train_page_shows_run_devices(runs_dir, trained_run):
    run_dir = copy_run(trained_run, runs_dir, "devices")
    recorded = json.loads((run_dir / runs.STATUS_FILE).read_text())
    assert recorded["devices"]

    at = open_page("pages/train.py", run=str(run_dir))
    captions = messages(at, "caption")
    expected = f"Run devices: its trainer's TensorFlow saw {', '.join(recorded['devices'])}."
    assert any(text.startswith(expected) for text in captions), captions
    replicas = ", ".join(recorded["replica_devices"])
    assert any(f"Its strategy's 1 replica(s) used {replicas}." in text for text in captions), captions


def test_train_page_status_without_devices(runs_dir, trained_run):
    run_dir = copy_run(trained_run, runs_dir, "old")
    status = json.loads((run_dir / runs.STATUS_FILE).read_text())
    for key in ("devices", "replica_devices"):
        del status[key]
    (run_dir / runs.STATUS_FILE).write_text(json.dumps(status))

    at = open_page("pages/train.py", run=str(run_dir))
    captions = messages(at, "caption")
    assert any(text.startswith("Run old: its status.json lists no devices.") for text in captions), captions
    assert any(metric.value == "finished" for metric in at.metric)


# Train: the form -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"epochs": 0}, "epochs must be an integer from 1 to 100000, got 0; the default is 20."),
        ({"max_images": 100, "batch_size": 128}, "batch_size 128 is larger than the 100 training images"),
        ({"generator_lr": "nan"}, "generator_lr must be a number greater than 0 and at most 1, got nan"),
        (
            {"discriminator_lr": "0"},
            "discriminator_lr must be a number greater than 0 and at most 1, got 0.0",
        ),
        ({"data": "/no/such/digits.npz"}, "data '/no/such/digits.npz' is neither a known dataset"),
        ({"run_name": "../escape"}, "run_name must be one folder name, without path separators"),
        ({"run_name": "bad\\name"}, "letters, digits, '.', '_' and '-', got 'bad\\\\name'."),
        ({"run_name": "pretrained"}, "run_name 'pretrained' is reserved"),
        ({"run_name": "has space"}, "run_name may contain only letters"),
    ],
)
def test_train_form_rejects_bad_value(runs_dir, values, expected):
    at = open_page("pages/train.py")
    run_name = values.pop("run_name", "rejected")
    submit_train_form(at, run_name, **values)

    assert any(expected in text for text in messages(at, "error")), messages(at, "error")
    assert run_folders(runs_dir) == []
    assert not messages(at, "success")


def test_train_form_rejects_existing_name(runs_dir):
    runs.create_run(runs_dir / "taken", TrainConfig(**FAST))
    at = open_page("pages/train.py")
    submit_train_form(at, "taken")
    assert any("run_name 'taken' already exists" in text for text in messages(at, "error"))
    assert runs.read_status(runs_dir / "taken")["state"] == "new"


@pytest.mark.slow
def test_train_form_launches_stops_and_resumes(runs_dir):
    at = open_page("pages/train.py")
    # Enough epochs that the run is still training when it is stopped.
    submit_train_form(at, "live", **{**FAST, "epochs": 100, "checkpoint_every_steps": 8})
    run_dir = runs_dir / "live"
    assert messages(at, "error") == []
    assert any("Started run live" in text for text in messages(at, "success"))
    assert at.session_state["run"] == str(run_dir)
    table = at.dataframe[0].value
    assert table.loc[table["run"] == "live", "model"].tolist() == ["dcgan"]
    assert runs.load_config(run_dir).epochs == 100

    wait_for_state(run_dir, ("running",))
    at.run()
    assert "stop_run" in button_keys(at)
    assert any(metric.value == "running" for metric in at.metric)
    # A second browser tab on the same run.
    other_tab = open_page("pages/train.py", run=str(run_dir))

    at.button(key="stop_run").click().run()
    assert any("Asked run live to stop" in text for text in messages(at, "info"))
    wait_for_state(run_dir, ("stopped",), timeout=60)
    at.run()
    # The message stays through the reruns that follow, until the next press on the run.
    assert any("Asked run live to stop" in text for text in messages(at, "info"))
    other_tab.run()
    assert "resume_run" in button_keys(at)
    assert "resume_run" in button_keys(other_tab)
    stopped_step = runs.read_status(run_dir)["step"]

    at.button(key="resume_run").click().run()
    assert any("Resumed run live" in text for text in messages(at, "info"))
    assert wait_for_state(run_dir, ("running", "finished")) in ("running", "finished")
    assert runs.read_status(run_dir)["step"] >= stopped_step

    # The other tab still offers Resume; pressing it now is rejected.
    other_tab.button(key="resume_run").click().run()
    rejected = messages(other_tab, "error")
    assert any("run live is already" in text for text in rejected), rejected
    stop_trainer(run_dir)


def test_train_form_jit_compile_checkbox(runs_dir):
    at = open_page("pages/train.py")
    checkbox = at.checkbox(key="train_jit_compile")
    assert checkbox.value is False
    assert "meant for GPUs" in checkbox.help
    assert "measured slower" in checkbox.help

    checkbox.check()
    submit_train_form(at, "xla", **{**FAST, "epochs": 1})
    assert messages(at, "error") == []
    config = json.loads((runs_dir / "xla" / runs.CONFIG_FILE).read_text())
    assert config["jit_compile"] is True
    table = at.dataframe[0].value
    assert table.loc[table["run"] == "xla", "jit_compile"].tolist() == ["on"]
    stop_trainer(runs_dir / "xla")


def test_train_form_reports_all_errors_at_once(runs_dir):
    at = open_page("pages/train.py")
    submit_train_form(at, "several", **{**FAST, "epochs": 0, "max_images": 100, "batch_size": 128})
    errors = messages(at, "error")
    assert "epochs must be an integer from 1 to 100000, got 0; the default is 20." in errors, errors
    assert any("batch_size 128 is larger than the 100 training images" in text for text in errors), errors
    assert run_folders(runs_dir) == []


def test_train_form_max_images_clears_to_every_image(runs_dir):
    at = open_page("pages/train.py")
    submit_train_form(at, "limited", **{**FAST, "epochs": 0, "max_images": 100})
    max_images = at.number_input(key="train_max_images")
    assert max_images.value == 100
    # Without a default, the browser lets the user empty the field instead of turning it into 0.
    assert not max_images.proto.HasField("default")

    submit_train_form(at, "limited", **{**FAST, "epochs": 0, "max_images": None})
    errors = messages(at, "error")
    assert errors == ["epochs must be an integer from 1 to 100000, got 0; the default is 20."]
    assert at.number_input(key="train_max_images").value is None


def test_train_form_escapes_typed_values(runs_dir):
    at = open_page("pages/train.py")
    submit_train_form(at, "bad\\name", data="/no/such/*folder*_x")
    raw = [element.value for element in at.error]
    # Escaped for Markdown, so the browser shows the backslash and the asterisks as typed.
    assert any("'bad\\\\\\\\name'" in text for text in raw), raw
    assert any("\\*folder\\*\\_x" in text for text in raw), raw


def test_train_control_message_stays_until_dismissed(runs_dir, monkeypatch):
    run_dir = runs.create_run(runs_dir / "unstarted", TrainConfig(**FAST))

    def failing_launch(*args, **kwargs):
        raise OSError("no room for the trainer")

    monkeypatch.setattr(runs, "launch", failing_launch)
    at = open_page("pages/train.py", run=str(run_dir))
    at.button(key="start_run").click().run()
    expected = "Starting the trainer failed: no room for the trainer"
    assert expected in messages(at, "error")

    # The run's fragment reruns on a timer; a rerun must not drop the message.
    at.run()
    at.run()
    assert expected in messages(at, "error")

    at.button(key="dismiss_control_message").click().run()
    assert expected not in messages(at, "error")


def test_train_control_message_dropped_on_other_run(runs_dir, monkeypatch):
    first = runs.create_run(runs_dir / "first", TrainConfig(**FAST))
    second = runs.create_run(runs_dir / "second", TrainConfig(**FAST))

    def failing_launch(*args, **kwargs):
        raise OSError("no room for the trainer")

    monkeypatch.setattr(runs, "launch", failing_launch)
    at = open_page("pages/train.py", run=str(first))
    at.button(key="start_run").click().run()
    assert any("Starting the trainer failed" in text for text in messages(at, "error"))

    at.sidebar.selectbox(key="run").set_value(str(second)).run()
    assert not any("Starting the trainer failed" in text for text in messages(at, "error"))
    at.sidebar.selectbox(key="run").set_value(str(first)).run()
    assert not any("Starting the trainer failed" in text for text in messages(at, "error"))


def test_sidebar_run_label_has_no_state(runs_dir):
    runs.create_run(runs_dir / "web1", TrainConfig(**FAST))
    at = open_page("pages/train.py")
    assert at.sidebar.selectbox(key="run").options == ["web1"]


# Losses -------------------------------------------------------------------------------------


def test_losses_page_charts_real_run(runs_dir, trained_run):
    run_dir = copy_run(trained_run, runs_dir, "copied")
    metrics_path = run_dir / runs.METRICS_FILE
    complete = history.read_history(metrics_path)
    last_step = complete["step"].max()
    # A trainer killed in the middle of a write leaves a partial last line.
    with open(metrics_path, "a") as handle:
        handle.write(f"{int(last_step) + 2},3,99.5")

    assert len(history.read_history(metrics_path)) == len(complete)
    at = open_page("pages/losses.py", run=str(run_dir))

    charts = at.get("vega_lite_chart")
    # d_loss, g_loss, D(x) and D(G(z)), seconds per epoch, images per second
    assert len(charts) == 5
    loss_points = chart_data(charts[0])
    assert loss_points["step"].max() == last_step
    assert 99.5 not in loss_points["value"].tolist()
    assert set(loss_points["curve"]) == {"raw", "smoothed"}
    epochs_points = chart_data(charts[3])
    assert sorted(epochs_points["epoch"]) == [1, 2]
    assert [slider.value for slider in at.select_slider] == [2]
    labels = [button.label for button in at.get("download_button")]
    assert "copied: metrics.csv" in labels
    assert "Download a GIF of all 3 epoch grids" in labels


def test_losses_sample_downloads_are_bytes(runs_dir, trained_run):
    run_dir = copy_run(trained_run, runs_dir, "downloads")
    at = open_page("pages/losses.py", run=str(run_dir))
    buttons = {button.label: button for button in at.get("download_button")}
    # These buttons sit in a fragment that reruns on a timer, which drops deferred files.
    for label in ("Download the strip as PNG", "Download a GIF of all 3 epoch grids"):
        assert buttons[label].proto.deferred_file_id == "", label
        assert buttons[label].proto.url, label


def test_losses_page_compares_runs(runs_dir, trained_run):
    first = copy_run(trained_run, runs_dir, "first")
    copy_run(trained_run, runs_dir, "second")
    at = open_page("pages/losses.py", run=str(first))
    at.multiselect(key="losses_compare").set_value([str(runs_dir / "second")]).run()
    assert not at.exception
    loss_points = chart_data(at.get("vega_lite_chart")[0])
    assert set(loss_points["run"]) == {"first", "second"}


def test_losses_page_smoothing_changes_curve(runs_dir, trained_run):
    run_dir = copy_run(trained_run, runs_dir, "smooth")
    at = open_page("pages/losses.py", run=str(run_dir))
    at.slider(key="losses_smoothing").set_value(0.0).run()
    points = chart_data(at.get("vega_lite_chart")[0])
    raw = points[points["curve"] == "raw"]["value"].to_numpy()
    smoothed = points[points["curve"] == "smoothed"]["value"].to_numpy()
    np.testing.assert_allclose(raw, smoothed)

    at.slider(key="losses_smoothing").set_value(0.9).run()
    points = chart_data(at.get("vega_lite_chart")[0])
    smoothed = points[points["curve"] == "smoothed"]["value"].to_numpy()
    assert not np.allclose(raw, smoothed)


# Generate ---------------------------------------------------------------------------------


def generate_png(runs_dir: Path, run_dir: Path, **settings) -> tuple[bytes, str]:
    at = open_page("pages/generate.py", run=str(run_dir))
    for key, value in settings.items():
        at.number_input(key=key).set_value(value)
    at.run()
    assert not at.exception, at.exception
    assert messages(at, "error") == []
    return at.session_state["generate_grid_png"], at.code[0].value


def test_generate_same_settings_same_pixels(runs_dir, trained_run, tmp_path):
    run_dir = copy_run(trained_run, runs_dir, "gen")
    settings = {"seed": 3, "count": 12, "columns": 4, "latent_scale": 0.8}
    first, command = generate_png(runs_dir, run_dir, **settings)
    second, _ = generate_png(runs_dir, run_dir, **settings)
    other_seed, _ = generate_png(runs_dir, run_dir, **{**settings, "seed": 4})

    assert first == second
    assert first != other_seed
    with Image.open(io.BytesIO(first)) as picture:
        # 3 rows and 4 columns of 28-pixel digits with 2-pixel gaps, at scale 1.
        assert picture.size == (4 * 30 + 2, 3 * 30 + 2)

    assert "--checkpoint 16" in command
    output = tmp_path / "cli.png"
    argv = command.split()
    argv[argv.index("--output") + 1] = str(output)
    completed = subprocess.run(
        [sys.executable, *argv[1:]], cwd=REPOSITORY, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    assert output.read_bytes() == first


def test_generate_lists_checkpoints_newest_first(runs_dir, trained_run):
    run_dir = copy_run(trained_run, runs_dir, "checkpoints")
    at = open_page("pages/generate.py", run=str(run_dir))
    checkpoint = at.selectbox(key=f"generate_checkpoint:{run_dir}")
    assert checkpoint.options[0] == "epoch 2, step 16 (latest)"
    assert len(checkpoint.options) == len(list((run_dir / runs.CHECKPOINTS_DIR).glob("ckpt-*.json")))

    checkpoint.set_value(checkpoint.options[-1].removesuffix(" (latest)")).run()
    assert not at.exception
    step = checkpoint.options[-1].split("step ")[1]
    assert f"--checkpoint {step}" in at.code[0].value


def choose_checkpoint(at: AppTest, run_dir: Path, label: str) -> None:
    at.selectbox(key=f"generate_checkpoint:{run_dir}").set_value(label).run()
    assert not at.exception, at.exception


def test_generate_link_selects_checkpoint(runs_dir, trained_run):
    run_dir = copy_run(trained_run, runs_dir, "linked")
    explicit = open_page("pages/generate.py", run=str(run_dir))
    labels = explicit.selectbox(key=f"generate_checkpoint:{run_dir}").options
    earliest = labels[-1]
    step = earliest.split("step ")[1]
    choose_checkpoint(explicit, run_dir, earliest)
    assert explicit.query_params["run"] == "linked"
    assert explicit.query_params["checkpoint"] == step
    explicit_png = explicit.session_state["generate_grid_png"]

    # A reload, or a copied link in another tab: a new session with only the URL.
    linked = open_page("pages/generate.py", query={"run": "linked", "checkpoint": step})
    assert linked.selectbox(key="generate_source").value == str(run_dir)
    assert linked.selectbox(key=f"generate_checkpoint:{run_dir}").value == earliest
    assert f"--checkpoint {step}" in linked.code[0].value
    assert linked.session_state["generate_grid_png"] == explicit_png
    assert messages(linked, "warning") == []


def test_generate_link_prefers_url_over_sidebar(runs_dir, trained_run):
    linked_run = copy_run(trained_run, runs_dir, "linked")
    other = copy_run(trained_run, runs_dir, "other")
    at = open_page("pages/generate.py", query={"run": "linked", "checkpoint": "8"}, run=str(other))
    assert at.selectbox(key="generate_source").value == str(linked_run)
    assert at.selectbox(key=f"generate_checkpoint:{linked_run}").value == "epoch 1, step 8"


def test_generate_link_to_missing_checkpoint_warns(runs_dir, trained_run):
    run_dir = copy_run(trained_run, runs_dir, "pruned")
    at = open_page("pages/generate.py", query={"run": "pruned", "checkpoint": "785"})
    warnings = messages(at, "warning")
    assert any("checkpoint '785' of run 'pruned'" in text for text in warnings), warnings
    assert at.selectbox(key=f"generate_checkpoint:{run_dir}").value == "epoch 2, step 16"
    assert at.query_params["checkpoint"] == "16"
    assert "generate_grid_png" in at.session_state


def test_generate_link_to_missing_run_warns(runs_dir, trained_run):
    run_dir = copy_run(trained_run, runs_dir, "present")
    at = open_page("pages/generate.py", query={"run": "web1", "checkpoint": "785"})
    warnings = messages(at, "warning")
    assert any("run 'web1', which is not in the runs folder" in text for text in warnings), warnings
    assert at.selectbox(key="generate_source").value == str(run_dir)
    assert at.query_params["run"] == "present"
    assert "generate_grid_png" in at.session_state


def test_generate_link_to_exported_generator(runs_dir, trained_run):
    run_dir = copy_run(trained_run, runs_dir, "exported")
    shutil.rmtree(run_dir / runs.CHECKPOINTS_DIR)
    at = open_page("pages/generate.py", query={"run": "exported", "checkpoint": "exported"})
    assert messages(at, "warning") == []
    assert at.selectbox(key=f"generate_checkpoint:{run_dir}").value == runs.GENERATOR_FILE
    assert at.query_params["checkpoint"] == "exported"
    assert "--run-dir" in at.code[0].value


def test_generate_interpolation_strip(runs_dir, trained_run):
    run_dir = copy_run(trained_run, runs_dir, "strip")
    at = open_page("pages/generate.py", run=str(run_dir))
    at.number_input(key="steps").set_value(6).run()
    with Image.open(io.BytesIO(at.session_state["generate_strip_png"])) as picture:
        assert picture.size == (6 * 30 + 2, 32)
    assert "--interpolate-to 1 --steps 6" in at.code[1].value


def test_generate_conditional_classes(runs_dir, conditional_run):
    run_dir = copy_run(conditional_run, runs_dir, "classes")
    at = open_page("pages/generate.py", run=str(run_dir))
    digit = at.selectbox(key="generate_digit")
    assert digit.value == "rows"
    assert at.number_input(key="count").disabled
    with Image.open(io.BytesIO(at.session_state["generate_grid_png"])) as picture:
        # One row per class, 8 columns.
        assert picture.size == (8 * 30 + 2, 10 * 30 + 2)
    assert "--digit rows" in at.code[0].value

    digit.set_value(3).run()
    assert not at.exception
    assert "--digit 3" in at.code[0].value
    with Image.open(io.BytesIO(at.session_state["generate_grid_png"])) as picture:
        assert picture.size == (8 * 30 + 2, 8 * 30 + 2)

    at.selectbox(key="generate_interpolation_digit").set_value(7).run()
    assert "--digit 7 --interpolate-to 1" in at.code[1].value
    assert "generate_strip_png" in at.session_state


def test_generate_offers_shipped_generator(runs_dir, trained_run, monkeypatch):
    monkeypatch.setattr(dashboard, "PRETRAINED_GENERATOR", trained_run / runs.GENERATOR_FILE)
    at = open_page("pages/generate.py")
    source = at.selectbox(key="generate_source")
    assert source.value == "pretrained"
    assert "Pretrained (shipped)" in source.options
    assert "--generator" in at.code[0].value
    assert "generate_grid_png" in at.session_state
    assert at.query_params["run"] == "pretrained"
    assert "checkpoint" not in at.query_params


def test_generate_link_to_shipped_generator(runs_dir, trained_run, monkeypatch):
    monkeypatch.setattr(dashboard, "PRETRAINED_GENERATOR", trained_run / runs.GENERATOR_FILE)
    copy_run(trained_run, runs_dir, "newer")
    at = open_page("pages/generate.py", query={"run": "pretrained"})
    assert at.selectbox(key="generate_source").value == "pretrained"


# The shipped demo run ------------------------------------------------------------------------


def test_shipped_demo_run_is_read_only(runs_dir, trained_run, tmp_path, monkeypatch):
    shipped = copy_run(trained_run, tmp_path / "assets", "demo-run")
    monkeypatch.setattr(dashboard, "DEMO_RUN_DIR", shipped)
    at = open_page("pages/train.py")

    run = at.sidebar.selectbox(key="run")
    assert run.value == str(shipped)
    # The state is left out of the sidebar, which is not refreshed while a run changes.
    assert run.options == ["demo-run (shipped)"]
    table = at.dataframe[0].value
    assert table["run"].tolist() == ["demo-run (shipped)"]
    assert not {"stop_run", "resume_run", "start_run"} & set(button_keys(at))
    assert any("read-only" in text for text in messages(at, "caption"))

    # Even a stopped shipped run offers no Resume.
    status = json.loads((shipped / runs.STATUS_FILE).read_text())
    (shipped / runs.STATUS_FILE).write_text(json.dumps({**status, "state": "stopped"}))
    at.run()
    assert "resume_run" not in button_keys(at)


# Demo mode ----------------------------------------------------------------------------------


def test_demo_notice_on_every_page(runs_dir, monkeypatch):
    monkeypatch.setenv("GAN_DEMO", "1")
    for page in ("pages/train.py", "pages/losses.py", "pages/generate.py"):
        at = open_page(page)
        notice = " ".join(messages(at, "info"))
        assert "Demo mode" in notice, page
        assert "at most 5 epochs per run" in notice, page
        assert "at most 256 digits per generated grid" in notice, page


def test_demo_mode_rejects_too_many_epochs(runs_dir, monkeypatch):
    monkeypatch.setenv("GAN_DEMO", "1")
    at = open_page("pages/train.py")
    # The form starts within the limits.
    assert at.number_input(key="train_epochs").value == 5
    assert at.number_input(key="train_max_images").value == 10_000
    submit_train_form(at, "too-long", **{**FAST, "epochs": 6})
    assert any("epochs must be at most 5 in demo mode, got 6." in text for text in messages(at, "error"))
    assert run_folders(runs_dir) == []


def test_demo_mode_reports_every_limit(runs_dir, monkeypatch):
    monkeypatch.setenv("GAN_DEMO", "1")
    at = open_page("pages/train.py")
    submit_train_form(
        at, "too-big", **{**FAST, "max_images": 1000, "epochs": 6, "width": 65, "batch_size": 512}
    )
    errors = messages(at, "error")
    assert "epochs must be at most 5 in demo mode, got 6." in errors, errors
    assert "width must be at most 64 in demo mode, got 65." in errors, errors
    assert "batch_size must be at most 256 in demo mode, got 512." in errors, errors
    assert run_folders(runs_dir) == []


@pytest.mark.parametrize(
    ("max_images", "expected"),
    [
        (None, "max_images is required in demo mode: enter a number of images from 1 to 10000."),
        (0, "max_images must be a whole number from 1 to 10000 in demo mode, got 0."),
    ],
)
def test_demo_mode_max_images_message(runs_dir, monkeypatch, max_images, expected):
    monkeypatch.setenv("GAN_DEMO", "1")
    at = open_page("pages/train.py")
    submit_train_form(at, "no-limit", **{**FAST, "max_images": max_images})
    errors = messages(at, "error")
    assert expected in errors, errors
    assert not any("Leave it empty" in text for text in errors), errors
    assert run_folders(runs_dir) == []


def test_demo_mode_rejects_large_grid(runs_dir, trained_run, monkeypatch):
    run_dir = copy_run(trained_run, runs_dir, "demo-grid")
    monkeypatch.setenv("GAN_DEMO", "1")
    at = open_page("pages/generate.py", run=str(run_dir))
    at.number_input(key="count").set_value(300).run()
    expected = "Digits must be at most 256 per grid in demo mode, got 300."
    assert expected in messages(at, "error"), messages(at, "error")
    assert "generate_grid_png" not in at.session_state


def test_demo_secret_rejects_long_interpolation(runs_dir, trained_run):
    run_dir = copy_run(trained_run, runs_dir, "demo-strip")
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.secrets["demo"] = True
    at.session_state["run"] = str(run_dir)
    at.run()
    at.switch_page("pages/generate.py").run()
    at.number_input(key="steps").set_value(40).run()
    assert "Steps must be at most 32 in demo mode, got 40." in messages(at, "error"), messages(at, "error")
    assert at.sidebar.text_input(key="runs_dir").disabled
