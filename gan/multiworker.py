"""Training on several machines: the strategy of a ``multi_worker`` run and the collectives that
keep its workers at the same step.

Every worker runs the same trainer. Worker 0 of ``TF_CONFIG`` is the chief:
it alone writes the run folder. The other workers compute the same steps on
their share of each batch and take part in every collective operation:
gradient sums, checkpoint writes, and the small all-reduces of ``WorkerSync``.
A collective waits until every worker has joined it, so all workers must
call them in the same order. A worker that skipped one would hang the others.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from gan.cluster import Cluster

log = logging.getLogger(__name__)


class WorkerLostError(RuntimeError):
    """A collective operation failed because another worker of the cluster stopped or became unreachable."""


def lost_worker_error(error: Exception) -> WorkerLostError | None:
    """Return a WorkerLostError with the way out for TensorFlow's error of a failed collective, else None."""
    if not isinstance(error, (tf.errors.UnavailableError, tf.errors.CancelledError, tf.errors.AbortedError)):
        return None
    lines = str(error).strip().splitlines()
    reason = next((line for line in lines if "aborted" in line.lower()), lines[0] if lines else "")
    return WorkerLostError(
        f"another worker of this multi_worker run stopped or became unreachable, so this worker stops too "
        f"(TensorFlow: {reason.strip()}). Once every worker can run again, start all of them with --resume; "
        "the run continues from its newest complete checkpoint."
    )


def create_strategy(cluster: Cluster) -> tf.distribute.MultiWorkerMirroredStrategy:
    """Start this worker's collective ops and wait until every worker of ``cluster`` has connected.

    Call it before anything initialises TensorFlow's runtime (listing logical
    devices, creating a tensor): TensorFlow configures collective ops only at
    program start. The wait has no time limit.
    """
    log.info(
        "%s: waiting for all %d workers (%s) to connect; until they have, TensorFlow blocks this "
        "process and only SIGKILL ends it",
        cluster.describe(),
        cluster.num_workers,
        ", ".join(cluster.workers),
    )
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    log.info("%s: all %d workers connected", cluster.describe(), cluster.num_workers)
    return strategy


class WorkerSync:
    """Small all-reduces over the workers of a multi-worker run, so that all take the same decisions.

    Each method is a collective operation: every worker must call it at the
    same point of training, and the call returns once all have.
    """

    def __init__(self, strategy: tf.distribute.MultiWorkerMirroredStrategy, cluster: Cluster):
        self.cluster = cluster
        local_replicas = len(strategy.extended.worker_devices)

        @tf.function
        def sum_over_workers(values: tf.Tensor) -> tf.Tensor:
            def contribution() -> tf.Tensor:
                replica_id = tf.distribute.get_replica_context().replica_id_in_sync_group
                # Only the first replica of each worker contributes, so each worker counts once.
                first_on_worker = tf.equal(replica_id % local_replicas, 0)
                return tf.where(first_on_worker, values, tf.zeros_like(values))

            return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(contribution), axis=None)

        self._sum_over_workers = sum_over_workers

    def any(self, flags: Sequence[bool]) -> list[bool]:
        """Return, for each position, whether that flag is set on at least one worker."""
        totals = self._sum_over_workers(tf.constant([float(flag) for flag in flags], tf.float64))
        return [bool(total > 0) for total in totals.numpy()]

    def gather(self, values: Sequence[float]) -> np.ndarray:
        """Return the ``values`` of every worker as the rows of an array, in worker order."""
        rows = np.zeros((self.cluster.num_workers, len(values)), np.float64)
        rows[self.cluster.index] = values
        return self._sum_over_workers(tf.constant(rows)).numpy()

    def chief_choice(self, choice: str, choices: Sequence[str]) -> str:
        """Return the chief's ``choice``, one of ``choices``, on every worker."""
        rows = self.gather([choices.index(choice)])
        return choices[int(rows[0][0])]
