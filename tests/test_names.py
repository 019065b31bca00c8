"""Names that could escape the runs folder: run names, links, the runs folder input, download names.

No input may make the pages read or write outside the runs root. An audit
hook records every file the pages open or list while a test watches, so
the tests check the files actually touched, not only the messages.
"""

import inspect
import io
import os
import re
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.runtime.media_file_manager import MediaFileManager
from test_pages import messages as message_texts
from test_pages import open_page, runs_dir, trained_run

from gan import cli, dashboard, names, runs
from gan.generate import grid_image

__all__ = ["runs_dir", "trained_run"]  # fixtures shared with the page tests

REPOSITORY = Path(__file__).resolve().parents[1]
APP = REPOSITORY / "streamlit_app.py"
SAFE_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*\Z")

# Paths opened or listed while a test watches; the audit hook cannot be removed, so it is switched.
TOUCHED: list[str] | None = None


def record_file_access(event: str, arguments: tuple) -> None:
    if TOUCHED is None or event not in ("open", "os.listdir", "os.scandir"):
        return
    path = arguments[0] if arguments else None
    if isinstance(path, (str, bytes, os.PathLike)):
        TOUCHED.append(os.fsdecode(path))


sys.addaudithook(record_file_access)


class watch_files:
    """Collect the paths opened or listed inside the ``with`` block."""

    def __enter__(self) -> list[str]:
        global TOUCHED
        TOUCHED = []
        return TOUCHED

    def __exit__(self, *exc_info) -> None:
        global TOUCHED
        TOUCHED = None


def inside(path: str, folder: Path) -> bool:
    return Path(os.path.abspath(path)).is_relative_to(folder)


# Run names on the Train page -------------------------------------------------------------------------

REJECTED_RUN_NAMES = [
    ("..", "must not contain '..'"),
    ("a..b", "must not contain '..'"),
    ("...", "must not contain '..'"),
    ("../escape", "without path separators"),
    ("a/b", "without path separators"),
    ("a\\b", "without path separators"),
    ("..\\..\\windows", "without path separators"),
    ("/etc", "without path separators"),
    ("/tmp/run", "without path separators"),
    ("C:\\runs\\x", "without path separators"),
    ("~/run", "without path separators"),
    ("run\n", "control character '\\n'"),
    ("ru\nn", "control character '\\n'"),
    ("run\x00", "control character '\\x00'"),
    ("run\x1b[2J", "control character '\\x1b'"),
    ("run\tx", "control character '\\t'"),
    ("\trun", "control character '\\t'"),
    ("run\x7f", "control character '\\x7f'"),
    (".hidden", "must start with a letter or digit"),
    (".", "must start with a letter or digit"),
    ("-rf", "must start with a letter or digit"),
    ("--help", "must start with a letter or digit"),
    ("_run", "must start with a letter or digit"),
    ("x" * 101, "at most 100 characters, got 101"),
    ("x" * 10_000, "at most 100 characters, got 10000"),
    ("", "run_name is empty"),
    ("   ", "run_name is empty"),
    ("two words", "may contain only letters"),
    ("run*", "may contain only letters"),
    ("rün", "may contain only letters"),
    ("pretrained", "reserved"),
]


@pytest.mark.parametrize(("name", "expected"), REJECTED_RUN_NAMES, ids=lambda value: repr(value)[:30])
def test_run_name_rejected(tmp_path, name, expected):
    root = tmp_path / "runs"
    with pytest.raises(dashboard.RunNameError) as error:
        dashboard.check_run_name(name, root)
    message = str(error.value)
    assert message.startswith("run_name"), message
    assert expected in message
    assert len(message) < 300
    assert list(tmp_path.iterdir()) == []


def test_run_name_longest_accepted(tmp_path):
    assert dashboard.check_run_name("x" * 100, tmp_path) == tmp_path / ("x" * 100)
    assert dashboard.check_run_name(" run-1.b_2 ", tmp_path) == tmp_path / "run-1.b_2"


def test_run_name_taken_by_dangling_link(tmp_path):
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    with pytest.raises(dashboard.RunNameError, match="run_name 'gone' already exists"):
        dashboard.check_run_name("gone", tmp_path)
    assert not (tmp_path / "nowhere").exists()


def test_train_form_rejects_escaping_names(runs_dir, tmp_path):
    at = open_page("pages/train.py")
    # Every sixth name: one of each kind; test_run_name_rejected tries them all.
    for name, expected in REJECTED_RUN_NAMES[::6]:
        at.text_input(key="train_run_name").set_value(name)
        next(button for button in at.button if button.label == "Start training").click().run()
        assert not at.exception, at.exception
        errors = [text for text in message_texts(at, "error") if text.startswith("run_name")]
        assert errors and expected in errors[0], (name, message_texts(at, "error"))
    assert list(runs_dir.iterdir()) == []
    assert sorted(path.name for path in tmp_path.iterdir()) == ["runs"]


# Run folders, links and the runs folder ---------------------------------------------------------------


@pytest.fixture
def linked_outside(runs_dir, tmp_path, trained_run):
    """A run inside the root, and a symbolic link in the root to a run outside it."""
    shutil.copytree(trained_run, runs_dir / "inside")
    outside = tmp_path / "outside"
    shutil.copytree(trained_run, outside / "secret")
    (runs_dir / "escape").symlink_to(outside / "secret")
    return outside


def test_symlinked_run_not_listed(runs_dir, linked_outside):
    with watch_files() as touched:
        listed = dashboard.dashboard_runs(runs_dir)
    assert [info.name for info in listed] == ["inside"]
    assert not [path for path in touched if inside(path, linked_outside)]
    # The CLI lists it: there the runs root and its links are the shell user's own.
    assert {info.name for info in runs.list_runs(runs_dir)} == {"inside", "escape"}


@pytest.mark.parametrize(
    "query",
    [
        {"run": "escape"},
        {"run": "../outside/secret"},
        {"run": "../../etc", "checkpoint": "../x"},
        {"run": "/etc/passwd"},
        {"run": "inside", "checkpoint": "../../outside/secret/checkpoints/ckpt-16"},
    ],
    ids=lambda value: repr(value)[:40],
)
def test_generate_link_reads_only_runs_root(runs_dir, tmp_path, linked_outside, query):
    with watch_files() as touched:
        at = open_page("pages/generate.py", query=query)
    assert message_texts(at, "warning"), query
    assert at.selectbox(key="generate_source").value == str(runs_dir / "inside")
    assert at.query_params["run"] == "inside"
    assert "escape" not in " ".join(at.selectbox(key="generate_source").options)
    # Libraries read files such as /etc/mime.types; no path in this test's folder but the runs root is read.
    escaped = [path for path in touched if inside(path, tmp_path) and not inside(path, runs_dir)]
    assert escaped == []
    assert not [path for path in touched if path.endswith("passwd") or inside(path, tmp_path.parent / "etc")]


def test_sidebar_and_losses_skip_symlinked_run(runs_dir, linked_outside):
    with watch_files() as touched:
        at = open_page("pages/losses.py")
    assert at.sidebar.selectbox(key="run").options == ["inside"]
    assert at.multiselect(key="losses_compare").options == []
    assert not [path for path in touched if inside(path, linked_outside)]


# Download file names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stem",
    [
        "run-1",
        "a/b",
        "..\\..\\x",
        "../../etc/passwd",
        "/abs",
        "a\nb",
        "\x1b[2J",
        "tab\there",
        ".hidden",
        "-rf",
    ]
    + ["..", "x" * 10_000, "", "rün name"],
    ids=lambda value: repr(value)[:20],
)
def test_download_name_is_one_safe_name(stem):
    name = names.download_name(stem, "epochs.png")
    assert SAFE_FILE_NAME.match(name), name
    assert ".." not in name
    assert name.endswith("-epochs.png")
    assert len(name) <= names.MAX_NAME_LENGTH + len("-epochs.png")


def test_losses_download_names_from_odd_run_name(runs_dir, trained_run, captured_media):
    # A folder made outside the app, for example with `python -m gan train --run-dir 'odd name'`.
    odd = shutil.copytree(trained_run, runs_dir / "-odd name.. x")
    at = open_page("pages/losses.py", run=str(odd))
    file_names = [captured_media.file_name(button) for button in at.get("download_button")]
    assert len(file_names) == 4
    for file_name in file_names:
        assert SAFE_FILE_NAME.match(file_name), file_name
        assert ".." not in file_name
    assert "odd_name__x-metrics.csv" in file_names


# The CLI: new run folders and output files ---------------------------------------------------------------


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = cli.main(argv)
    except SystemExit as exit:
        code = exit.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("new\nline", "control character '\\n'"),
        ("esc\x1b[2J", "control character '\\x1b'"),
        ("tab\tx", "control character '\\t'"),
        ("bell\x07", "control character '\\x07'"),
        ("x" * 101, "at most 100 characters, got 101"),
        ("..", "must end in a folder name"),
    ],
    ids=lambda value: repr(value)[:20],
)
def test_cli_new_run_name_rejected(tmp_path, capsys, name, expected):
    code, stderr = run_cli(["train", "--run-dir", str(tmp_path / "runs" / name)], capsys)
    assert code == 2, stderr
    assert expected in stderr
    assert "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["my run", "x" * 100, "rün", "-dash", ".dot"], ids=lambda value: value[:12])
def test_cli_new_run_name_allowed(tmp_path, capsys, name):
    # The name passes; the zero epochs then stop the command before any folder exists.
    code, stderr = run_cli(["train", "--run-dir", str(tmp_path / name), "--epochs", "0"], capsys)
    assert code == 2, stderr
    assert "epochs must be an integer" in stderr
    assert list(tmp_path.iterdir()) == []


def test_cli_output_outside_working_folder_allowed(tmp_path, capsys):
    # --output is the shell user's own path: ../ and absolute paths pass the name check.
    output = tmp_path / "sub" / ".." / "digits.png"
    code, stderr = run_cli(
        ["generate", "--generator", str(tmp_path / "g.keras"), "--output", str(output)], capsys
    )
    assert code == 2
    assert "g.keras not found" in stderr


# Downloads contain what the page shows ----------------------------------------------------------------------


class Media:
    """The bytes, deferred callables and download file names that the pages register."""

    def __init__(self):
        self.by_url: dict[str, bytes] = {}
        self.deferred: dict[str, object] = {}
        self.file_names: dict[str, str | None] = {}

    def file_name(self, button) -> str | None:
        return self.file_names.get(button.proto.deferred_file_id or button.proto.url)


@pytest.fixture
def captured_media(monkeypatch):
    media = Media()
    add, add_deferred = MediaFileManager.add, MediaFileManager.add_deferred

    def recording_add(self, *args, **kwargs):
        bound = inspect.signature(add).bind(self, *args, **kwargs)
        url = add(self, *args, **kwargs)
        if isinstance(bound.arguments["path_or_data"], bytes):
            media.by_url[url] = bound.arguments["path_or_data"]
        media.file_names[url] = bound.arguments.get("file_name")
        return url

    def recording_add_deferred(self, *args, **kwargs):
        bound = inspect.signature(add_deferred).bind(self, *args, **kwargs)
        file_id = add_deferred(self, *args, **kwargs)
        media.deferred[file_id] = list(bound.arguments.values())[1]  # the callable after self
        media.file_names[file_id] = bound.arguments.get("file_name")
        return file_id

    monkeypatch.setattr(MediaFileManager, "add", recording_add)
    monkeypatch.setattr(MediaFileManager, "add_deferred", recording_add_deferred)
    return media


def decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as picture:
        return np.asarray(picture.convert("L"))


def gif_frames(data: bytes) -> list[np.ndarray]:
    frames = []
    with Image.open(io.BytesIO(data)) as picture:
        for index in range(picture.n_frames):
            picture.seek(index)
            frames.append(np.asarray(picture.convert("L")))
    return frames


def test_generate_downloads_match_shown_images(runs_dir, trained_run, captured_media):
    by_url, deferred = captured_media.by_url, captured_media.deferred
    shutil.copytree(trained_run, runs_dir / "gen")
    at = open_page("pages/generate.py", query={"seed": "5", "count": "6", "columns": "3", "steps": "4"})
    buttons = {captured_media.file_name(button): button.proto for button in at.get("download_button")}
    assert set(buttons) == {"digits.png", "digits.npz", "interpolation.png", "interpolation.gif"}
    images = list(at.image)
    shown_urls = [url for element in images for url in element.value]
    grid_shown, strip_shown, gif_shown = (by_url[url] for url in shown_urls[:3])

    # The grid: the download at scale 1, shown enlarged with nearest neighbours.
    grid = decode(by_url[buttons["digits.png"].url])
    shown_grid = decode(grid_shown)
    scale = shown_grid.shape[1] // grid.shape[1]
    assert shown_grid.shape == (grid.shape[0] * scale, grid.shape[1] * scale)
    np.testing.assert_array_equal(shown_grid[::scale, ::scale], grid)

    # The .npz: only the shown digits and their seeds.
    archive_bytes = deferred[buttons["digits.npz"].deferred_file_id]()
    with zipfile.ZipFile(io.BytesIO(archive_bytes)) as archive:
        assert sorted(archive.namelist()) == ["images.npy", "seeds.npy"]
    with np.load(io.BytesIO(archive_bytes), allow_pickle=False) as arrays:
        assert arrays["images"].shape == (6, 28, 28)
        assert arrays["images"].dtype == np.uint8
        np.testing.assert_array_equal(arrays["seeds"], [5, 6, 7, 8, 9, 10])
        np.testing.assert_array_equal(grid_image(arrays["images"], 3), grid)
    assert str(runs_dir).encode() not in archive_bytes

    # The strip and its animation.
    strip = decode(by_url[buttons["interpolation.png"].url])
    shown_strip = decode(strip_shown)
    scale = shown_strip.shape[1] // strip.shape[1]
    np.testing.assert_array_equal(shown_strip[::scale, ::scale], strip)
    gif = by_url[buttons["interpolation.gif"].url]
    assert gif == gif_shown
    frames = gif_frames(gif)
    tiles = [strip[2:30, 2 + 30 * index : 30 + 30 * index] for index in range(4)]
    assert len(frames) == 6  # forth and back: 0 1 2 3 2 1
    for frame, index in zip(frames, [0, 1, 2, 3, 2, 1], strict=True):
        np.testing.assert_array_equal(frame[::4, ::4], tiles[index])
