"""The accelerators TensorFlow can see, queried once per process."""

from __future__ import annotations

import functools
import os


@functools.cache
def visible_gpus() -> tuple[str, ...]:
    """Return the names of the GPUs visible to TensorFlow; empty means training runs on the CPU.

    The first call imports TensorFlow, which takes seconds. Later calls
    return the cached tuple.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tuple(device.name for device in tf.config.list_physical_devices("GPU"))
