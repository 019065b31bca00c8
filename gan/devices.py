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


# CPU flags of native bfloat16 arithmetic, as Linux lists them in /proc/cpuinfo.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> frozenset[str]:
    """Return the feature flags of the first CPU in ``cpuinfo``; empty where the file is missing."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as file:
            for line in file:
                key, _, value = line.partition(":")
                if key.strip() == "flags":
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def auto_precision(gpus: tuple[str, ...] | list[str], flags: frozenset[str]) -> str:
    """Return the Keras dtype policy that ``precision="auto"`` stands for on this machine.

    mixed_bfloat16 needs a CPU that computes in bf16 natively; without such
    instructions oneDNN emulates it and training gets slower. With a GPU the
    choice is float32: mixed_float16 is usually faster there, but its sample
    quality has not been measured for this model, so it stays a choice.
    """
    if not gpus and any(flag in flags for flag in BF16_CPU_FLAGS):
        return "mixed_bfloat16"
    return "float32"
