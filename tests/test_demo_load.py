"""Demo mode under a burst of concurrent sessions: live trainers, stored runs and generation stay bounded.

Twenty AppTest sessions, each in its own thread and started together by a
barrier, ask at the same moment for trainer launches on the Train page and
for large grids on the Generate page. The launched trainers are real
detached processes on real MNIST digits, with demo limits small enough that
they finish in seconds. A monitor thread samples the live runs and the
trainer processes under the runs root while the burst lasts.

The figures are written to test-output/reliability/demo-load.json.
"""

import contextlib
import io
import json
import os
import resource
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest
from test_pages import APP, messages, open_page

from gan import dashboard, demo, generate, runs
from gan.config import TrainConfig

REPOSITORY = Path(__file__).resolve().parents[1]
REPORT = REPOSITORY / "test-output" / "reliability" / "demo-load.json"

MAX_LIVE_RUNS = 2
MAX_STORED_RUNS = 4
MAX_EPOCHS = 1
MAX_IMAGES = 256
LIMITS_ENVIRONMENT = {
    "GAN_DEMO": "1",
    "GAN_DEMO_MAX_LIVE_RUNS": str(MAX_LIVE_RUNS),
    "GAN_DEMO_MAX_STORED_RUNS": str(MAX_STORED_RUNS),
    "GAN_DEMO_MAX_EPOCHS": str(MAX_EPOCHS),
    "GAN_DEMO_MAX_IMAGES": str(MAX_IMAGES),
}
# The generation limits keep their defaults.
LIMITS = demo.DemoLimits(
    max_epochs=MAX_EPOCHS,
    max_images=MAX_IMAGES,
    max_live_runs=MAX_LIVE_RUNS,
    max_stored_runs=MAX_STORED_RUNS,
)

# A trainer of this size imports TensorFlow and trains its 8 steps in a few seconds.
SMALL_FORM = {
    "max_images": MAX_IMAGES,
    "epochs": MAX_EPOCHS,
    "batch_size": 32,
    "width": 8,
    "latent_dim": 16,
    "sample_count": 16,
    "log_every_steps": 2,
    "checkpoint_every_steps": 4,
    "eval_every_epochs": 0,  # the quality metrics add seconds to each trainer
}
LAUNCH_SESSIONS = 10
OVER_EPOCH_LIMIT = (7, 8, 9)  # indices of launch sessions that ask for one epoch too many
GENERATE_SESSIONS = 10
OVER_DIGIT_LIMIT = (5, 6, 7, 8, 9)  # indices of generate sessions over the digit and steps limits
OLD_RUNS = 3
SESSION_TIMEOUT = 120
# Only guards against a hung trainer: each of them trains 8 steps.
TRAINER_TIMEOUT = 120

LIVE_LIMIT_MESSAGE = f"demo mode allows {MAX_LIVE_RUNS} runs training at a time"


# Spying on the generator ------------------------------------------------------------------------


class SpyGenerator:
    """A Keras generator that records the number of latent vectors of every run.

    Generation runs a generator through its compiled call (``generate._compiled_call``),
    which the ``spied_runs`` fixture wraps so that each generator run inside the graph
    (one per chunk of the stacked latents) is recorded.
    """

    def __init__(self, model):
        self._model = model
        self.batch_sizes: list[int] = []
        self._lock = threading.Lock()

    def __getattr__(self, name):
        return getattr(self._model, name)

    def record(self, latents) -> None:
        """Record one generator run per chunk of the stacked latents (chunks, batch, latent_dim)."""
        chunks, batch = np.shape(latents)[:2]
        with self._lock:
            self.batch_sizes.extend([int(batch)] * int(chunks))

    def __call__(self, inputs, training=False):
        latents = inputs[0] if isinstance(inputs, list) else inputs
        self.record(np.expand_dims(latents, 0))
        return self._model(inputs, training=training)


@pytest.fixture
def spied_runs(monkeypatch):
    """Record every compiled run of a SpyGenerator's model on the spy."""
    original = generate._compiled_call

    def compiled_call(generator):
        if not isinstance(generator, SpyGenerator):
            return original(generator)
        call = original(generator._model)

        def recorded(latents, *labels):
            generator.record(latents)
            return call(latents, *labels)

        return recorded

    monkeypatch.setattr(generate, "_compiled_call", compiled_call)


@pytest.fixture(scope="module")
def generator_file(tmp_path_factory):
    """An untrained generator saved as .keras: the limits do not depend on its weights."""
    from gan.model import build_generator

    path = tmp_path_factory.mktemp("generator") / "generator.keras"
    build_generator(latent_dim=16, width=8).save(path)
    return path


# Processes and runs -----------------------------------------------------------------------------


def trainer_pids(root: Path) -> list[int]:
    """List the live, non-zombie processes that run ``python -m gan train`` on a run under ``root``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        text = [argument.decode(errors="replace") for argument in arguments]
        if state == "Z" or "gan" not in text or "train" not in text or "--run-dir" not in text:
            continue
        run_dir = Path(text[text.index("--run-dir") + 1])
        if run_dir.parent == root:
            found.append(int(entry.name))
    return found


def stored_runs(root: Path) -> list[Path]:
    return [path for path in root.iterdir() if runs.is_run(path)]


class Monitor(threading.Thread):
    """Sample the live runs, the trainer processes and the stored runs under a runs root."""

    def __init__(self, root: Path):
        super().__init__(name="demo-load-monitor", daemon=True)
        self.root = root
        self.done = threading.Event()
        self.max_live_runs = 0
        self.max_trainer_processes = 0
        self.max_stored_runs = 0
        self.samples = 0

    def run(self) -> None:
        while not self.done.is_set():
            self.max_live_runs = max(self.max_live_runs, demo.count_live_runs(self.root))
            self.max_trainer_processes = max(self.max_trainer_processes, len(trainer_pids(self.root)))
            self.max_stored_runs = max(self.max_stored_runs, len(stored_runs(self.root)))
            self.samples += 1
            time.sleep(0.02)


@pytest.fixture
def concurrent_apptest(monkeypatch):
    """Let AppTest sessions run in several threads at once, sharing what a Streamlit server shares.

    AppTest (Streamlit 1.67) sets process-wide state around every script run:
    it patches ``config.get_option``, replaces ``Runtime._instance`` and
    compiles the scripts into a new cache. Runs that overlap in threads then
    restore each other's patches, and CPython 3.11.7 raises SystemError "AST
    constructor recursion depth mismatch" for scripts compiled at once. A
    server has one runtime, one config and one script cache for all sessions,
    so this fixture sets each of them up once for the whole test.
    """
    from unittest.mock import MagicMock

    from streamlit import config
    from streamlit.components.v2.component_manager import BidiComponentManager
    from streamlit.runtime import Runtime
    from streamlit.runtime.caching.storage.dummy_cache_storage import MemoryCacheStorageManager
    from streamlit.runtime.dataframe_source_manager import DataframeSourceManager
    from streamlit.runtime.media_file_manager import MediaFileManager
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
    from streamlit.runtime.scriptrunner.script_cache import ScriptCache
    from streamlit.testing.v1 import app_test, local_script_runner, util

    cache = ScriptCache()
    monkeypatch.setattr(app_test, "ScriptCache", lambda: cache)
    monkeypatch.setattr(local_script_runner, "ScriptCache", lambda: cache)

    monkeypatch.setattr(config, "get_option", util.build_mock_config_get_option({"global.appTest": True}))
    monkeypatch.setattr(app_test, "patch_config_options", lambda overrides: contextlib.nullcontext())

    runtime = MagicMock(spec=Runtime)
    runtime.media_file_mgr = MediaFileManager(MemoryMediaFileStorage("/mock/media"))
    runtime.dataframe_source_mgr = DataframeSourceManager()
    runtime.cache_storage_manager = MemoryCacheStorageManager()
    components = BidiComponentManager()
    components.discover_and_register_components(start_file_watching=False)
    runtime.bidi_component_registry = components
    monkeypatch.setattr(Runtime, "_instance", runtime)

    class SessionRuntime(Runtime):
        """The class AppTest assigns its per-run mock to, leaving the shared one in place."""

    monkeypatch.setattr(app_test, "Runtime", SessionRuntime)


@pytest.fixture
def demo_root(tmp_path, monkeypatch, mnist_path, generator_file, concurrent_apptest):
    """A runs root in demo mode with a few old finished runs and a shipped generator that is spied on."""
    root = tmp_path / "runs"
    root.mkdir()
    for name, value in LIMITS_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("GAN_RUNS_DIR", str(root))
    monkeypatch.setenv("GAN_MNIST_PATH", str(mnist_path))
    monkeypatch.setattr(dashboard, "DEMO_RUN_DIR", tmp_path / "no-demo-run")
    monkeypatch.setattr(dashboard, "PRETRAINED_GENERATOR", generator_file)
    for index in range(OLD_RUNS):
        old = runs.create_run(root / f"old-{index}", TrainConfig(**SMALL_FORM))
        runs.write_status(old, {"state": "finished", "pid": None, "epoch": 1, "epochs": 1})
        # Oldest first by config.json time, as demo mode prunes them.
        os.utime(old / runs.CONFIG_FILE, (time.time() - 100 + index, time.time() - 100 + index))

    spy: dict[str, SpyGenerator] = {}
    original_load = dashboard.GeneratorSource.load

    def spied_load(source):
        # One spy per process, whatever page session loads the generator.
        if "generator" not in spy:
            spy["generator"] = SpyGenerator(original_load(source))
        return spy["generator"]

    monkeypatch.setattr(dashboard.GeneratorSource, "load", spied_load)
    yield root, spy
    stop_all(root)


def stop_all(root: Path) -> None:
    """Stop every live trainer under ``root`` and wait until no trainer process is left."""
    for run_dir in stored_runs(root):
        if runs.read_status(run_dir)["state"] in runs.LIVE_STATES:
            # RunError: the trainer finished between the read and the stop.
            with contextlib.suppress(runs.RunError):
                runs.stop(run_dir, wait_seconds=TRAINER_TIMEOUT)
    deadline = time.monotonic() + TRAINER_TIMEOUT
    while trainer_pids(root) and time.monotonic() < deadline:
        time.sleep(0.2)


# The burst --------------------------------------------------------------------------------------


def launch_session(index: int, barrier: threading.Barrier) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=SESSION_TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    epochs = MAX_EPOCHS + 1 if index in OVER_EPOCH_LIMIT else MAX_EPOCHS
    at.text_input(key="train_run_name").set_value(f"burst-{index}")
    for name, value in {**SMALL_FORM, "epochs": epochs}.items():
        at.number_input(key=f"train_{name}").set_value(value)
    submit = next(button for button in at.button if button.label == "Start training")
    barrier.wait()
    submit.click().run()
    return at


def generate_session(index: int, barrier: threading.Barrier) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=SESSION_TIMEOUT)
    over = index in OVER_DIGIT_LIMIT
    count = LIMITS.max_digits + 1 if over else LIMITS.max_digits
    steps = LIMITS.max_interpolation_steps + 1 if over else LIMITS.max_interpolation_steps
    # The Generate page reads its settings from the URL, as from a shared link.
    at.query_params.update({"count": str(count), "steps": str(steps), "columns": "16"})
    at.run()
    assert not at.exception, at.exception
    barrier.wait()
    at.switch_page("pages/generate.py").run()
    return at


def run_burst(root: Path) -> tuple[list[AppTest], list[AppTest], list[BaseException]]:
    barrier = threading.Barrier(LAUNCH_SESSIONS + GENERATE_SESSIONS, timeout=SESSION_TIMEOUT)
    launches: list[AppTest | None] = [None] * LAUNCH_SESSIONS
    generations: list[AppTest | None] = [None] * GENERATE_SESSIONS
    failures: list[BaseException] = []

    def start(target, results, index):
        def body():
            try:
                results[index] = target(index, barrier)
            except BaseException as error:  # reported by the test, with the session that raised it
                failures.append(error)
                barrier.abort()

        return threading.Thread(target=body, name=f"{target.__name__}-{index}")

    threads = [start(launch_session, launches, index) for index in range(LAUNCH_SESSIONS)]
    threads += [start(generate_session, generations, index) for index in range(GENERATE_SESSIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=2 * SESSION_TIMEOUT)
    assert not any(thread.is_alive() for thread in threads)
    return launches, generations, failures


def test_demo_limits_hold_under_burst(demo_root, spied_runs):
    root, spy = demo_root
    monitor = Monitor(root)
    monitor.start()
    # The monitor keeps sampling until the admitted trainers are stopped or done.
    launches, generations, failures = run_burst(root)
    assert failures == []

    # Every session's script run completed.
    for at in launches + generations:
        assert not at.exception, at.exception

    # Launches: at most MAX_LIVE_RUNS admitted, the rest rejected with the limit message.
    admitted, rejected_live, rejected_epochs = [], [], []
    for index, at in enumerate(launches):
        name = f"burst-{index}"
        errors = messages(at, "error")
        successes = messages(at, "success")
        if index in OVER_EPOCH_LIMIT:
            assert f"epochs must be at most {MAX_EPOCHS} in demo mode, got {MAX_EPOCHS + 1}." in errors, (
                errors
            )
            assert successes == []
            assert not (root / name).exists()
            rejected_epochs.append(name)
        elif successes:
            assert any(f"Started run {name}" in text for text in successes), successes
            assert errors == []
            admitted.append(name)
        else:
            assert any(LIVE_LIMIT_MESSAGE in text for text in errors), errors
            assert not (root / name).exists()
            rejected_live.append(name)
    # The first MAX_LIVE_RUNS requests through the admission lock find room; more only once one ended.
    assert len(admitted) >= MAX_LIVE_RUNS
    assert len(admitted) + len(rejected_live) == LAUNCH_SESSIONS - len(OVER_EPOCH_LIMIT)

    # Generations: the requests at the limit got their grid and strip, the others nothing.
    for index, at in enumerate(generations):
        errors = messages(at, "error")
        if index in OVER_DIGIT_LIMIT:
            digits = (
                f"Digits must be at most {LIMITS.max_digits} per grid in demo mode, "
                f"got {LIMITS.max_digits + 1}."
            )
            assert digits in errors, errors
            steps = (
                f"Steps must be at most {LIMITS.max_interpolation_steps} in demo mode, "
                f"got {LIMITS.max_interpolation_steps + 1}."
            )
            assert steps in errors, errors
            assert "generate_grid_png" not in at.session_state
            assert "generate_strip_png" not in at.session_state
            assert at.get("image") == []
        else:
            assert errors == []
            with Image.open(io.BytesIO(at.session_state["generate_grid_png"])) as grid:
                # 256 digits in 16 columns: 16 rows of 28-pixel digits with 2-pixel gaps.
                assert grid.size == (16 * 30 + 2, 16 * 30 + 2)
            assert "generate_strip_png" in at.session_state
    at_limit = GENERATE_SESSIONS - len(OVER_DIGIT_LIMIT)
    calls_per_request = LIMITS.max_digits // generate.GENERATION_BATCH + 1
    generator = spy["generator"]
    # Fixed batches only, and no call at all for a rejected request.
    assert max(generator.batch_sizes) == generate.GENERATION_BATCH
    assert len(generator.batch_sizes) == at_limit * calls_per_request
    burst_calls = len(generator.batch_sizes)

    # The app keeps responding: a fresh session renders each page.
    for page in ("pages/train.py", "pages/losses.py", "pages/generate.py"):
        fresh = open_page(page)
        assert any("Demo mode" in text for text in messages(fresh, "info")), page

    try:
        stop_all(root)
    finally:
        monitor.done.set()
        monitor.join()
    assert trainer_pids(root) == []
    assert all(runs.read_status(path)["state"] not in runs.LIVE_STATES for path in stored_runs(root))
    assert monitor.max_live_runs <= MAX_LIVE_RUNS
    assert monitor.max_trainer_processes <= MAX_LIVE_RUNS
    assert monitor.max_stored_runs <= MAX_STORED_RUNS
    assert len(stored_runs(root)) <= MAX_STORED_RUNS
    # Demo mode deleted the oldest runs to make room for the admitted ones.
    assert sorted(path.name for path in stored_runs(root) if path.name.startswith("burst-")) == sorted(
        admitted
    )

    write_report(
        "burst",
        {
            "sessions": LAUNCH_SESSIONS + GENERATE_SESSIONS,
            "launch_requests": LAUNCH_SESSIONS,
            "launches_admitted": len(admitted),
            "launches_rejected_live_limit": len(rejected_live),
            "launches_rejected_epoch_limit": len(rejected_epochs),
            "generate_requests_at_limit": at_limit,
            "generate_requests_over_limit": len(OVER_DIGIT_LIMIT),
            "generator_calls": burst_calls,
            "max_vectors_per_generator_call": max(generator.batch_sizes[:burst_calls]),
            "max_live_runs_limit": MAX_LIVE_RUNS,
            "max_live_runs_observed": monitor.max_live_runs,
            "max_trainer_processes_observed": monitor.max_trainer_processes,
            "max_stored_runs_limit": MAX_STORED_RUNS,
            "max_stored_runs_observed": monitor.max_stored_runs,
            "monitor_samples": monitor.samples,
        },
    )


# Memory of one generation request ------------------------------------------------------------------


def peak_rss_growth(action) -> int:
    """Return how far the peak resident memory rose above the current size during ``action``, in bytes.

    Linux resets the peak (VmHWM) when 5 is written to /proc/self/clear_refs.
    """
    Path("/proc/self/clear_refs").write_text("5")
    before = status_kib("VmRSS")
    action()
    return (status_kib("VmHWM") - before) * 1024


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} is missing from /proc/self/status")


def test_generation_at_demo_limit_is_bounded(generator_file, spied_runs):
    import keras

    spy = SpyGenerator(keras.models.load_model(generator_file, compile=False))
    limits = LIMITS
    largest = generate.GridRequest(seed=0, count=limits.max_digits, columns=16)
    smallest = generate.GridRequest(seed=0, count=1, columns=1)
    demo.check_generate_request(largest.count, limits.max_interpolation_steps, limits)

    def serve(request: generate.GridRequest, steps: int):
        """Everything the Generate page makes for one request: grid, strip, downloads and GIF."""
        grid = generate.make_grid(spy, request)
        strip = generate.make_interpolation(spy, request, 1, steps)
        generate.png_bytes(grid.grid)
        generate.npz_bytes(grid.images, grid.seeds)
        dashboard.interpolation_gif(strip.images)
        return grid, strip

    # Warm up: the first call traces the generator.
    serve(smallest, 2)
    spy.batch_sizes.clear()

    grid, strip = serve(largest, limits.max_interpolation_steps)
    assert set(spy.batch_sizes) == {generate.GENERATION_BATCH}
    assert len(spy.batch_sizes) == limits.max_digits // generate.GENERATION_BATCH + 1
    assert grid.images.shape == (limits.max_digits, 28, 28)
    assert grid.images.dtype == np.uint8
    assert strip.images.shape == (limits.max_interpolation_steps, 28, 28)

    with pytest.raises(demo.DemoLimitError):
        demo.check_generate_request(limits.max_digits + 1, limits=limits)
    with pytest.raises(demo.DemoLimitError):
        demo.check_generate_request(1, limits.max_interpolation_steps + 1, limits)

    small_growth = peak_rss_growth(lambda: serve(smallest, 2))
    large_growth = peak_rss_growth(lambda: serve(largest, limits.max_interpolation_steps))
    # A generous sanity bound; the figure itself goes to the report.
    assert large_growth < 512 * 1024 * 1024
    write_report(
        "generation_memory",
        {
            "max_digits": limits.max_digits,
            "max_interpolation_steps": limits.max_interpolation_steps,
            "batch_size": generate.GENERATION_BATCH,
            "images_bytes_at_limit": int(grid.images.nbytes),
            "peak_rss_growth_smallest_request_kib": small_growth // 1024,
            "peak_rss_growth_largest_request_kib": large_growth // 1024,
            "peak_rss_growth_difference_kib": (large_growth - small_growth) // 1024,
            "max_rss_of_process_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        },
    )


def write_report(section: str, figures: dict) -> None:
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    report = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    report[section] = figures
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
