"""gan.dashboard: run names, the Train form's values, the runs table and generator sources."""

import json
import shlex
from pathlib import Path

import pytest

from gan import dashboard, demo, runs
from gan.config import TrainConfig
from gan.generate import GridRequest

FORM_DEFAULTS = {
    name: repr(value) if isinstance(value, float) else value
    for name, value in TrainConfig().to_dict().items()
}


def form(**changes):
    return {**FORM_DEFAULTS, **changes}


# Run names ----------------------------------------------------------------------------------


def test_default_run_name_is_timestamped(tmp_path):
    name = dashboard.default_run_name(tmp_path, now=0)
    assert name.startswith("run-19")
    assert len(name) == len("run-YYYYMMDD-HHMMSS")


def test_default_run_name_avoids_existing(tmp_path):
    existing_name = dashboard.default_run_name(tmp_path, now=0)
    (tmp_path / existing_name).mkdir()
    assert dashboard.default_run_name(tmp_path, now=0) == f"{existing_name}-2"


def test_check_run_name_accepts_folder_name(tmp_path):
    assert dashboard.check_run_name(" dcgan-v1.2_a ", tmp_path) == tmp_path / "dcgan-v1.2_a"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "run_name is empty"),
        ("a/b", "one folder name, without path separators"),
        ("..\\b", "one folder name, without path separators"),
        ("pretrained", "reserved"),
        ("shipped-demo-run", "reserved"),
        ("..", "must not contain '..'"),
        (".hidden", "may contain only"),
        ("two words", "may contain only"),
        ("x" * 101, "at most 100 characters"),
    ],
)
def test_check_run_name_rejects(tmp_path, name, message):
    with pytest.raises(dashboard.RunNameError, match=message):
        dashboard.check_run_name(name, tmp_path)


def test_check_run_name_rejects_existing(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(dashboard.RunNameError, match="already exists"):
        dashboard.check_run_name("taken", tmp_path)


# The Train form ---------------------------------------------------------------------------------


def test_form_defaults_give_default_config():
    config, errors = dashboard.config_from_form(form())
    assert errors == {}
    assert config == TrainConfig()


def test_form_parses_scientific_notation():
    config, errors = dashboard.config_from_form(form(generator_lr="1e-3", max_images=None))
    assert errors == {}
    assert config.generator_lr == 0.001
    assert config.max_images is None


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"epochs": 0}, "epochs", "epochs must be an integer from 1 to 100000, got 0"),
        ({"generator_lr": "nan"}, "generator_lr", "number greater than 0 and at most 1"),
        ({"generator_lr": "inf"}, "generator_lr", "number greater than 0 and at most 1"),
        ({"discriminator_lr": "0"}, "discriminator_lr", "number greater than 0 and at most 1"),
        ({"beta_1": "fast"}, "beta_1", "beta_1 must be a number such as 0.5, got 'fast'"),
        ({"data": "/no/such/folder"}, "data", "neither a known dataset"),
        ({"max_images": 100, "batch_size": 128}, "batch_size", "larger than the 100 training images"),
        ({"max_images": 0}, "max_images", "max_images must be an integer from 1 to"),
        ({"model": "gan"}, "model", "model must be one of dcgan, conditional"),
    ],
)
def test_form_error_beside_field(changes, field, message):
    config, errors = dashboard.config_from_form(form(**changes))
    assert config is None
    assert list(errors) == [field]
    assert message in errors[field]


def test_form_reports_every_independent_error():
    config, errors = dashboard.config_from_form(form(epochs=0, generator_lr="abc", width=-1))
    assert config is None
    assert set(errors) == {"epochs", "generator_lr", "width"}


def test_form_reports_batch_error_with_others():
    config, errors = dashboard.config_from_form(form(epochs=0, max_images=100, batch_size=128))
    assert config is None
    assert set(errors) == {"epochs", "batch_size"}
    assert "larger than the 100 training images" in errors["batch_size"]


def test_form_empty_max_images_means_every_image():
    for empty in ("", None):
        config, errors = dashboard.config_from_form(form(max_images=empty))
        assert errors == {}
        assert config.max_images is None


def test_form_reports_every_demo_limit():
    limits = demo.DemoLimits()
    values = form(epochs=6, max_images=20_000, width=65, batch_size=512, latent_dim=300, sample_count=101)
    config, errors = dashboard.config_from_form(values, limits)
    assert config is None
    assert set(errors) == {"epochs", "max_images", "width", "batch_size", "latent_dim", "sample_count"}
    assert errors["width"] == "width must be at most 64 in demo mode, got 65."


@pytest.mark.parametrize(
    ("max_images", "message"),
    [
        (None, "max_images is required in demo mode: enter a number of images from 1 to 10000."),
        (0, "max_images must be a whole number from 1 to 10000 in demo mode, got 0."),
    ],
)
def test_form_demo_max_images_message(max_images, message):
    config, errors = dashboard.config_from_form(form(epochs=5, max_images=max_images), demo.DemoLimits())
    assert config is None
    assert errors == {"max_images": message}


def test_form_without_demo_accepts_large_values():
    config, errors = dashboard.config_from_form(form(epochs=50, width=128))
    assert errors == {}
    assert config.epochs == 50


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("got 'bad\\name'", "got 'bad\\\\name'"),
        ("a_b *c* [d](e)", "a\\_b \\*c\\* \\[d\\]\\(e\\)"),
        ("$x$ `y` # z", "\\$x\\$ \\`y\\` \\# z"),
        ("plain words, digits 123", "plain words, digits 123"),
    ],
)
def test_escape_markdown(text, escaped):
    assert dashboard.escape_markdown(text) == escaped


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ("epochs must be a positive integer, got 0.", "epochs"),
        ("run_name is empty; enter a name such as run-1.", "run_name"),
        ("data: not found", "data"),
        ("demo mode allows 1 run training at a time", None),
        ("", None),
    ],
)
def test_error_field(message, field):
    assert dashboard.error_field(message) == field


# The runs table ---------------------------------------------------------------------------------


def make_run(runs_dir, name, status=None, **config):
    run_dir = runs.create_run(runs_dir / name, TrainConfig(**config))
    if status:
        (run_dir / runs.STATUS_FILE).write_text(json.dumps(status))
    return run_dir


def test_runs_frame_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(dashboard, "DEMO_RUN_DIR", tmp_path / "no-demo-run")
    make_run(tmp_path, "new-run", model="conditional", precision="mixed_bfloat16", jit_compile=True)
    make_run(
        tmp_path,
        "done",
        {
            "state": "finished",
            "epoch": 3,
            "epochs": 3,
            "step": 30,
            "total_steps": 30,
            "images_per_second": 812.4,
        },
        precision="float32",
    )
    frame = dashboard.runs_frame(dashboard.dashboard_runs(tmp_path))
    columns = ["run", "state", "epoch", "step", "images/s", "ETA", "model", "data"]
    assert list(frame.columns) == [*columns, "precision", "jit_compile"]
    rows = frame.set_index("run")
    assert rows.loc["new-run", "state"] == "new"
    assert rows.loc["new-run", "model"] == "conditional"
    assert rows.loc["new-run", "epoch"] == "0/20"
    assert rows.loc["done", "step"] == "30/30"
    assert rows.loc["done", "images/s"] == "812"
    assert rows.loc["new-run", "images/s"] == ""
    assert rows.loc["done", "ETA"] == ""
    assert rows.loc["new-run", "precision"] == "mixed_bfloat16"
    assert rows.loc["new-run", "jit_compile"] == "on"
    assert rows.loc["done", "precision"] == "float32"
    assert rows.loc["done", "jit_compile"] == "off"


def test_run_devices_text():
    status = {
        "devices": ["/physical_device:CPU:0", "/device:CPU:0", "/device:CPU:1"],
        "replica_devices": ["/job:localhost/replica:0/task:0/device:CPU:0"],
    }
    text = dashboard.run_devices_text("r1", status)
    assert text == (
        "Run r1: its trainer's TensorFlow saw /physical_device:CPU:0, /device:CPU:0, /device:CPU:1. "
        "Its strategy's 1 replica(s) used /job:localhost/replica:0/task:0/device:CPU:0."
    )
    without_replicas = dashboard.run_devices_text("r1", {"devices": ["/physical_device:CPU:0"]})
    assert without_replicas == "Run r1: its trainer's TensorFlow saw /physical_device:CPU:0."


def test_run_devices_text_multi_worker():
    """A multi-worker chief lists only its own replica devices, so the count comes from ``replicas``."""
    status = {
        "devices": ["/physical_device:CPU:0"],
        "replica_devices": ["/job:worker/replica:0/task:0/device:CPU:0"],
        "replicas": 2,
    }
    assert dashboard.run_devices_text("mw", status) == (
        "Run mw: its trainer's TensorFlow saw /physical_device:CPU:0. Its strategy has 2 replicas over all "
        "workers; the chief's used /job:worker/replica:0/task:0/device:CPU:0."
    )


@pytest.mark.parametrize("status", [{"state": "finished"}, {"devices": []}, {"devices": "CPU"}])
def test_run_devices_text_without_list(status):
    assert dashboard.run_devices_text("old", status).startswith("Run old: its status.json lists no devices.")


def test_dashboard_runs_add_shipped_demo_run(tmp_path, monkeypatch):
    shipped = make_run(tmp_path / "assets", "demo-run", {"state": "finished"})
    monkeypatch.setattr(dashboard, "DEMO_RUN_DIR", shipped)
    make_run(tmp_path / "runs", "mine")
    found = dashboard.dashboard_runs(tmp_path / "runs")
    assert [info.name for info in found] == ["mine", "demo-run"]
    assert dashboard.is_read_only(found[1].path)
    assert not dashboard.is_read_only(found[0].path)
    assert dashboard.run_label(found[1]) == "demo-run (shipped)"


def test_dashboard_runs_without_shipped_demo_run(tmp_path, monkeypatch):
    monkeypatch.setattr(dashboard, "DEMO_RUN_DIR", tmp_path / "absent")
    assert dashboard.dashboard_runs(tmp_path / "runs") == []
    assert dashboard.shipped_demo_run() is None


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, ""), (float("inf"), ""), (0, "0m00s"), (65.4, "1m05s"), (3725, "1h02m")],
)
def test_format_duration(seconds, text):
    assert dashboard.format_duration(seconds) == text


@pytest.mark.parametrize(("step", "total", "fraction"), [(0, 0, 0.0), (5, 10, 0.5), (12, 10, 1.0)])
def test_progress_fraction(step, total, fraction):
    assert dashboard.progress_fraction(step, total) == fraction


def test_log_tail_returns_last_lines(tmp_path):
    path = tmp_path / "train.log"
    path.write_text("".join(f"line {number}\n" for number in range(100)))
    assert dashboard.log_tail(path, max_lines=3) == "line 97\nline 98\nline 99"
    assert dashboard.log_tail(path, max_lines=50, max_bytes=30).splitlines()[0].startswith("line 9")
    assert dashboard.log_tail(tmp_path / "missing.log") == ""


# Generator sources and commands ------------------------------------------------------------------


def test_generate_command_for_checkpoint():
    source = dashboard.GeneratorSource("epoch 2, step 16", run_dir=Path("runs/my run"), checkpoint_step=16)
    request = GridRequest(seed=7, count=16, columns=4, latent_scale=0.7, digit=None)
    command = dashboard.generate_command(source, request, "digits.png")
    assert shlex.split(command) == [
        "python", "-m", "gan", "generate", "--run-dir", "runs/my run", "--checkpoint", "16",
        "--seed", "7", "--count", "16", "--columns", "4", "--latent-scale", "0.7", "--output", "digits.png",
    ]  # fmt: skip


def test_generate_command_for_interpolation_of_file():
    source = dashboard.GeneratorSource("Pretrained (shipped)", file=Path("assets/pretrained/generator.keras"))
    request = GridRequest(seed=1, latent_scale=1.0, digit=3)
    command = dashboard.generate_command(source, request, "strip.png", interpolate_to=9, steps=12)
    assert shlex.split(command) == [
        "python", "-m", "gan", "generate", "--generator", "assets/pretrained/generator.keras",
        "--seed", "1", "--latent-scale", "1.0", "--digit", "3",
        "--interpolate-to", "9", "--steps", "12", "--output", "strip.png",
    ]  # fmt: skip


def test_shell_path_relative_to_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert dashboard.shell_path(tmp_path / "runs" / "a") == "runs/a"
    assert dashboard.shell_path(Path("/elsewhere/run")) == "/elsewhere/run"


def test_has_generator(tmp_path):
    assert not dashboard.has_generator(tmp_path)
    (tmp_path / runs.CHECKPOINTS_DIR).mkdir()
    (tmp_path / runs.CHECKPOINTS_DIR / "ckpt-8.json").write_text("{}")
    assert dashboard.has_generator(tmp_path)


@pytest.mark.parametrize(("width", "scale"), [(242, 2), (30, 8), (2000, 1), (0, 8)])
def test_display_scale(width, scale):
    assert dashboard.display_scale(width) == scale


def test_generator_query_values(tmp_path, monkeypatch):
    monkeypatch.setattr(dashboard, "DEMO_RUN_DIR", tmp_path / "assets" / "demo-run")
    assert dashboard.run_query_name(tmp_path / "runs" / "web1") == "web1"
    assert dashboard.run_query_name(tmp_path / "assets" / "demo-run") == dashboard.SHIPPED_RUN_QUERY_NAME
    checkpoint = dashboard.GeneratorSource("epoch 5, step 785", run_dir=tmp_path, checkpoint_step=785)
    exported = dashboard.GeneratorSource(runs.GENERATOR_FILE, run_dir=tmp_path, file=tmp_path / "g.keras")
    assert dashboard.checkpoint_query_value(checkpoint) == "785"
    assert dashboard.checkpoint_query_value(exported) == dashboard.EXPORTED_CHECKPOINT
