"""Profile the training step of the default DCGAN: which TensorFlow kernels take the time, per precision.

It builds ``gan.model``'s DCGAN with the TrainConfig defaults (width 64,
batch 64, Adam 2e-4 with beta_1 0.5), trains a few warm-up steps with
``DCGAN.fit``, then records ``--steps`` more steps with TensorFlow's profiler
(``tf.profiler.experimental``) for every precision given. It reads the
profile's XSpace file with the protobuf classes that TensorFlow ships and
lists, per precision, the kernels with the most time per step.

Kernels of one step run at the same time on TensorFlow's inter-op threads,
and the profiler adds its own cost, so the per-kernel times add up to more
than a step. They rank the kernels; the benchmarks in bench/train_speed.py
measure the speed.

The report gives GFLOP/s for the kernels of the transposed and plain
convolutions and the dense layers of ``gan.model``, whose FLOPs follow from
their shapes. A forward pass, the gradient of its input and the gradient of
its weights each cost the forward FLOPs of the layer.

    GAN_MNIST_PATH=/path/to/mnist.npz python bench/step_profile.py
    GAN_MNIST_PATH=/path/to/mnist.npz python bench/step_profile.py --precision float32 --top 10

Exit status: 0 when the profile ran, 1 when it failed, 2 for invalid options.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from train_speed import build_default_dcgan, positive_integer  # noqa: E402

PRECISIONS = ("mixed_bfloat16", "float32")
WARM_UP_STEPS = 10


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        action="append",
        help="Keras dtype policy to profile; repeat it for several (default: both)",
    )
    parser.add_argument("--steps", type=positive_integer, default=30, help="profiled steps (default 30)")
    parser.add_argument("--top", type=positive_integer, default=15, help="kernels listed (default 15)")
    return parser


def layer_flops(gan) -> dict[str, int]:
    """Return the forward FLOPs per image of each Dense, Conv2D and Conv2DTranspose layer, by layer name."""
    from keras import layers

    flops = {}
    for network in (gan.generator, gan.discriminator):
        for layer in network.layers:
            if isinstance(layer, layers.Dense):
                flops[layer.name] = 2 * layer.kernel.shape[0] * layer.kernel.shape[1]
            elif isinstance(layer, layers.Conv2DTranspose):
                # Every input pixel meets every kernel tap once.
                height, width, channels = layer.input.shape[1:]
                flops[layer.name] = (
                    2 * height * width * channels * int(layer.kernel.shape[0]) ** 2 * layer.filters
                )
            elif isinstance(layer, layers.Conv2D):
                height, width = layer.output.shape[1:3]
                kernel = layer.kernel.shape
                flops[layer.name] = 2 * height * width * kernel[0] * kernel[1] * kernel[2] * kernel[3]
    return flops


def kernel_times(logdir: str) -> collections.Counter:
    """Sum the durations of the profile's TensorFlow kernel events, in seconds, by event name."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    paths = sorted(Path(logdir).rglob("*.xplane.pb"))
    if not paths:
        raise RuntimeError(f"the profiler wrote no .xplane.pb file under {logdir}")
    space = xplane_pb2.XSpace()
    space.ParseFromString(paths[-1].read_bytes())
    totals: collections.Counter = collections.Counter()
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                # Kernels are named "op path:OpType"; the rest are executor and Python events.
                if ":" in name and "/" in name:
                    totals[name] += event.duration_ps / 1e12
    return totals


def profile(precision: str, steps: int, top: int) -> None:
    import tensorflow as tf

    from gan import data
    from gan.config import TrainConfig

    defaults = TrainConfig()
    gan = build_default_dcgan(precision)
    images = data.load_images(defaults.data, split="train").images
    batch = defaults.batch_size
    warm_up = data.make_dataset(images[: WARM_UP_STEPS * batch], None, batch_size=batch, seed=0, epoch=0)
    gan.fit(warm_up, epochs=1, verbose=0)
    profiled = data.make_dataset(images[: steps * batch], None, batch_size=batch, seed=0, epoch=1)
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        gan.fit(profiled, epochs=1, verbose=0)
        tf.profiler.experimental.stop()
        totals = kernel_times(logdir)

    flops = layer_flops(gan)
    print(f"## {precision}, batch {batch}, {steps} profiled steps")
    print()
    print("| kernel | ms per step | GFLOP/s |")
    print("| --- | --- | --- |")
    for name, seconds in totals.most_common(top):
        per_step = seconds / steps
        layer = next((part for part in re.split(r"[/:]", name) if part.rsplit("_", 1)[0] in flops), None)
        rate = ""
        if layer is not None and re.search(r"Conv2D|MatMul", name):
            rate = f"{flops[layer.rsplit('_', 1)[0]] * batch / per_step / 1e9:.0f}"
        print(f"| `{name}` | {1000 * per_step:.1f} | {rate} |")
    print(f"\nall kernels: {1000 * sum(totals.values()) / steps:.1f} ms per step (overlapping)")
    print()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        for precision in args.precision or PRECISIONS:
            profile(precision, args.steps, args.top)
    except (OSError, RuntimeError, ValueError) as error:
        print(f"step_profile: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
