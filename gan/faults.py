"""Fault points: named places in the trainer where a test can kill it with SIGKILL.

The crash tests set ``GAN_FAULT=POINT:N`` in a trainer's environment, and the
process sends itself SIGKILL the N-th time it passes a point that matches
POINT (a shell-style pattern). SIGKILL cannot be caught, so the process dies
exactly there, as it would in a power cut or an out-of-memory kill, leaving
whatever was half written. Without the variable every point is a no-op.

The points:

- ``start``: the lock is held, nothing is loaded yet.
- ``step:N``: after step N of the run, its metrics row and any checkpoint.
- ``epoch_end``: after an epoch's history, sample, checkpoint and generator.
- ``write:NAME``: an atomic write of file NAME has its temporary file
  complete on disk and is about to rename it (``write:ckpt-*.json`` is a
  checkpoint's completion marker, ``write:epoch_*.png`` a sample grid).
- ``append:NAME``: half of the rows appended to NAME are on disk.
- ``checkpoint_files``: TensorFlow has written a checkpoint's files and its
  marker is not written yet.
- ``export``: generator.keras (or generator_best.keras) is saved to its
  temporary file, not renamed.

A second variable makes a trainer in another process see a diverged loss:
with ``GAN_NAN_LOSS_STEP=N`` the trainer reads the losses of step N and of
every later step as NaN, and so stops as ``diverged`` after step N-1.
"""

from __future__ import annotations

import fnmatch
import os
import signal
from collections import Counter

FAULT_VARIABLE = "GAN_FAULT"
NAN_LOSS_VARIABLE = "GAN_NAN_LOSS_STEP"

_passes: Counter[str] = Counter()


def armed() -> bool:
    """Tell whether a fault is set, so callers can skip work that only a fault needs."""
    return bool(os.environ.get(FAULT_VARIABLE))


def point(name: str) -> None:
    """Pass the fault point ``name``; SIGKILL this process if ``$GAN_FAULT`` selects this pass."""
    spec = os.environ.get(FAULT_VARIABLE)
    if not spec:
        return
    pattern, _, count = spec.rpartition(":")
    if not pattern or not fnmatch.fnmatchcase(name, pattern):
        return
    _passes[pattern] += 1
    if _passes[pattern] == int(count):
        os.kill(os.getpid(), signal.SIGKILL)


def nan_loss(step: int) -> bool:
    """Tell whether ``$GAN_NAN_LOSS_STEP`` makes the losses of run step ``step`` read as NaN."""
    first = os.environ.get(NAN_LOSS_VARIABLE)
    return bool(first) and step >= int(first)
