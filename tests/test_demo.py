"""gan.demo: demo mode switches, limits, their overrides and the checks of train and generate requests."""

import os
import threading
import time

import pytest

from gan import demo, runs
from gan.config import TrainConfig
from gan.errors import InputError

SMALL = {"data": "mnist", "max_images": 256, "epochs": 2, "batch_size": 32, "eval_every_epochs": 0}


def make_run(runs_dir, name: str, state: str | None = None):
    run_dir = runs.create_run(runs_dir / name, TrainConfig(**SMALL))
    if state == "starting":
        # A launcher that has just started its trainer, here with the pid of the test process.
        runs.write_status(run_dir, {"state": "starting", "pid": os.getpid()})
    elif state:
        runs.write_status(run_dir, {"state": state})
    return run_dir


# Switches and limits --------------------------------------------------------------------


def test_demo_off_by_default():
    assert demo.load_limits(environ={}) is None


@pytest.mark.parametrize("value", ["1", "true", "YES", " on "])
def test_demo_on_by_environment(value):
    assert demo.load_limits(environ={"GAN_DEMO": value}) == demo.DemoLimits()


@pytest.mark.parametrize("value", ["0", "false", "no", "off", ""])
def test_demo_off_by_environment(value):
    assert demo.load_limits(environ={"GAN_DEMO": value}) is None


@pytest.mark.parametrize("secret", [True, "true", 1])
def test_demo_on_by_secret(secret):
    assert demo.load_limits(secret, environ={}) == demo.DemoLimits()


def test_demo_secret_false_keeps_it_off():
    assert demo.load_limits(False, environ={}) is None


def test_demo_rejects_unknown_switch_value():
    with pytest.raises(InputError, match="GAN_DEMO must be 1 or 0"):
        demo.load_limits(environ={"GAN_DEMO": "maybe"})


def test_demo_default_limits():
    limits = demo.DemoLimits()
    assert limits.max_epochs == 5
    assert limits.max_images == 10_000
    assert limits.max_live_runs == 1
    assert limits.max_digits == 256
    assert limits.max_interpolation_steps == 32


def test_demo_limits_overridden_by_environment():
    environ = {"GAN_DEMO": "1", **{variable: "7" for variable in demo.LIMIT_VARIABLES.values()}}
    limits = demo.load_limits(environ=environ)
    assert limits == demo.DemoLimits(*[7] * len(demo.LIMIT_VARIABLES))


@pytest.mark.parametrize("value", ["0", "-3", "ten", "2.5"])
def test_demo_rejects_bad_override(value):
    environ = {"GAN_DEMO": "1", "GAN_DEMO_MAX_EPOCHS": value}
    with pytest.raises(InputError, match="GAN_DEMO_MAX_EPOCHS must be a positive integer"):
        demo.load_limits(environ=environ)


def test_demo_describe_lists_every_limit():
    lines = " ".join(demo.DemoLimits(3, 500, 2, 64, 8, 16, 32, 48, 20, 4).describe())
    for expected in (
        "3 epochs",
        "500 training images",
        "2 runs training",
        "64 digits",
        "8 interpolation steps",
        "width at most 16",
        "batch_size at most 32",
        "latent_dim at most 48",
        "sample_count at most 20",
        "newest 4 runs are kept",
    ):
        assert expected in lines


def test_default_config_within_limits():
    config = demo.default_config(demo.DemoLimits(max_epochs=3, max_images=500))
    assert config.epochs == 3
    assert config.max_images == 500
    assert config.batch_size == TrainConfig().batch_size


def test_default_config_without_demo():
    assert demo.default_config(None) == TrainConfig()


# Train requests ---------------------------------------------------------------------------


def test_train_check_passes_small_request(tmp_path):
    demo.check_train_request(TrainConfig(**SMALL), tmp_path, demo.DemoLimits())


def test_train_check_off_without_limits(tmp_path, monkeypatch):
    monkeypatch.delenv("GAN_DEMO", raising=False)
    demo.check_train_request(TrainConfig(epochs=500), tmp_path)


def test_train_check_reads_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GAN_DEMO", "1")
    with pytest.raises(demo.DemoLimitError, match="epochs must be at most 5"):
        demo.check_train_request(TrainConfig(**{**SMALL, "epochs": 6}), tmp_path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"epochs": 6}, r"^epochs must be at most 5 in demo mode, got 6\."),
        ({"max_images": None}, r"^max_images is required in demo mode"),
        ({"max_images": 10_001}, r"^max_images must be at most 10000 in demo mode, got 10001\."),
        ({"data": "/etc"}, r"^data must be mnist or fashion_mnist in demo mode"),
    ],
)
def test_train_check_rejects_config(tmp_path, change, message):
    config = TrainConfig(**{**SMALL, **change})
    with pytest.raises(demo.DemoLimitError, match=message):
        demo.check_train_request(config, tmp_path, demo.DemoLimits())


def test_train_check_reports_every_exceeded_limit(tmp_path):
    config = TrainConfig(**{**SMALL, "epochs": 6, "width": 65, "data": "/etc"})
    with pytest.raises(demo.DemoLimitError) as raised:
        demo.check_train_request(config, tmp_path, demo.DemoLimits())
    assert set(raised.value.errors) == {"epochs", "width", "data"}
    assert str(raised.value).startswith("epochs must be at most 5 in demo mode, got 6.")


def test_config_limit_errors_skip_missing_and_mistyped():
    errors = demo.config_limit_errors({"epochs": "many", "width": 65}, demo.DemoLimits())
    assert errors == {"width": "width must be at most 64 in demo mode, got 65."}


def test_train_check_counts_live_runs(tmp_path):
    make_run(tmp_path, "finished", "finished")
    make_run(tmp_path, "stopped", "stopped")
    assert demo.count_live_runs(tmp_path) == 0
    demo.check_train_request(TrainConfig(**SMALL), tmp_path, demo.DemoLimits())

    make_run(tmp_path, "live", "starting")
    assert demo.count_live_runs(tmp_path) == 1
    with pytest.raises(demo.DemoLimitError, match="demo mode allows 1 run training at a time"):
        demo.check_train_request(TrainConfig(**SMALL), tmp_path, demo.DemoLimits())
    demo.check_train_request(TrainConfig(**SMALL), tmp_path, demo.DemoLimits(max_live_runs=2))


def test_train_check_ignores_dead_trainer(tmp_path):
    # "running" with no trainer holding the lock reads as crashed, which is not live.
    make_run(tmp_path, "crashed", "running")
    assert demo.count_live_runs(tmp_path) == 0


def test_admission_lock_serialises_requests(tmp_path):
    order = []

    def second():
        with demo.admission_lock(tmp_path):
            order.append("second")

    with demo.admission_lock(tmp_path):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.2)
        order.append("first")
    thread.join(timeout=5)
    assert order == ["first", "second"]


# Generate requests ------------------------------------------------------------------------


def test_generate_check_passes_at_limits():
    demo.check_generate_request(256, 32, demo.DemoLimits())


def test_generate_check_rejects_count():
    with pytest.raises(
        demo.DemoLimitError, match=r"^count must be at most 256 per grid in demo mode, got 257"
    ):
        demo.check_generate_request(257, None, demo.DemoLimits())


def test_generate_check_names_page_labels():
    with pytest.raises(
        demo.DemoLimitError, match=r"^Digits must be at most 256 per grid in demo mode, got 300\."
    ):
        demo.check_generate_request(300, None, demo.DemoLimits(), count_name="Digits")
    with pytest.raises(demo.DemoLimitError, match=r"^Steps must be at most 32 in demo mode, got 40\."):
        demo.check_generate_request(1, 40, demo.DemoLimits(), steps_name="Steps")


def test_generate_check_rejects_steps():
    with pytest.raises(demo.DemoLimitError, match=r"steps must be at most 32 in demo mode, got 33"):
        demo.check_generate_request(1, 33, demo.DemoLimits())


def test_generate_check_off_without_limits(monkeypatch):
    monkeypatch.delenv("GAN_DEMO", raising=False)
    demo.check_generate_request(100_000, 1000)


# Model sizes and stored runs --------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("width", 65, r"width must be at most 64 in demo mode, got 65"),
        ("batch_size", 512, r"batch_size must be at most 256 in demo mode, got 512"),
        ("latent_dim", 1000, r"latent_dim must be at most 256 in demo mode, got 1000"),
        ("sample_count", 400, r"sample_count must be at most 100 in demo mode, got 400"),
    ],
)
def test_train_request_size_limits(tmp_path, field, value, message):
    config = TrainConfig(**{**SMALL, field: value})
    with pytest.raises(demo.DemoLimitError, match=message):
        demo.check_train_request(config, tmp_path, demo.DemoLimits())


def test_size_limit_override(tmp_path):
    limits = demo.load_limits(environ={"GAN_DEMO": "1", "GAN_DEMO_MAX_WIDTH": "16"})
    assert limits.max_width == 16
    with pytest.raises(demo.DemoLimitError, match=r"width must be at most 16"):
        demo.check_train_request(TrainConfig(**{**SMALL, "width": 32}), tmp_path, limits)


def test_prune_runs_deletes_oldest_inactive(tmp_path):
    limits = demo.DemoLimits(max_stored_runs=3)
    oldest = make_run(tmp_path, "oldest", "finished")
    live = make_run(tmp_path, "live", "starting")
    older = make_run(tmp_path, "older", "stopped")
    newest = make_run(tmp_path, "newest", "failed")
    # list_runs orders by config.json modification time.
    for age, run_dir in enumerate([newest, older, live, oldest]):
        stamp = time.time() - 100 * (age + 1)
        os.utime(run_dir / runs.CONFIG_FILE, (stamp, stamp))

    deleted = demo.prune_runs(tmp_path, limits)

    # Four runs plus the one about to start must fit in three: two go, oldest first, the live one stays.
    assert deleted == [oldest, older]
    assert not oldest.exists()
    assert not older.exists()
    assert live.exists()
    assert newest.exists()


def test_prune_runs_keeps_resumed_run(tmp_path):
    limits = demo.DemoLimits(max_stored_runs=1)
    resumed = make_run(tmp_path, "resumed", "stopped")
    other = make_run(tmp_path, "other", "finished")
    assert demo.prune_runs(tmp_path, limits, keep=resumed) == [other]
    assert resumed.exists()


def test_prune_runs_nothing_under_limit(tmp_path):
    make_run(tmp_path, "only", "finished")
    assert demo.prune_runs(tmp_path, demo.DemoLimits(max_stored_runs=2)) == []
