"""The cluster of a ``multi_worker`` run, read from ``TF_CONFIG`` without importing TensorFlow.

``tf.distribute.MultiWorkerMirroredStrategy`` reads the same variable. The
CLI, the launcher and the trainer call ``read_cluster`` before they write
anything, so that a missing or invalid ``TF_CONFIG`` is reported with its fix
and leaves the run folder as it was.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass

from gan.config import ConfigError
from gan.errors import InputError, format_value

TF_CONFIG_ENV = "TF_CONFIG"
CHIEF_INDEX = 0
JOB_NAME = "worker"
EXAMPLE = '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'
# Keys that TensorFlow accepts in TF_CONFIG besides cluster and task; they are passed through unchecked.
OTHER_KEYS = ("environment", "rpc_layer")


class ClusterConfigError(InputError):
    """A TF_CONFIG that is missing or does not describe a cluster of workers."""


@dataclass(frozen=True)
class Cluster:
    """The workers that TF_CONFIG lists and the place of this process among them."""

    workers: tuple[str, ...]  # "host:port" of every worker, in TF_CONFIG order
    index: int  # this process's task index in ``workers``

    @property
    def is_chief(self) -> bool:
        return self.index == CHIEF_INDEX

    @property
    def num_workers(self) -> int:
        return len(self.workers)

    @property
    def address(self) -> str:
        return self.workers[self.index]

    def describe(self) -> str:
        role = "the chief" if self.is_chief else "not the chief"
        return f"worker {self.index} of {self.num_workers} ({self.address}, {role})"


def read_cluster(environ: Mapping[str, str] | None = None) -> Cluster:
    """Parse and check ``TF_CONFIG``; raise ClusterConfigError naming the bad value and the fix.

    Only ``worker`` tasks are accepted, and worker 0 is the chief: the one
    process that writes the run folder.
    """
    environ = os.environ if environ is None else environ
    text = environ.get(TF_CONFIG_ENV)
    if text is None or not text.strip():
        state = "is not set" if text is None else f"is empty ({text!r})"
        raise ClusterConfigError(
            f"{TF_CONFIG_ENV} {state}, but strategy multi_worker reads the cluster from it. Set it in "
            f"the environment of each worker, for example {TF_CONFIG_ENV}='{EXAMPLE}' on worker 0 and "
            'the same with "index": 1 on worker 1.'
        )
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ClusterConfigError(
            f"{TF_CONFIG_ENV} is not valid JSON ({error.msg} at character {error.pos}): "
            f"{format_value(text)}. Write one JSON object such as {EXAMPLE}."
        ) from None
    except RecursionError:
        raise ClusterConfigError(
            f"{TF_CONFIG_ENV} is nested too deeply; write one JSON object such as {EXAMPLE}."
        ) from None
    if not isinstance(value, dict):
        raise ClusterConfigError(
            f"{TF_CONFIG_ENV} must be a JSON object such as {EXAMPLE}, got {format_value(value)}."
        )
    workers = _workers(value, text)
    return Cluster(workers=workers, index=_task_index(value, text, len(workers)))


def _workers(value: dict, text: str) -> tuple[str, ...]:
    cluster = value.get("cluster")
    if not isinstance(cluster, dict):
        raise ClusterConfigError(
            f'{TF_CONFIG_ENV} has no "cluster" object: {format_value(text)}. Add '
            '"cluster": {"worker": ["host:port", ...]} with one address per worker.'
        )
    other_jobs = sorted(name for name in cluster if name != JOB_NAME)
    if other_jobs:
        raise ClusterConfigError(
            f"{TF_CONFIG_ENV} cluster has the job(s) {', '.join(map(repr, other_jobs))}, but this trainer "
            f'runs only "worker" tasks. List every machine under cluster.worker; worker 0 is the chief.'
        )
    workers = cluster.get(JOB_NAME)
    if not isinstance(workers, list) or not workers:
        raise ClusterConfigError(
            f'{TF_CONFIG_ENV} cluster.worker must be a non-empty list of "host:port" strings, got '
            f"{format_value(workers)}. List one address per worker, for example {EXAMPLE}."
        )
    for position, address in enumerate(workers):
        if not _is_address(address):
            raise ClusterConfigError(
                f'{TF_CONFIG_ENV} cluster.worker[{position}] must be "host:port" with a port from 1 to '
                f"65535, got {format_value(address)}."
            )
    repeated = sorted({address for address in workers if workers.count(address) > 1})
    if repeated:
        raise ClusterConfigError(
            f"{TF_CONFIG_ENV} cluster.worker lists {', '.join(repeated)} more than once; "
            "give each worker its own host:port."
        )
    return tuple(workers)


def _task_index(value: dict, text: str, num_workers: int) -> int:
    task = value.get("task")
    if not isinstance(task, dict):
        raise ClusterConfigError(
            f'{TF_CONFIG_ENV} has no "task" object: {format_value(text)}. Add '
            '"task": {"type": "worker", "index": N}, where N is the position of this worker\'s address '
            "in cluster.worker."
        )
    task_type = task.get("type")
    if task_type != JOB_NAME:
        raise ClusterConfigError(
            f'{TF_CONFIG_ENV} task.type must be "worker", got {format_value(task_type)}; worker 0 '
            "is the chief."
        )
    index = task.get("index")
    if not isinstance(index, int) or isinstance(index, bool):
        raise ClusterConfigError(
            f"{TF_CONFIG_ENV} task.index must be an integer, got {format_value(index)}; give the position "
            "of this worker's address in cluster.worker, starting at 0."
        )
    if not 0 <= index < num_workers:
        raise ClusterConfigError(
            f"{TF_CONFIG_ENV} task.index {index} is out of range: cluster.worker lists {num_workers} "
            f"worker(s), so the index must be from 0 to {num_workers - 1}."
        )
    return index


def _is_address(address: object) -> bool:
    """Tell whether ``address`` is a "host:port" string; IPv6 hosts come in brackets, as in "[::1]:2222"."""
    if not isinstance(address, str):
        return False
    host, separator, port = address.rpartition(":")
    if not separator or not host.strip() or not port.isascii() or not port.isdigit():
        return False
    return 1 <= int(port) <= 65535


def require_chief_for_launch(strategy: str, environ: Mapping[str, str] | None = None) -> Cluster | None:
    """Check TF_CONFIG before a detached launch of a ``multi_worker`` run; return the cluster, else None.

    A detached launch writes status.json and sends the trainer's output to
    train.log, which only the chief may write, so it starts worker 0 only.
    Raise ClusterConfigError for an invalid TF_CONFIG or another worker index.
    """
    if strategy != "multi_worker":
        return None
    cluster = read_cluster(environ)
    if not cluster.is_chief:
        raise ClusterConfigError(
            f"{TF_CONFIG_ENV} makes this process worker {cluster.index}, but a detached start runs only "
            "the chief (worker 0), because it writes the run folder's status.json and train.log. Start "
            f"worker {cluster.index} in the foreground with `python -m gan train --run-dir RUN` (add "
            "--resume when the chief resumes)."
        )
    return cluster


def check_batch_split(batch_size: int, parts: int, parts_name: str) -> None:
    """Raise ConfigError unless the global ``batch_size`` splits into ``parts`` equal batches.

    ``parts_name`` names the parts in the message, such as "replicas of this cluster".
    """
    if batch_size % parts:
        example = max(parts, batch_size - batch_size % parts)
        raise ConfigError(
            f"batch_size {batch_size} does not split evenly over the {parts} {parts_name}. batch_size is the "
            f"global batch of each step, so choose a multiple of {parts}, such as {example}, in a new run."
        )
