"""Measure what the run folder costs: the trainer against a bare ``model.fit`` on the same data.

Both sides train the same DCGAN configuration on the same MNIST digits for the
same number of epochs, one after the other in this process. The trainer side
also writes metrics.csv rows, status.json heartbeats, checkpoints, sample
grids and generator.keras, and calls ``fit`` once per epoch. The script prints
the CPU seconds and wall seconds of each side and their ratios. CPU time is
the steadier measure on a shared machine, because other processes stretch
wall time but not this process's CPU time. A ratio near 1.0 means that the
bookkeeping is cheap.

    GAN_MNIST_PATH=../shared/data/mnist/mnist.npz python bench/train_overhead.py --epochs 3
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402

from gan import data, runs  # noqa: E402
from gan.config import TrainConfig  # noqa: E402
from gan.model import build_gan  # noqa: E402
from gan.train import train  # noqa: E402


def bare_fit(config: TrainConfig, images, labels) -> tuple[float, float]:
    """Return (CPU seconds, wall seconds) of plain model.fit, one call per epoch, no callbacks."""
    started_cpu, started_wall = time.process_time(), time.perf_counter()
    keras.utils.set_random_seed(config.seed)
    gan = build_gan(
        config.latent_dim,
        config.width,
        None,
        config.seed,
        config.generator_lr,
        config.discriminator_lr,
        config.beta_1,
        config.beta_2,
    )
    for epoch in range(config.epochs):
        dataset = data.make_dataset(
            images, labels, batch_size=config.batch_size, seed=config.seed, epoch=epoch
        )
        gan.fit(dataset, epochs=1, verbose=0, shuffle=False)
    return time.process_time() - started_cpu, time.perf_counter() - started_wall


def trainer(config: TrainConfig, root: Path) -> tuple[float, float]:
    """Return (CPU seconds, wall seconds) of gan.train on a new run folder, data loading excluded."""
    run_dir = runs.create_run(root / "trainer", config)
    started_cpu, started_wall = time.process_time(), time.perf_counter()
    train(run_dir)
    return time.process_time() - started_cpu, time.perf_counter() - started_wall


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=3, help="epochs on each side (default 3)")
    parser.add_argument("--max-images", type=int, default=10_000, help="training images (default 10000)")
    parser.add_argument("--width", type=int, default=64, help="model width (default 64)")
    args = parser.parse_args()
    logging.getLogger("gan").setLevel(logging.WARNING)

    config = TrainConfig(max_images=args.max_images, width=args.width, epochs=args.epochs)
    dataset = data.load_images(config.data, max_images=config.max_images)
    # Warm up TensorFlow's kernels and thread pools outside both measurements.
    bare_fit(
        TrainConfig(**{**config.to_dict(), "epochs": 1, "max_images": 512}), dataset.images, dataset.labels
    )

    reference_cpu, reference_wall = bare_fit(config, dataset.images, dataset.labels)
    with tempfile.TemporaryDirectory() as root:
        trainer_cpu, trainer_wall = trainer(config, Path(root))
    images = config.epochs * len(dataset.images)
    print(f"{config.epochs} epochs of {len(dataset.images)} images, width {config.width}")
    for name, cpu, wall in (
        ("bare model.fit", reference_cpu, reference_wall),
        ("gan.train", trainer_cpu, trainer_wall),
    ):
        print(f"{name:15} {cpu:8.1f} CPU s {wall:8.1f} s {images / wall:8.0f} images/s")
    print(f"ratio train/fit: CPU {trainer_cpu / reference_cpu:.3f}, wall {trainer_wall / reference_wall:.3f}")


if __name__ == "__main__":
    main()
