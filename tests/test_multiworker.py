"""Multi-worker training in real processes: two ``python -m gan train --strategy multi_worker``
workers on 127.0.0.1, each with its own TF_CONFIG, training one small run together.

Worker 0 is the chief and the only writer of the run folder. Worker 1 gets its
own TMPDIR, where it writes the checkpoints that it must take part in and
deletes them again.
"""

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_pages import messages, open_page, run_folders, runs_dir, submit_train_form
from test_processes import Processes, make_env, read_rows, train_flags, wait_until

from gan import runs
from gan.checkpoints import list_checkpoints
from gan.cluster import ClusterConfigError, read_cluster

__all__ = ["runs_dir"]  # a fixture shared with the page tests

# 289 digits in global batches of 32: 9 full steps per epoch, and a partial last batch of one
# image, which a two-replica split would leave one replica without. Multi-worker runs drop it.
RUN = {
    "strategy": "multi_worker",
    "max_images": 289,
    "epochs": 1,
    "batch_size": 32,
    "width": 8,
    "latent_dim": 16,
    "sample_count": 16,
    "log_every_steps": 2,
    "checkpoint_every_steps": 4,
    "checkpoints_kept": 3,
    "eval_every_epochs": 0,
    "precision": "float32",
}
STEPS_PER_EPOCH = 9
METRIC_NAMES = ("d_loss", "g_loss", "d_real", "d_fake")

STOPPED_LINE = re.compile(r"stopped at epoch (\d+), step (\d+)")
RESUMED_LINE = re.compile(r"resumed from ckpt-(\d+): epoch (\d+), step (\d+)")


def free_ports(count: int) -> list[int]:
    """Return ``count`` ports that were free on 127.0.0.1 a moment ago."""
    ports = []
    for _ in range(count):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    return ports


def tf_config(ports: list[int], index: int) -> str:
    workers = [f"127.0.0.1:{port}" for port in ports]
    return json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})


@dataclass
class Worker:
    manager: Processes
    process: subprocess.Popen
    tmp_dir: Path

    @property
    def output(self) -> str:
        return self.manager.output(self.process)


def start_workers(mnist_path: Path, work_dir: Path, args: list, name: str) -> list[Worker]:
    """Start worker 1, then worker 0, each with its own TF_CONFIG and TMPDIR."""
    ports = free_ports(2)
    workers = {}
    for index in (1, 0):
        tmp_dir = work_dir / f"{name}-worker{index}-tmp"
        tmp_dir.mkdir()
        env = make_env(mnist_path, work_dir / "runs")
        env.update(TF_CONFIG=tf_config(ports, index), TMPDIR=str(tmp_dir))
        manager = Processes(env, work_dir)
        process = manager.start("train", *args, name=f"{name}-worker{index}")
        workers[index] = Worker(manager, process, tmp_dir)
    return [workers[0], workers[1]]


def wait_for_workers(workers: list[Worker]) -> list[int]:
    try:
        return [worker.manager.wait(worker.process) for worker in workers]
    finally:
        for worker in workers:
            worker.manager.kill_leftovers()


def wait_for_line(worker: Worker, text: str) -> None:
    wait_until(lambda: text in worker.output, f"{text!r} in the worker's output", worker.process)


def run_files(run_dir: Path) -> set[str]:
    return {str(path.relative_to(run_dir)) for path in run_dir.rglob("*") if path.is_file()}


def epoch_line(output: str) -> str:
    lines = [
        line for line in output.splitlines() if "epoch 1/1: d_loss" in line or "epoch 1/2: d_loss" in line
    ]
    assert len(lines) == 1, output[-3000:]
    return lines[0].split("gan.train: ", 1)[1]


@pytest.fixture(scope="module")
def one_epoch_run(mnist_path, tmp_path_factory):
    """A RUN trained for its one epoch by two workers; returns the run folder and both workers."""
    work_dir = tmp_path_factory.mktemp("multiworker")
    run_dir = work_dir / "run"
    workers = start_workers(mnist_path, work_dir, ["--run-dir", run_dir, *train_flags(RUN)], "first")
    codes = wait_for_workers(workers)
    return run_dir, workers, codes


# One epoch together -------------------------------------------------------------------------


@pytest.mark.slow
def test_two_workers_finish_one_epoch(one_epoch_run):
    run_dir, (chief, worker), codes = one_epoch_run
    assert codes[0] == 0, chief.output[-3000:]
    assert codes[1] == 0, worker.output[-3000:]
    assert chief.output.rstrip().endswith(f"{run_dir}: finished")
    assert worker.output.rstrip().endswith(f"{run_dir}: finished")

    status = runs.read_status(run_dir)
    assert status["state"] == "finished"
    assert status["epoch"] == 1
    assert status["steps_per_epoch"] == STEPS_PER_EPOCH
    assert status["step"] == status["total_steps"] == STEPS_PER_EPOCH
    assert [int(row["step"]) for row in read_rows(run_dir / runs.METRICS_FILE)] == [2, 4, 6, 8]
    epochs = read_rows(run_dir / runs.EPOCHS_FILE)
    assert [(row["epoch"], row["step"]) for row in epochs] == [("1", str(STEPS_PER_EPOCH))]
    assert [info.step for info in list_checkpoints(run_dir / runs.CHECKPOINTS_DIR)] == [4, 8, 9]
    assert (run_dir / runs.GENERATOR_FILE).is_file()

    # Both workers trained the same steps on the same global batches and logged the same means.
    for output in (chief.output, worker.output):
        assert f"289 images of 28x28, {STEPS_PER_EPOCH} steps per epoch" in output
        assert "trains on 288 of the 289 images" in output
    assert epoch_line(chief.output).split(", ")[:4] == epoch_line(worker.output).split(", ")[:4]


@pytest.mark.slow
def test_only_chief_writes_run_folder(one_epoch_run):
    run_dir, (chief, worker), _ = one_epoch_run
    checkpoint_files = {
        f"{runs.CHECKPOINTS_DIR}/ckpt-{step}.{suffix}"
        for step in (4, 8, 9)
        for suffix in ("index", "data-00000-of-00001", "json")
    }
    assert run_files(run_dir) == {
        runs.CONFIG_FILE,
        runs.STATUS_FILE,
        runs.METRICS_FILE,
        runs.EPOCHS_FILE,
        runs.GENERATOR_FILE,
        runs.LOG_FILE,
        runs.LOCK_FILE,
        f"{runs.SAMPLES_DIR}/epoch_0000.png",
        f"{runs.SAMPLES_DIR}/epoch_0001.png",
        *checkpoint_files,
    }
    assert runs.read_status(run_dir)["pid"] == chief.process.pid
    assert (run_dir / runs.LOCK_FILE).read_text().strip() == str(chief.process.pid)
    log = (run_dir / runs.LOG_FILE).read_text()
    assert "worker 0 of 2" in log
    assert "worker 1 of 2" not in log

    # Worker 1 took part in every checkpoint write in its own TMPDIR and deleted each copy.
    assert worker.output.count("(the chief keeps it; this worker's copy is deleted)") == 3
    assert list(worker.tmp_dir.iterdir()) == []
    assert "waiting up to 300 s for worker 0 to create" in worker.output


# Resume and stop ----------------------------------------------------------------------------


@pytest.mark.slow
def test_resume_mid_epoch_worker_stop(one_epoch_run, mnist_path, tmp_path):
    first_run, _, _ = one_epoch_run
    uninterrupted = read_rows(first_run / runs.EPOCHS_FILE)[0]
    run_dir = tmp_path / "run"
    shutil.copytree(first_run, run_dir)
    # The state of a run whose trainers died after the step-8 checkpoint: ckpt-9 never completed.
    for path in (run_dir / runs.CHECKPOINTS_DIR).glob("ckpt-9.*"):
        path.unlink()
    config = json.loads((run_dir / runs.CONFIG_FILE).read_text())
    runs.write_atomic(run_dir / runs.CONFIG_FILE, json.dumps({**config, "epochs": 2}))

    chief, worker = start_workers(mnist_path, tmp_path, ["--run-dir", run_dir, "--resume"], "resume")
    try:
        # Between this line and the end of the first step, the stop reaches the step's agreement.
        wait_for_line(worker, "training epoch 1/2 from step 8")
        worker.process.send_signal(signal.SIGTERM)
    finally:
        codes = wait_for_workers([chief, worker])

    assert codes == [0, 0], chief.output[-3000:] + worker.output[-3000:]
    for output in (chief.output, worker.output):
        assert RESUMED_LINE.search(output).groups() == ("8", "0", "8")
        assert STOPPED_LINE.search(output).groups() == ("1", "9")
    assert "received signal 15" in worker.output
    assert "another worker received a stop signal" in chief.output

    status = runs.read_status(run_dir)
    assert status["state"] == "stopped"
    assert status["pid"] == chief.process.pid
    assert status["step"] == STEPS_PER_EPOCH
    assert list_checkpoints(run_dir / runs.CHECKPOINTS_DIR)[-1].step == STEPS_PER_EPOCH
    # The resumed epoch's means include the 8 steps before the resume, as in the uninterrupted run.
    resumed = read_rows(run_dir / runs.EPOCHS_FILE)
    assert [row["epoch"] for row in resumed] == ["1"]
    for name in METRIC_NAMES:
        assert float(resumed[0][name]) == pytest.approx(float(uninterrupted[name]), rel=1e-4), name
    assert list(worker.tmp_dir.iterdir()) == []


# Invalid TF_CONFIG --------------------------------------------------------------------------

TWO_WORKERS = ["127.0.0.1:20001", "127.0.0.1:20002"]

BAD_TF_CONFIGS = [
    pytest.param(None, "TF_CONFIG is not set", id="missing"),
    pytest.param('{"cluster": {"worker": [', "TF_CONFIG is not valid JSON", id="unparsable"),
    pytest.param(
        json.dumps({"cluster": {}, "task": {"type": "worker", "index": 0}}),
        'cluster.worker must be a non-empty list of "host:port" strings',
        id="no-worker-list",
    ),
    pytest.param(
        json.dumps({"cluster": {"worker": TWO_WORKERS}, "task": {"type": "worker", "index": 2}}),
        "task.index 2 is out of range: cluster.worker lists 2 worker(s), so the index must be from 0 to 1",
        id="index-out-of-range",
    ),
]


def cli_env(mnist_path: Path, tmp_path: Path, tf_config_value: str | None) -> dict[str, str]:
    env = make_env(mnist_path, tmp_path / "runs")
    env.pop("TF_CONFIG", None)
    if tf_config_value is not None:
        env["TF_CONFIG"] = tf_config_value
    return env


def run_cli(env: dict[str, str], work_dir: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gan", *map(str, args)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=work_dir,
        env=env,
        timeout=90,
    )


@pytest.mark.parametrize(("value", "message"), BAD_TF_CONFIGS)
def test_bad_tf_config_new_run_exits_2(mnist_path, tmp_path, value, message):
    run_dir = tmp_path / "run"
    result = run_cli(
        cli_env(mnist_path, tmp_path, value), tmp_path, "train", "--run-dir", run_dir, *train_flags(RUN)
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert not run_dir.exists()


@pytest.mark.parametrize(("value", "message"), BAD_TF_CONFIGS)
def test_bad_tf_config_resume_writes_nothing(mnist_path, tmp_path, value, message):
    from gan.config import TrainConfig

    run_dir = runs.create_run(tmp_path / "run", TrainConfig(**RUN))
    before = run_files(run_dir)
    result = run_cli(
        cli_env(mnist_path, tmp_path, value), tmp_path, "train", "--run-dir", run_dir, "--resume"
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert run_files(run_dir) == before == {runs.CONFIG_FILE}


def test_detach_of_worker_1_rejected(mnist_path, tmp_path):
    from gan.config import TrainConfig

    run_dir = runs.create_run(tmp_path / "run", TrainConfig(**RUN))
    value = json.dumps({"cluster": {"worker": TWO_WORKERS}, "task": {"type": "worker", "index": 1}})
    result = run_cli(
        cli_env(mnist_path, tmp_path, value), tmp_path, "train", "--run-dir", run_dir, "--detach"
    )
    assert result.returncode == 2, result.stderr
    assert "a detached start runs only the chief (worker 0)" in result.stderr
    assert run_files(run_dir) == {runs.CONFIG_FILE}


def test_train_bad_tf_config_writes_nothing(tmp_path, monkeypatch):
    from gan.config import TrainConfig
    from gan.train import train

    run_dir = runs.create_run(tmp_path / "run", TrainConfig(**RUN))
    monkeypatch.setenv("TF_CONFIG", "[]")
    with pytest.raises(ClusterConfigError, match=r"TF_CONFIG must be a JSON object such as .*, got \[\]"):
        train(run_dir)
    assert run_files(run_dir) == {runs.CONFIG_FILE}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "TF_CONFIG is not set"),
        (
            json.dumps({"cluster": {"worker": TWO_WORKERS}, "task": {"type": "worker", "index": 1}}),
            "a detached start runs only the chief (worker 0)",
        ),
    ],
)
def test_train_page_checks_tf_config(runs_dir, monkeypatch, value, message):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    if value is not None:
        monkeypatch.setenv("TF_CONFIG", value)
    at = open_page("pages/train.py")
    at.selectbox(key="train_strategy").set_value("multi_worker")
    submit_train_form(at, "cluster")

    assert any(message in text for text in messages(at, "error")), messages(at, "error")
    assert run_folders(runs_dir) == []


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("  ", "TF_CONFIG is empty ('  ')"),
        ("", "TF_CONFIG is empty ('')"),
        ('{"cluster": {"worker": ["a:1"], "ps": ["b:2"]}}', "cluster has the job(s) 'ps'"),
        ('{"cluster": {"worker": ["a:1", "a"]}}', 'cluster.worker[1] must be "host:port"'),
        ('{"cluster": {"worker": ["a:1", "a:70000"]}}', "with a port from 1 to 65535, got 'a:70000'"),
        ('{"cluster": {"worker": ["a:1", "a:1"]}}', "lists a:1 more than once"),
        ('{"cluster": {"worker": ["a:1"]}}', 'has no "task" object'),
        (
            '{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}',
            'task.type must be "worker"',
        ),
        (
            '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": "0"}}',
            "task.index must be an integer",
        ),
        (
            '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": -1}}',
            "task.index -1 is out of range",
        ),
    ],
)
def test_read_cluster_rejects(value, message):
    with pytest.raises(ClusterConfigError) as caught:
        read_cluster({"TF_CONFIG": value})
    assert message in str(caught.value)


def test_read_cluster_worker_roles():
    value = {"cluster": {"worker": ["[::1]:2222", "10.0.0.2:2222"]}, "task": {"type": "worker", "index": 1}}
    cluster = read_cluster({"TF_CONFIG": json.dumps({**value, "rpc_layer": "grpc"})})
    assert cluster.workers == ("[::1]:2222", "10.0.0.2:2222")
    assert cluster.index == 1
    assert not cluster.is_chief
    assert cluster.describe() == "worker 1 of 2 (10.0.0.2:2222, not the chief)"
    assert read_cluster({"TF_CONFIG": json.dumps({**value, "task": {"type": "worker", "index": 0}})}).is_chief
