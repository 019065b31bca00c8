"""Every reader of a run folder on damaged files: the CLI, the library readers and the pages.

Each case damages one file of a copy of a real finished run: config.json,
status.json, metrics.csv, epochs.csv, a sample grid PNG or generator.keras.
Each reader that reads that file must answer with a message that names it,
never with a traceback, and must leave the damaged file as it found it.
Only the trainer's own resume may rewrite status.json and the CSV histories.

The expected outcome of a reader is one of:

- ``error``: the reader rejects the run; the CLI exits with status 1 or 2 and
  a page shows ``st.error``, each naming the damaged file;
- ``warn``: the reader goes on and shows a warning that names the file;
- ``ok``: the damage does not change what the reader shows (a cut last line
  is what a trainer leaves while it writes), and it still works.

The counts of damaged files and readers are written to
test-output/reliability/damaged-files.json.
"""

import contextlib
import hashlib
import json
import logging
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest
from test_pages import APP, TIMEOUT, messages, trained_run

from gan import cli, dashboard, generate, history, runs
from gan.errors import InputError

__all__ = ["trained_run"]  # a fixture shared with the page tests

REPOSITORY = Path(__file__).resolve().parents[1]
REPORT = REPOSITORY / "test-output" / "reliability" / "damaged-files.json"
GOOD_RUN = "good"

# Bytes that are not UTF-8 text, and bytes of every value (with newlines among them).
NOT_UTF8 = bytes(range(128, 256)) * 4
BINARY = bytes(range(256)) * 3

# Readers. Each damage case lists those that read its file, with the expected outcome.
CLI_STATUS = "cli status"
CLI_LIST = "cli list"
CLI_GENERATE_RUN = "cli generate --run-dir"
CLI_GENERATE_FILE = "cli generate --generator"
CLI_RESUME = "cli train --resume"
CLI_STOP = "cli stop"
SIDEBAR = "sidebar runs list"
TRAIN_PAGE = "Train page"
LOSSES_PAGE = "Losses page"
GENERATE_PAGE = "Generate page"
LIBRARY = "library readers"


# Damages ----------------------------------------------------------------------------------------


def half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def json_with(**values):
    def damage(data: bytes) -> bytes:
        return json.dumps({**json.loads(data), **values}).encode()

    return damage


def cut_last_line(data: bytes) -> bytes:
    lines = data.splitlines(keepends=True)
    last = lines[-1].rstrip(b"\n")
    return b"".join(lines[:-1]) + last[: len(last) // 2]


def garbage_line_in_middle(data: bytes) -> bytes:
    lines = data.splitlines(keepends=True)
    middle = len(lines) // 2
    return b"".join(lines[:middle] + [b"@@ not a row of numbers @@\n"] + lines[middle:])


def other_header(data: bytes) -> bytes:
    lines = data.splitlines(keepends=True)
    width = lines[0].count(b",") + 1
    names = ",".join(f"column{index}" for index in range(width))
    return (names + "\n").encode() + b"".join(lines[1:])


def no_header(data: bytes) -> bytes:
    return b"".join(data.splitlines(keepends=True)[1:])


def text_cell_in_middle(data: bytes) -> bytes:
    lines = data.splitlines(keepends=True)
    middle = len(lines) // 2
    cells = lines[middle].rstrip(b"\n").split(b",")
    cells[2] = b"abc"
    lines[middle] = b",".join(cells) + b"\n"
    return b"".join(lines)


@dataclass(frozen=True)
class Damage:
    """One damaged file of a copy of the trained run, and what each reader of it must do."""

    id: str
    path: str  # relative to the run folder
    damage: object  # bytes -> bytes
    expected: dict[str, str]
    # The run then has only its exported generator.keras, which readers load instead.
    without_checkpoints: bool = False
    # Readers that may rewrite the file (the trainer's own resume).
    rewriters: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        return Path(self.path).name


CONFIG_READERS = {
    CLI_STATUS: "error",
    CLI_LIST: "warn",
    CLI_GENERATE_RUN: "error",
    CLI_RESUME: "error",
    CLI_STOP: "error",
    SIDEBAR: "ok",
    TRAIN_PAGE: "warn",
    GENERATE_PAGE: "error",
    LIBRARY: "error",
}
UNREADABLE_STATUS_READERS = {
    CLI_STATUS: "warn",
    CLI_LIST: "warn",
    CLI_RESUME: "ok",
    CLI_STOP: "error",
    SIDEBAR: "ok",
    TRAIN_PAGE: "warn",
    LIBRARY: "warn",
}
# A finished run whose status has a bad number: stop rejects it as not running, which it is.
WRONG_TYPE_STATUS_READERS = {**UNREADABLE_STATUS_READERS, CLI_STOP: "rejected"}
HISTORY_READERS = {CLI_RESUME: "ok", LOSSES_PAGE: "warn", LIBRARY: "warn"}
SAMPLE_READERS = {TRAIN_PAGE: "warn", LOSSES_PAGE: "warn", LIBRARY: "error"}
GENERATOR_READERS = {
    CLI_GENERATE_FILE: "error",
    CLI_GENERATE_RUN: "error",
    GENERATE_PAGE: "error",
    LIBRARY: "error",
}


def config_case(case_id: str, damage) -> Damage:
    return Damage(case_id, runs.CONFIG_FILE, damage, CONFIG_READERS)


def status_case(case_id: str, damage, readers=UNREADABLE_STATUS_READERS) -> Damage:
    return Damage(case_id, runs.STATUS_FILE, damage, readers, rewriters=(CLI_RESUME,))


def history_cases(file_name: str) -> list[Damage]:
    stem = Path(file_name).stem
    damages = {
        "cut-last-line": cut_last_line,
        "garbage-line": garbage_line_in_middle,
        "other-header": other_header,
        "no-header": no_header,
        "empty": lambda data: b"",
        "binary": lambda data: BINARY,
        "text-cell": text_cell_in_middle,
    }
    cases = []
    for damage_id, damage in damages.items():
        expected = dict(HISTORY_READERS)
        if damage_id == "cut-last-line":
            # A trainer that is writing leaves a line without its newline; readers wait for the rest.
            expected = {reader: "ok" for reader in expected}
        cases.append(Damage(f"{stem}-{damage_id}", file_name, damage, expected, rewriters=(CLI_RESUME,)))
    return cases


LAST_GRID = f"{runs.SAMPLES_DIR}/epoch_0002.png"
FIRST_GRID = f"{runs.SAMPLES_DIR}/epoch_0000.png"

CASES = [
    config_case("config-empty", lambda data: b""),
    config_case("config-half", half),
    config_case("config-not-utf8", lambda data: NOT_UTF8),
    config_case("config-list", lambda data: b"[1, 2, 3]"),
    config_case("config-epochs-text", json_with(epochs="ten")),
    config_case("config-unknown-field", json_with(colour="blue")),
    status_case("status-empty", lambda data: b""),
    status_case("status-half", half),
    status_case("status-not-utf8", lambda data: NOT_UTF8),
    status_case("status-list", lambda data: b"[1, 2, 3]"),
    status_case("status-step-text", json_with(step="x"), WRONG_TYPE_STATUS_READERS),
    status_case("status-step-null", json_with(step=None), WRONG_TYPE_STATUS_READERS),
    status_case("status-epoch-text", json_with(epoch="x"), WRONG_TYPE_STATUS_READERS),
    status_case("status-epoch-null", json_with(epoch=None), WRONG_TYPE_STATUS_READERS),
    *history_cases(runs.METRICS_FILE),
    *history_cases(runs.EPOCHS_FILE),
    Damage("grid-truncated", LAST_GRID, half, SAMPLE_READERS),
    Damage("grid-zero-bytes", LAST_GRID, lambda data: b"", SAMPLE_READERS),
    Damage("grid-garbage", LAST_GRID, lambda data: BINARY, SAMPLE_READERS),
    Damage("grid-text-file", LAST_GRID, lambda data: b"a text file, not a PNG image\n", SAMPLE_READERS),
    # The Train page shows only the newest grid.
    Damage("first-grid-zero-bytes", FIRST_GRID, lambda data: b"", {**SAMPLE_READERS, TRAIN_PAGE: "ok"}),
    Damage("generator-truncated", runs.GENERATOR_FILE, half, GENERATOR_READERS, without_checkpoints=True),
    Damage(
        "generator-garbage",
        runs.GENERATOR_FILE,
        lambda data: BINARY,
        GENERATOR_READERS,
        without_checkpoints=True,
    ),
]
CASE_IDS = [case.id for case in CASES]


def cases_read_by(reader: str) -> list:
    return [pytest.param(case, id=case.id) for case in CASES if reader in case.expected]


# Results for the report -------------------------------------------------------------------------

CHECKED: set[tuple[str, str]] = set()


def record(case: Damage, reader: str) -> None:
    """Count a (damaged file, reader) pair once all of its assertions have passed."""
    CHECKED.add((case.id, reader))


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    readers = sorted({reader for _, reader in CHECKED})
    summary = {
        "damaged_files_tried": len({case_id for case_id, _ in CHECKED}),
        "damage_cases_defined": len(CASES),
        "readers_checked": len(readers),
        "reader_checks_passed": len(CHECKED),
        "reader_checks_defined": sum(len(case.expected) for case in CASES),
        "readers": readers,
        "cases": CASE_IDS,
    }
    REPORT.write_text(json.dumps(summary, indent=2) + "\n")


# Fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(trained_run):
    """A finished run of the fast config."""
    return trained_run


def make_damaged_copy(trained: Path, root: Path, case: Damage) -> Path:
    run_dir = root / case.id
    shutil.copytree(trained, run_dir, ignore=shutil.ignore_patterns("*.lock"))
    if case.without_checkpoints:
        shutil.rmtree(run_dir / runs.CHECKPOINTS_DIR)
    target = run_dir / case.path
    target.write_bytes(case.damage(target.read_bytes()))
    return run_dir


@pytest.fixture(scope="module")
def damaged_root(tmp_path_factory, trained, mnist_path):
    """A runs root with one damaged copy of the trained run per case, and one good copy.

    The readers here never write, so every test reads the same copies; the
    resume test works on copies of its own.
    """
    root = tmp_path_factory.mktemp("damaged") / "runs"
    root.mkdir()
    shutil.copytree(trained, root / GOOD_RUN, ignore=shutil.ignore_patterns("*.lock"))
    digests = {}
    for case in CASES:
        run_dir = make_damaged_copy(trained, root, case)
        digests[case.id] = digest(run_dir / case.path)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GAN_RUNS_DIR", str(root))
        patch.setenv("GAN_MNIST_PATH", str(mnist_path))
        patch.delenv("GAN_DEMO", raising=False)
        patch.setattr(dashboard, "DEMO_RUN_DIR", root.parent / "no-demo-run")
        patch.setattr(dashboard, "PRETRAINED_GENERATOR", root.parent / "no-pretrained.keras")
        yield root, digests


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# The command line, in this process --------------------------------------------------------------


@dataclass
class Outcome:
    code: int
    out: str
    err: str


def run_cli(argv: list[str], capsys, caplog) -> Outcome:
    """Run ``python -m gan ARGV`` through gan.cli.main in this process."""
    capsys.readouterr()
    caplog.clear()
    with caplog.at_level(logging.INFO):
        code = cli.main([str(argument) for argument in argv])
    captured = capsys.readouterr()
    # The CLI logs a traceback only for a failure it did not expect.
    logged = [record.getMessage() for record in caplog.records if record.exc_info]
    assert logged == [], logged
    return Outcome(code, captured.out, captured.err)


def check_cli(outcome: Outcome, expected: str, name: str) -> None:
    assert "Traceback" not in outcome.err
    if expected == "error":
        assert outcome.code in (1, 2), outcome
        assert name in outcome.err, outcome.err
    elif expected == "rejected":
        assert outcome.code == 2, outcome
        assert outcome.err.startswith("error: "), outcome.err
    elif expected == "warn":
        assert outcome.code == 0, outcome
        assert name in outcome.out, outcome.out
    else:
        assert outcome.code == 0, outcome


@pytest.mark.parametrize("case", cases_read_by(CLI_STATUS))
def test_cli_status_on_damaged_file(case, damaged_root, capsys, caplog):
    root, _ = damaged_root
    outcome = run_cli(["status", "--run-dir", root / case.id], capsys, caplog)
    check_cli(outcome, case.expected[CLI_STATUS], case.name)
    record(case, CLI_STATUS)


@pytest.mark.parametrize("case", cases_read_by(CLI_LIST))
def test_cli_list_on_damaged_file(case, damaged_root, capsys, caplog):
    root, _ = damaged_root
    outcome = run_cli(["list", "--runs-dir", root, "--json"], capsys, caplog)
    assert outcome.code == 0, outcome
    listed = {row["name"]: row for row in json.loads(outcome.out)}
    assert set(listed) == {GOOD_RUN, *CASE_IDS}
    row = listed[case.id]
    if case.expected[CLI_LIST] == "warn":
        assert any(case.name in warning for warning in row["warnings"]), row
    assert listed[GOOD_RUN]["warnings"] == []
    assert listed[GOOD_RUN]["state"] == "finished"

    text = run_cli(["list", "--runs-dir", root], capsys, caplog)
    assert text.code == 0, text
    assert f"{case.id}: " in text.out
    record(case, CLI_LIST)


@pytest.mark.parametrize("case", cases_read_by(CLI_STOP))
def test_cli_stop_on_damaged_file(case, damaged_root, capsys, caplog):
    root, _ = damaged_root
    outcome = run_cli(["stop", "--run-dir", root / case.id, "--wait", "0"], capsys, caplog)
    check_cli(outcome, case.expected[CLI_STOP], case.name)
    record(case, CLI_STOP)


@pytest.mark.parametrize("case", cases_read_by(CLI_GENERATE_RUN))
def test_cli_generate_from_run_on_damaged_file(case, damaged_root, capsys, caplog, tmp_path):
    root, _ = damaged_root
    output = tmp_path / "digits.png"
    outcome = run_cli(
        ["generate", "--run-dir", root / case.id, "--count", "4", "--output", output], capsys, caplog
    )
    check_cli(outcome, case.expected[CLI_GENERATE_RUN], case.name)
    assert output.exists() == (outcome.code == 0)
    record(case, CLI_GENERATE_RUN)


@pytest.mark.parametrize("case", cases_read_by(CLI_GENERATE_FILE))
def test_cli_generate_from_file_on_damaged_file(case, damaged_root, capsys, caplog, tmp_path):
    root, _ = damaged_root
    output = tmp_path / "digits.png"
    generator = root / case.id / runs.GENERATOR_FILE
    outcome = run_cli(
        ["generate", "--generator", generator, "--count", "4", "--output", output], capsys, caplog
    )
    check_cli(outcome, case.expected[CLI_GENERATE_FILE], case.name)
    assert not output.exists()
    record(case, CLI_GENERATE_FILE)


@contextlib.contextmanager
def keeping_signal_handlers():
    """Restore SIGTERM and SIGINT handlers, which the train command replaces for its run."""
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@pytest.mark.parametrize("case", cases_read_by(CLI_RESUME))
def test_cli_resume_on_damaged_file(case, damaged_root, trained, capsys, caplog, tmp_path):
    run_dir = make_damaged_copy(trained, tmp_path, case)
    before = digest(run_dir / case.path)
    with keeping_signal_handlers():
        outcome = run_cli(["train", "--run-dir", run_dir, "--resume"], capsys, caplog)
    check_cli(outcome, case.expected[CLI_RESUME], case.name)
    if outcome.code == 0:
        # The trainer resumed from its last checkpoint and found every epoch done.
        assert runs.read_status(run_dir)["state"] == "finished"
        assert runs.read_status(run_dir)["step"] == 16
    else:
        assert digest(run_dir / case.path) == before
    record(case, CLI_RESUME)


# The command line, in real processes ------------------------------------------------------------


def run_process(*arguments) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gan", *map(str, arguments)],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_processes_on_damaged_files(damaged_root, tmp_path):
    root, _ = damaged_root
    status = run_process("status", "--run-dir", root / "config-not-utf8")
    assert status.returncode == 2
    assert "config.json" in status.stderr
    assert "Traceback" not in status.stderr

    listing = run_process("list", "--runs-dir", root)
    assert listing.returncode == 0, listing.stderr
    assert "Traceback" not in listing.stderr
    assert "status-step-text: finished" in listing.stdout
    assert f"{root / 'status-step-text' / runs.STATUS_FILE}: step is 'x'" in listing.stdout

    stop = run_process("stop", "--run-dir", root / "status-half", "--wait", "0")
    assert stop.returncode == 2
    assert "status.json is unreadable" in stop.stderr
    assert "Traceback" not in stop.stderr

    output = tmp_path / "digits.png"
    generator = root / "generator-truncated" / runs.GENERATOR_FILE
    generated = run_process("generate", "--generator", generator, "--output", output)
    assert generated.returncode == 2
    assert f"generator file {generator} is damaged" in generated.stderr
    assert "Traceback" not in generated.stderr
    assert not output.exists()


# Library readers ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", cases_read_by(LIBRARY))
def test_library_readers_on_damaged_file(case, damaged_root):
    root, _ = damaged_root
    run_dir = root / case.id
    expected = case.expected[LIBRARY]

    info = next(info for info in runs.list_runs(root) if info.name == case.id)
    assert info in dashboard.dashboard_runs(root)
    if case.path == runs.CONFIG_FILE:
        with pytest.raises(InputError, match=case.name):
            runs.load_config(run_dir)
        assert any(case.name in warning for warning in info.warnings), info
        assert dashboard.run_generator_sources(run_dir)
    elif case.path == runs.STATUS_FILE:
        status = runs.read_status(run_dir)
        assert isinstance(status["state"], str)
        assert any(case.name in warning for warning in info.warnings), info
        assert info.step in (0, 16)
    elif case.path in (runs.METRICS_FILE, runs.EPOCHS_FILE):
        check_history_readers(case, run_dir / case.path)
    elif case.path.startswith(runs.SAMPLES_DIR):
        with pytest.raises(history.HistoryError, match=case.name):
            history.read_grid(run_dir / case.path)
        assert len(history.list_epoch_samples(run_dir)) == 3
    else:
        assert expected == "error"
        with pytest.raises(InputError, match=case.name):
            generate.load_generator_file(run_dir / case.path)
        with pytest.raises(InputError, match=case.name):
            generate.load_generator(run_dir)
        sources = dashboard.run_generator_sources(run_dir)
        assert [source.label for source in sources] == [runs.GENERATOR_FILE]
        with pytest.raises(InputError, match=case.name):
            sources[0].load()
    record(case, LIBRARY)


def check_history_readers(case: Damage, path: Path) -> None:
    key = "step" if case.path == runs.METRICS_FILE else "epoch"
    columns = list(runs.METRICS_COLUMNS if key == "step" else runs.EPOCHS_COLUMNS)
    reader = history.CsvHistory(path, key)
    reader.refresh()
    assert list(reader.frame.columns) == columns
    warnings = reader.warnings()
    if case.expected[LIBRARY] == "ok":
        assert warnings == []
        assert len(reader.frame) > 0
    else:
        assert warnings, case.id
        assert all(case.name in warning for warning in warnings), warnings

    if reader.header_problem:
        with pytest.raises(history.HistoryError, match=case.name):
            history.read_history(path, key)
        assert reader.frame.empty
    else:
        frame = history.read_history(path, key)
        assert list(frame.columns) == columns
        assert pd.api.types.is_numeric_dtype(frame[key]) or frame.empty
    assert isinstance(history.complete_csv_bytes(path), bytes)


# Pages ------------------------------------------------------------------------------------------


def page_session(page: str, root: Path) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.session_state["run"] = str(root / GOOD_RUN)
    at.run()
    if page != "pages/train.py":
        at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


@pytest.fixture(scope="module")
def train_page(damaged_root):
    return page_session("pages/train.py", damaged_root[0])


@pytest.fixture(scope="module")
def losses_page(damaged_root):
    root, _ = damaged_root
    at = page_session("pages/losses.py", root)
    show_run(at, root / CASE_IDS[0])
    # One good run on the same charts as each damaged run; the choice stays while the current run changes.
    at.multiselect(key="losses_compare").set_value([str(root / GOOD_RUN)]).run()
    assert not at.exception, at.exception
    return at


@pytest.fixture(scope="module")
def generate_page(damaged_root):
    at = page_session("pages/generate.py", damaged_root[0])
    # The good run's grid, before any damaged run is chosen.
    assert "generate_grid_png" in at.session_state
    return at


def show_run(at: AppTest, run_dir: Path) -> None:
    """Choose ``run_dir`` in the sidebar, as a user does, and run the page."""
    at.sidebar.selectbox(key="run").set_value(str(run_dir)).run()
    assert not at.exception, at.exception


def notices(at: AppTest) -> list[str]:
    return messages(at, "warning") + messages(at, "error")


@pytest.mark.parametrize("case", cases_read_by(TRAIN_PAGE))
def test_train_page_on_damaged_file(case, damaged_root, train_page):
    root, _ = damaged_root
    at = train_page
    show_run(at, root / case.id)

    assert set(at.sidebar.selectbox(key="run").options) == {GOOD_RUN, *CASE_IDS}
    if SIDEBAR in case.expected:
        record(case, SIDEBAR)
    if case.expected[TRAIN_PAGE] == "ok":
        assert notices(at) == []
    else:
        assert any(case.name in text for text in notices(at)), notices(at)
    # The rest of the run's panel: its state, the runs table and the log.
    assert [metric.label for metric in at.metric] == ["State", "Images per second", "ETA"]
    assert len(at.dataframe) == 1
    assert any(runs.LOG_FILE in expander.label for expander in at.expander)
    record(case, TRAIN_PAGE)


@pytest.mark.parametrize("case", cases_read_by(LOSSES_PAGE))
def test_losses_page_on_damaged_file(case, damaged_root, losses_page):
    root, _ = damaged_root
    at = losses_page
    show_run(at, root / case.id)
    assert at.multiselect(key="losses_compare").value == [str(root / GOOD_RUN)]

    shown = notices(at)
    if case.expected[LOSSES_PAGE] == "ok":
        assert shown == []
    else:
        assert any(case.name in text for text in shown), shown
    assert not any(GOOD_RUN + "/" in text for text in shown), shown

    # The good run's four loss curves and two epoch charts are drawn whatever the damage.
    assert len(at.get("vega_lite_chart")) == 5
    assert "Samples by epoch" in [header.value for header in at.header]
    labels = [button.label for button in at.get("download_button")]
    assert f"{case.id}: {runs.METRICS_FILE}" in labels
    assert f"{GOOD_RUN}: {runs.EPOCHS_FILE}" in labels
    if case.path.startswith(runs.SAMPLES_DIR):
        assert not any(label.startswith("Download a GIF") for label in labels)
    else:
        assert "Download a GIF of all 3 epoch grids" in labels
    record(case, LOSSES_PAGE)


@pytest.mark.parametrize("case", cases_read_by(GENERATE_PAGE))
def test_generate_page_on_damaged_file(case, damaged_root, generate_page):
    root, _ = damaged_root
    at = generate_page
    show_run(at, root / case.id)

    assert at.selectbox(key="generate_source").value == str(root / case.id)
    errors = messages(at, "error")
    assert any(case.name in text for text in errors), errors
    assert at.get("image") == []
    # The chooser stays, so another generator can be picked.
    assert f"Run {GOOD_RUN}" in at.selectbox(key="generate_source").options
    record(case, GENERATE_PAGE)


# Nothing rewritten ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", [pytest.param(case, id=case.id) for case in CASES])
def test_readers_leave_damaged_file_unchanged(case, damaged_root):
    root, digests = damaged_root
    assert digest(root / case.id / case.path) == digests[case.id]
    assert not list((root / case.id).glob(".*.tmp"))
