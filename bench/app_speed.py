"""Measure the app's and the CLI's interactive paths, each against a reference from the same run.

One run prints one Markdown table with these measurements:

- fresh grid: a new ``python`` process imports ``gan.generate``, loads the
  shipped generator with ``generate.load_generator_file``, draws 64 digits
  with ``generate.make_grid`` and encodes the grid with
  ``generate.png_bytes``: the same calls as ``python -m gan generate`` and
  the Generate page. The time runs from the spawn of the process to the
  encoded PNG, with its parts. Reference: a new process that only runs
  ``import tensorflow``. The real ``python -m gan generate`` command is
  timed too, up to its exit.
- warm grid: ``generate.make_grid`` for 64 digits on a loaded generator,
  median and 90th percentile after warm-up calls. Reference: one bare
  ``generator(z, training=False)`` call on the same 64 latent vectors.
- CLI start-up: ``python -m gan --help`` in new processes, and whether the
  CLI imported TensorFlow. Reference: ``python -c pass``.
- Losses page: the history calls that ``pages/losses.py`` makes before it
  builds Altair charts (``CsvHistory.refresh``, ``CsvHistory.frame``,
  ``history.display_frame`` with the page's default smoothing, and the
  page's series filters) on a synthetic ``metrics.csv`` of 1,000,000 rows,
  with the cost of each step. Reference: ``pandas.read_csv`` of the file.
- trainer memory: peak resident memory of ``python -m gan train`` on a
  Keras-layout ``.npz`` of 60,000 training and 10,000 test digits, tiled
  from the digits that ``GAN_MNIST_PATH`` names, stopped with SIGTERM
  after a number of training steps.
- app memory: peak resident memory of a process that renders the Generate
  page with the shipped generator through Streamlit's ``AppTest``.
  Reference of both memory figures: a process that only imports TensorFlow.

Timings are only reported, never checked. The exit status is 1 when a
measurement failed to run. Child processes run in the repository root, so
the script works from any folder:

    GAN_MNIST_PATH=/path/to/mnist.npz python bench/app_speed.py
    GAN_MNIST_PATH=/path/to/mnist.npz python bench/app_speed.py --quick --only cli,losses
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from gan import dashboard, history, runs  # noqa: E402

MEASUREMENTS = ("fresh", "warm", "cli", "losses", "train-memory", "app-memory")
GRID_COUNT = 64
GRID_COLUMNS = 8
# The Losses page's default smoothing weight (pages/losses.py DEFAULT_SMOOTHING).
PAGE_SMOOTHING = 0.6
# Steps per epoch of the default batch of 128 on 60,000 digits, for the synthetic epoch column.
SYNTHETIC_STEPS_PER_EPOCH = 469
CHILD_TIMEOUT_SECONDS = 600
TRAINER_STOP_TIMEOUT_SECONDS = 300

TARGETS = {
    "fresh": ("<= 4 s", 4.0),
    "warm": ("<= 30 ms", 0.030),
    "cli": ("< 0.5 s, no TensorFlow", 0.5),
    "losses": ("< 1.5 s", 1.5),
    "train-memory": ("< 2 GB", 2 * 1024**3),
    "app-memory": ("< 1 GB", 1024**3),
}


# Child processes --------------------------------------------------------------


@dataclass
class ChildResult:
    """The outcome of one child process: exit status, output and wall time."""

    returncode: int
    stdout: str
    stderr: str
    started: float  # CLOCK_MONOTONIC at the spawn, comparable with the child's clock readings
    wall_seconds: float


class Child:
    """A child process with its output in temporary files, reaped with ``os.wait4``."""

    def __init__(self, arguments: list[str], env: dict[str, str], cwd: Path = REPOSITORY):
        self._stdout = tempfile.TemporaryFile()
        self._stderr = tempfile.TemporaryFile()
        self.started = monotonic()
        self.process = subprocess.Popen(
            arguments, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=self._stdout, stderr=self._stderr
        )
        self._result: ChildResult | None = None

    def poll(self) -> ChildResult | None:
        """Return the result if the child has exited, else None, without blocking."""
        if self._result is None:
            pid, status, _ = os.wait4(self.process.pid, os.WNOHANG)
            if pid:
                self._finish(status)
        return self._result

    def wait(self, timeout: float = CHILD_TIMEOUT_SECONDS) -> ChildResult:
        """Block until the child exits. After ``timeout`` seconds, kill it and raise TimeoutError."""
        if self._result is not None:
            return self._result
        timer = threading.Timer(timeout, self.process.kill)
        timer.start()
        try:
            _, status, _ = os.wait4(self.process.pid, 0)
        finally:
            timer.cancel()
        result = self._finish(status)
        if status_signal(status) == signal.SIGKILL:
            raise TimeoutError(f"{self.process.args!r} timed out after {timeout:.0f} s and was killed.")
        return result

    def _finish(self, status: int) -> ChildResult:
        wall = monotonic() - self.started
        self.process.returncode = os.waitstatus_to_exitcode(status)
        self._result = ChildResult(
            returncode=self.process.returncode,
            stdout=read_all(self._stdout),
            stderr=read_all(self._stderr),
            started=self.started,
            wall_seconds=wall,
        )
        return self._result


def status_signal(status: int) -> int | None:
    return os.WTERMSIG(status) if os.WIFSIGNALED(status) else None


def read_all(handle) -> str:
    handle.seek(0)
    text = handle.read().decode("utf-8", errors="replace")
    handle.close()
    return text


def monotonic() -> float:
    """Return CLOCK_MONOTONIC seconds, a clock that this process and its children share."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def child_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, **extra}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPOSITORY), env.get("PYTHONPATH")]))
    return env


def run_python(
    code: str,
    env: dict[str, str] | None = None,
    timeout: float = CHILD_TIMEOUT_SECONDS,
    arguments: list[str] | None = None,
) -> ChildResult:
    """Run ``python -c code *arguments`` in the repository root and raise RuntimeError if it fails."""
    result = Child([sys.executable, "-c", code, *(arguments or [])], env or child_env()).wait(timeout)
    check_exit(result, "python -c")
    return result


def check_exit(result: ChildResult, name: str) -> None:
    if result.returncode != 0:
        raise RuntimeError(f"{name} exited with status {result.returncode}:\n{result.stderr[-3000:]}")


def last_json_line(result: ChildResult) -> dict:
    """Parse the last stdout line of a child snippet, which prints its measurements as JSON."""
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(
            f"the child printed no JSON result:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        )
    return json.loads(lines[-1])


# The table --------------------------------------------------------------------


@dataclass
class Row:
    """A line of the printed table. ``met`` is None for lines without a target."""

    measure: str
    value: str
    reference: str = ""
    reference_value: str = ""
    ratio: str = ""
    target: str = ""
    met: bool | None = None


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    load_averages: list[str] = field(default_factory=list)


def seconds_text(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def bytes_text(size: float) -> str:
    return f"{size / 1024**2:,.0f} MB"


def ratio_text(value: float, reference: float) -> str:
    return f"{value / reference:.2f}x" if reference > 0 else ""


def met_text(met: bool | None) -> str:
    if met is None:
        return ""
    return "yes" if met else "no"


def print_table(rows: list[Row]) -> None:
    header = ("measure", "value", "reference", "reference value", "ratio", "target", "met")
    print("| " + " | ".join(header) + " |")
    print("| " + " | ".join("---" for _ in header) + " |")
    for row in rows:
        cells = (
            row.measure,
            row.value,
            row.reference,
            row.reference_value,
            row.ratio,
            row.target,
            met_text(row.met),
        )
        print("| " + " | ".join(cells) + " |")


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# Fresh process: time to the first grid -------------------------------------------------

# Arguments: the generator file, the digit count, the grid columns.
FRESH_GRID_CODE = """
import json, sys, time
clock = lambda: time.clock_gettime(time.CLOCK_MONOTONIC)
marks = {"python": clock()}
from gan import generate
marks["import gan.generate"] = clock()
import keras
marks["import keras (TensorFlow)"] = clock()
generator = generate.load_generator_file(sys.argv[1])
marks["load_generator_file"] = clock()
request = generate.GridRequest(seed=0, count=int(sys.argv[2]), columns=int(sys.argv[3]))
result = generate.make_grid(generator, request)
marks["first make_grid"] = clock()
png = generate.png_bytes(result.grid)
marks["png_bytes"] = clock()
print(json.dumps({"marks": marks, "png_bytes": len(png)}))
"""

IMPORT_TENSORFLOW_CODE = """
import json, time
import tensorflow
print(json.dumps({"imported": time.clock_gettime(time.CLOCK_MONOTONIC)}))
"""


def fresh_grid_once(generator_file: Path) -> dict[str, float]:
    """Return the seconds of each step of one fresh process, its total from the spawn and its wall time."""
    result = run_python(FRESH_GRID_CODE, arguments=[str(generator_file), str(GRID_COUNT), str(GRID_COLUMNS)])
    marks = last_json_line(result)["marks"]
    parts, previous = {"interpreter start-up": marks["python"] - result.started}, marks["python"]
    for name, moment in marks.items():
        if name != "python":
            parts[name] = moment - previous
            previous = moment
    parts["total"] = previous - result.started
    parts["process wall, exit included"] = result.wall_seconds
    return parts


def cli_generate_once(generator_file: Path, output: Path) -> float:
    options = f"--seed 0 --count {GRID_COUNT} --columns {GRID_COLUMNS}".split()
    arguments = [sys.executable, "-m", "gan", "generate", "--generator", str(generator_file), *options]
    arguments += ["--output", str(output)]
    result = Child(arguments, child_env()).wait()
    check_exit(result, "python -m gan generate")
    return result.wall_seconds


def import_tensorflow_seconds() -> float:
    result = run_python(IMPORT_TENSORFLOW_CODE)
    return last_json_line(result)["imported"] - result.started


def measure_fresh(report: Report, repeats: int) -> None:
    generator_file = dashboard.PRETRAINED_GENERATOR
    fresh_runs, references, commands = [], [], []
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(repeats):
            references.append(import_tensorflow_seconds())
            fresh_runs.append(fresh_grid_once(generator_file))
            commands.append(cli_generate_once(generator_file, Path(folder) / "digits.png"))
    median = {name: statistics.median(parts[name] for parts in fresh_runs) for name in fresh_runs[0]}
    reference = statistics.median(references)
    target_text, limit = TARGETS["fresh"]
    report.rows.append(
        Row(
            f"fresh process to first {GRID_COUNT}-digit PNG (median of {repeats})",
            seconds_text(median["total"]),
            "new process, `import tensorflow` only",
            seconds_text(reference),
            ratio_text(median["total"], reference),
            target_text,
            median["total"] <= limit,
        )
    )
    for name, seconds in median.items():
        if name != "total":
            report.rows.append(Row(f"- {name}", seconds_text(seconds)))
    command = statistics.median(commands)
    report.rows.append(
        Row(
            f"`python -m gan generate --count {GRID_COUNT}`, spawn to exit (median of {repeats})",
            seconds_text(command),
            "same reference",
            seconds_text(reference),
            ratio_text(command, reference),
        )
    )


# Warm latency -------------------------------------------------------------------


def timed_rounds(
    calls: dict[str, Callable[[int], object]], warmup: int, rounds: int
) -> dict[str, np.ndarray]:
    """Time each call once per round, in turn, after ``warmup`` warm-up rounds, and return seconds by name.

    Taking turns puts every call under the same load from other processes.
    Each call gets the round number, from which it may pick its seeds.
    """
    for index in range(warmup):
        for call in calls.values():
            call(index)
    seconds = {name: np.empty(rounds) for name in calls}
    for index in range(rounds):
        for name, call in calls.items():
            started = time.perf_counter()
            call(warmup + index)
            seconds[name][index] = time.perf_counter() - started
    return seconds


def measure_warm(report: Report, warmup: int, calls: int) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from gan import generate

    generator = generate.load_generator_file(dashboard.PRETRAINED_GENERATOR)

    def page_grid(index: int) -> None:
        generate.make_grid(
            generator, generate.GridRequest(seed=index, count=GRID_COUNT, columns=GRID_COLUMNS)
        )

    latents = generate.latent_vectors(generate.sample_seeds(0, GRID_COUNT), generate.latent_dim_of(generator))

    def bare_call(_: int) -> None:
        np.asarray(generator(latents, training=False))

    def bare_batches(_: int) -> None:
        for start in range(0, GRID_COUNT, generate.GENERATION_BATCH):
            np.asarray(generator(latents[start : start + generate.GENERATION_BATCH], training=False))

    timings = timed_rounds({"grid": page_grid, "bare": bare_call, "batches": bare_batches}, warmup, calls)
    grid, bare, batches = timings["grid"], timings["bare"], timings["batches"]
    median, p90 = float(np.median(grid)), float(np.percentile(grid, 90))
    bare_median = float(np.median(bare))
    target_text, limit = TARGETS["warm"]
    reference = f"one bare `generator(z, training=False)` on {GRID_COUNT} vectors, median"
    for name, value in (("median", median), ("90th percentile", p90)):
        report.rows.append(
            Row(
                f"warm `make_grid`, {GRID_COUNT} digits, {name} of {calls}",
                seconds_text(value),
                reference,
                seconds_text(bare_median),
                ratio_text(value, bare_median),
                target_text,
                value <= limit,
            )
        )
    report.rows.append(
        Row(
            f"- bare eager calls on batches of {generate.GENERATION_BATCH} vectors, the chunks that "
            "`make_grid` runs in one graph call, median",
            seconds_text(float(np.median(batches))),
        )
    )


# CLI start-up ---------------------------------------------------------------------

CLI_HELP_MODULES_CODE = """
import contextlib, io, json, sys
from gan import cli
with contextlib.redirect_stdout(io.StringIO()):
    try:
        cli.main(["--help"])
    except SystemExit:
        pass
print(json.dumps({"tensorflow": "tensorflow" in sys.modules, "keras": "keras" in sys.modules,
                  "numpy": "numpy" in sys.modules, "modules": len(sys.modules)}))
"""


def median_wall(arguments: list[str], repeats: int) -> float:
    walls = []
    for _ in range(repeats):
        result = Child(arguments, child_env()).wait()
        check_exit(result, " ".join(arguments[1:]))
        walls.append(result.wall_seconds)
    return statistics.median(walls)


def measure_cli(report: Report, repeats: int) -> None:
    reference = median_wall([sys.executable, "-c", "pass"], repeats)
    help_wall = median_wall([sys.executable, "-m", "gan", "--help"], repeats)
    modules = last_json_line(run_python(CLI_HELP_MODULES_CODE))
    target_text, limit = TARGETS["cli"]
    report.rows.append(
        Row(
            f"`python -m gan --help`, spawn to exit (median of {repeats})",
            seconds_text(help_wall),
            "`python -c pass`, median",
            seconds_text(reference),
            ratio_text(help_wall, reference),
            target_text,
            help_wall < limit and not modules["tensorflow"],
        )
    )
    imported = ", ".join(name for name in ("tensorflow", "keras", "numpy") if modules[name]) or "none of them"
    report.rows.append(
        Row(
            "- TensorFlow, Keras or numpy imported by `--help`",
            f"{imported} ({modules['modules']} modules in all)",
        )
    )


# Losses page ----------------------------------------------------------------------


def write_metrics_csv(path: Path, rows: int) -> None:
    """Write ``rows`` plausible rows under the trainer's metrics.csv header, 6 decimals like the trainer."""
    generator = np.random.default_rng(0)
    steps = np.arange(1, rows + 1, dtype=np.int64) * 10
    frame = pd.DataFrame(
        {
            "step": steps,
            "epoch": (steps - 1) // SYNTHETIC_STEPS_PER_EPOCH + 1,
            "d_loss": 1.3 + 0.2 * generator.standard_normal(rows),
            "g_loss": 0.9 + 0.3 * generator.standard_normal(rows),
            "d_real": np.clip(0.6 + 0.1 * generator.standard_normal(rows), 0, 1),
            "d_fake": np.clip(0.4 + 0.1 * generator.standard_normal(rows), 0, 1),
            "wall_time": 1.8e9 + 0.05 * steps.astype(np.float64),
        },
        columns=list(runs.METRICS_COLUMNS),
    )
    frame.to_csv(path, index=False, float_format="%.6f", lineterminator="\n")


def page_preparation(path: Path, label: str) -> dict[str, float]:
    """Run the Losses page's calls before Altair, as its first render of a run does, and time each step."""
    seconds = {}
    started = time.perf_counter()
    reader = history.CsvHistory(path, "step")
    reader.refresh()
    reader.warnings()
    seconds["`CsvHistory.refresh` (read and parse)"] = time.perf_counter() - started

    started = time.perf_counter()
    frames = {label: reader.frame}
    seconds["`CsvHistory.frame`"] = time.perf_counter() - started

    started = time.perf_counter()
    series = history.LOSS_SERIES + history.DISCRIMINATOR_SERIES
    frame = history.display_frame(frames, series, smoothing=PAGE_SMOOTHING)
    seconds["`history.display_frame` (smooth, downsample)"] = time.perf_counter() - started

    started = time.perf_counter()
    frame[frame["series"] == "d_loss"]
    frame[frame["series"] == "g_loss"]
    frame[frame["series"].isin(history.DISCRIMINATOR_SERIES)]
    max(len(each) for each in frames.values())
    seconds["series filters of the page"] = time.perf_counter() - started
    seconds["total"] = sum(seconds.values())
    return seconds


def step_breakdown(path: Path) -> dict[str, float]:
    """Time the library functions inside refresh and display_frame one by one, on the same file."""
    seconds = {}
    started = time.perf_counter()
    text, _ = runs.read_complete_lines(path, 0)
    seconds["read_complete_lines"] = time.perf_counter() - started

    header, _, body = text.partition("\n")
    started = time.perf_counter()
    frame, _ = history.parse_rows_counted(body, header.strip().split(","))
    seconds["parse_rows_counted"] = time.perf_counter() - started

    started = time.perf_counter()
    pd.read_csv(io.StringIO(body), header=None, names=list(runs.METRICS_COLUMNS), dtype=np.float64)
    seconds["pandas.read_csv of the same text in memory"] = time.perf_counter() - started

    smoothed, started = [], time.perf_counter()
    for name in history.LOSS_SERIES + history.DISCRIMINATOR_SERIES:
        smoothed.append(history.smooth(frame[name].to_numpy(dtype=np.float64), PAGE_SMOOTHING))
    seconds["smooth, 4 series"] = time.perf_counter() - started

    started = time.perf_counter()
    for name, values in zip(history.LOSS_SERIES + history.DISCRIMINATOR_SERIES, smoothed, strict=True):
        history.downsample_indices(frame[name].to_numpy(dtype=np.float64))
        history.downsample_indices(values)
    seconds["downsample_indices, 8 curves"] = time.perf_counter() - started
    return seconds


def measure_losses(report: Report, rows: int, repeats: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        run_dir = Path(folder) / "synthetic-run"
        run_dir.mkdir()
        path = run_dir / runs.METRICS_FILE
        write_metrics_csv(path, rows)
        size = path.stat().st_size
        references, preparations, breakdowns = [], [], []
        for _ in range(repeats):
            started = time.perf_counter()
            pd.read_csv(path)
            references.append(time.perf_counter() - started)
            preparations.append(page_preparation(path, run_dir.name))
            breakdowns.append(step_breakdown(path))
    reference = statistics.median(references)
    median = {name: statistics.median(each[name] for each in preparations) for name in preparations[0]}
    parts = {name: statistics.median(each[name] for each in breakdowns) for name in breakdowns[0]}
    target_text, limit = TARGETS["losses"]
    report.rows.append(
        Row(
            f"Losses page preparation, {rows:,}-row metrics.csv of {size / 1024**2:.0f} MB "
            f"(median of {repeats})",
            seconds_text(median["total"]),
            "`pandas.read_csv(path)`, median",
            seconds_text(reference),
            ratio_text(median["total"], reference),
            target_text,
            median["total"] < limit,
        )
    )
    for name, seconds in median.items():
        if name != "total":
            report.rows.append(Row(f"- {name}", seconds_text(seconds)))
    for name, seconds in parts.items():
        report.rows.append(Row(f"-- in isolation: {name}", seconds_text(seconds)))


# Peak memory ---------------------------------------------------------------------

# Argument: the timeout of each AppTest run, in seconds.
APP_MEMORY_CODE = """
import json, sys, time
from streamlit.testing.v1 import AppTest

def peak_of_this_process():
    # VmHWM counts this program alone. RUSAGE_SELF's ru_maxrss starts at its forking parent's RSS.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

app = AppTest.from_file("streamlit_app.py", default_timeout=float(sys.argv[1]))
app.query_params["run"] = "pretrained"
app.run()
started = time.perf_counter()
app.switch_page("pages/generate.py").run()
print(json.dumps({
    "exceptions": [str(error.value) for error in app.exception],
    "grid": "generate_grid_png" in app.session_state,
    "render_seconds": time.perf_counter() - started,
    "vm_hwm_bytes": peak_of_this_process(),
}))
"""


# Arguments: the file for the result, then the command. The launcher forks and
# execs the command, passes SIGTERM on to it, and writes the command's exit
# status and ru_maxrss (kilobytes on Linux) from os.wait4 as JSON.
PEAK_RSS_LAUNCHER_CODE = """
import json, os, signal, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
signal.signal(signal.SIGTERM, lambda signum, frame: os.kill(pid, signum))
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as output:
    json.dump({"returncode": os.waitstatus_to_exitcode(status), "max_rss_kb": usage.ru_maxrss}, output)
"""


class PeakRssChild(Child):
    """A command started through a small launcher process, so that its ru_maxrss is its own peak.

    Linux starts the peak RSS of an executed program at the RSS of the
    process that forked it, because exec records the high-water mark of the
    old address space. This benchmark grows to hundreds of MB, so its direct
    children would report at least that. The launcher is a new Python
    process of about 10 MB, far below any command measured here.
    """

    def __init__(self, arguments: list[str], env: dict[str, str] | None = None):
        self.command = arguments
        handle, name = tempfile.mkstemp(prefix="app-speed-rss-", suffix=".json")
        os.close(handle)
        self.output = Path(name)
        super().__init__([sys.executable, "-c", PEAK_RSS_LAUNCHER_CODE, name, *arguments], env or child_env())

    def wait_peak(self, timeout: float = CHILD_TIMEOUT_SECONDS) -> tuple[ChildResult, int]:
        """Wait for the command and return the launcher's result and the command's peak RSS in bytes.

        Raises RuntimeError when the command or the launcher exited with a non-zero status.
        """
        try:
            result = self.wait(timeout)
            check_exit(result, "the peak RSS launcher")
            measured = json.loads(self.output.read_text())
        finally:
            self.output.unlink(missing_ok=True)
        if measured["returncode"] != 0:
            raise RuntimeError(
                f"{self.command!r} exited with status {measured['returncode']}:\n{result.stderr[-3000:]}"
            )
        return result, measured["max_rss_kb"] * 1024


def tensorflow_import_rss() -> int:
    """Return the peak RSS in bytes of a new process that only imports TensorFlow."""
    _, peak = PeakRssChild([sys.executable, "-c", "import tensorflow"]).wait_peak()
    return peak


def tiled(array: np.ndarray, count: int) -> np.ndarray:
    """Repeat ``array`` along its first axis until it has ``count`` entries."""
    copies = -(-count // len(array))
    return np.concatenate([array] * copies)[:count]


def write_tiled_npz(path: Path, train: int = 60_000, test: int = 10_000) -> None:
    """Write a Keras-layout .npz of ``train`` and ``test`` digits tiled from GAN_MNIST_PATH's .npz."""
    source = os.environ.get("GAN_MNIST_PATH")
    if not source or not Path(source).is_file() or not source.endswith(".npz"):
        raise RuntimeError(
            "GAN_MNIST_PATH must name a Keras-layout mnist.npz for the trainer memory measurement, "
            f"got {source!r}."
        )
    with np.load(source) as digits:
        np.savez(
            path,
            x_train=tiled(digits["x_train"], train),
            y_train=tiled(digits["y_train"], train),
            x_test=tiled(digits["x_test"], test),
            y_test=tiled(digits["y_test"], test),
        )


def status_step(run_dir: Path) -> int:
    """Return the step in status.json, or 0 while the file is missing or being replaced."""
    try:
        return int(json.loads((run_dir / runs.STATUS_FILE).read_text()).get("step") or 0)
    except (OSError, ValueError, TypeError):
        return 0


@dataclass(frozen=True)
class TrainerRun:
    peak_rss_bytes: int
    wall_seconds: float
    first_step_seconds: float  # from the spawn to the first status.json with a step above 0
    last_step: int


def train_until(run_dir: Path, data_file: Path, steps: int) -> TrainerRun:
    """Run ``python -m gan train`` until status.json shows ``steps`` steps, then stop it with SIGTERM."""
    arguments = [sys.executable, "-m", "gan", "train", "--run-dir", str(run_dir), "--data", str(data_file)]
    child = PeakRssChild(arguments + ["--epochs", "1"])
    first_step_seconds = None
    deadline = child.started + CHILD_TIMEOUT_SECONDS
    while (step := status_step(run_dir)) < steps:
        if step and first_step_seconds is None:
            first_step_seconds = monotonic() - child.started
        exited = child.poll()
        if exited is not None:
            raise RuntimeError(
                f"the trainer exited after step {step}, before step {steps}:\n{exited.stderr[-3000:]}"
            )
        if monotonic() > deadline:
            child.process.kill()
            child.wait()
            raise TimeoutError(
                f"the trainer timed out at step {step} of {steps} after {CHILD_TIMEOUT_SECONDS} s."
            )
        time.sleep(0.5)
    if first_step_seconds is None:
        first_step_seconds = monotonic() - child.started
    child.process.send_signal(signal.SIGTERM)
    result, peak = child.wait_peak(TRAINER_STOP_TIMEOUT_SECONDS)
    return TrainerRun(peak, result.wall_seconds, first_step_seconds, status_step(run_dir))


def measure_train_memory(report: Report, steps: int, reference: int) -> None:
    # NOTE: the trainer stops inside its first epoch, so the peak leaves out an epoch end
    # (sample grid, generator export, and the quality evaluation of runs on mnist).
    with tempfile.TemporaryDirectory() as folder:
        data_file = Path(folder) / "mnist-70000.npz"
        write_tiled_npz(data_file)
        run = train_until(Path(folder) / "memory-run", data_file, steps)
    target_text, limit = TARGETS["train-memory"]
    report.rows.append(
        Row(
            f"`python -m gan train`, 60,000 + 10,000 digits, peak RSS (SIGTERM after step {steps})",
            bytes_text(run.peak_rss_bytes),
            "new process, `import tensorflow` only",
            bytes_text(reference),
            ratio_text(run.peak_rss_bytes, reference),
            target_text,
            run.peak_rss_bytes < limit,
        )
    )
    report.rows.append(
        Row(
            "- trainer: spawn to first reported step, last step, spawn to exit",
            f"{run.first_step_seconds:.1f} s, step {run.last_step}, {run.wall_seconds:.1f} s",
        )
    )


def measure_app_memory(report: Report, reference: int) -> None:
    with tempfile.TemporaryDirectory() as runs_root:
        env = child_env(GAN_RUNS_DIR=runs_root)
        env.pop("GAN_DEMO", None)
        child = PeakRssChild([sys.executable, "-c", APP_MEMORY_CODE, str(CHILD_TIMEOUT_SECONDS)], env)
        result, peak = child.wait_peak()
    page = last_json_line(result)
    if page["exceptions"] or not page["grid"]:
        raise RuntimeError(f"the Generate page drew no grid. Its exceptions: {page['exceptions']}")
    target_text, limit = TARGETS["app-memory"]
    report.rows.append(
        Row(
            "Generate page under `AppTest`, shipped generator, peak RSS",
            bytes_text(peak),
            "new process, `import tensorflow` only",
            bytes_text(reference),
            ratio_text(peak, reference),
            target_text,
            peak < limit,
        )
    )
    report.rows.append(
        Row("- the same process's own VmHWM (/proc/self/status)", bytes_text(page["vm_hwm_bytes"]))
    )
    report.rows.append(
        Row(
            "- Generate page run after the app's first run (Train page)", seconds_text(page["render_seconds"])
        )
    )


# Command line ----------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    only: tuple[str, ...]
    repeats: int
    cli_repeats: int
    warmup: int
    calls: int
    rows: int
    losses_repeats: int
    train_steps: int


FULL = {"repeats": 5, "cli_repeats": 10, "warmup": 10, "calls": 200, "losses_repeats": 3, "train_steps": 30}
QUICK = {"repeats": 1, "cli_repeats": 3, "warmup": 3, "calls": 30, "losses_repeats": 1, "train_steps": 10}


def positive_integer(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer of at least 1, got {text}.")
    return value


def measurement_names(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in MEASUREMENTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown measurement {unknown or text!r}. Choose from {', '.join(MEASUREMENTS)}."
        )
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    quick = ", ".join(f"{name} {value}" for name, value in QUICK.items())
    parser.add_argument("--quick", action="store_true", help=f"fewer repetitions and steps: {quick}")
    parser.add_argument(
        "--only",
        type=measurement_names,
        default=MEASUREMENTS,
        help=f"comma-separated measurements to run (default all: {','.join(MEASUREMENTS)})",
    )
    counts = (
        ("--repeats", "new processes of each kind for the fresh grid"),
        ("--cli-repeats", "new processes of `python -m gan --help` and of `python -c pass`"),
        ("--warmup", "untimed warm-up calls before the warm grid timings"),
        ("--calls", "timed calls of the warm grid and of its references"),
        ("--losses-repeats", "repetitions of the Losses page preparation"),
        ("--train-steps", "training steps before the trainer gets SIGTERM"),
    )
    for flag, text in counts:
        default = FULL[flag.removeprefix("--").replace("-", "_")]
        parser.add_argument(flag, type=positive_integer, help=f"{text} (default {default})")
    parser.add_argument(
        "--rows",
        type=positive_integer,
        default=1_000_000,
        help="rows of the synthetic metrics.csv (default 1000000, also with --quick)",
    )
    return parser


def parse_settings(argv: list[str] | None = None) -> Settings:
    """Parse the options; ``--quick`` changes the defaults, and explicit options still win."""
    args = build_parser().parse_args(argv)
    defaults = QUICK if args.quick else FULL
    chosen = {}
    for name, default in defaults.items():
        value = getattr(args, name)
        chosen[name] = default if value is None else value
    return Settings(only=args.only, rows=args.rows, **chosen)


def versions() -> str:
    from importlib import metadata

    packages = ("tensorflow", "keras", "streamlit", "pandas")
    installed = ", ".join(f"{name} {metadata.version(name)}" for name in packages)
    return f"Python {platform.python_version()}, {installed}, {os.cpu_count()} CPUs"


def run_measurements(settings: Settings, report: Report) -> None:
    """Run each chosen measurement in a fixed order. A failure is recorded, and the rest still run."""
    reference_rss: list[int] = []

    def memory_reference() -> int:
        if not reference_rss:
            reference_rss.append(tensorflow_import_rss())
        return reference_rss[0]

    steps = {
        "cli": lambda: measure_cli(report, settings.cli_repeats),
        "fresh": lambda: measure_fresh(report, settings.repeats),
        "losses": lambda: measure_losses(report, settings.rows, settings.losses_repeats),
        "train-memory": lambda: measure_train_memory(report, settings.train_steps, memory_reference()),
        "app-memory": lambda: measure_app_memory(report, memory_reference()),
        # Last, because it imports TensorFlow into this process.
        "warm": lambda: measure_warm(report, settings.warmup, settings.calls),
    }
    for name, measure in steps.items():
        if name not in settings.only:
            continue
        print(f"measuring {name} (load average {load_average()})", file=sys.stderr, flush=True)
        report.load_averages.append(load_average())
        try:
            measure()
        except Exception as error:  # printed after the table, and the other measurements still run
            report.failures.append(f"{name}: {type(error).__name__}: {error}")
            report.rows.append(Row(name, "failed"))
    report.load_averages.append(load_average())


def main(argv: list[str] | None = None) -> int:
    settings = parse_settings(argv)
    report = Report()
    started = time.perf_counter()
    run_measurements(settings, report)
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, {versions()}")
    print(f"settings: {settings}")
    print()
    print_table(report.rows)
    print()
    averages = "; ".join(report.load_averages)
    print(f"load average (1, 5, 15 min) before each measurement and at the end: {averages}")
    print(f"benchmark wall time: {time.perf_counter() - started:.0f} s")
    for failure in report.failures:
        print(f"failed: {failure}", file=sys.stderr)
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
