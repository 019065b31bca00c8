"""Measure what the run folder costs: the trainer against a bare ``model.fit`` on the same data.

Both sides train the same DCGAN configuration on the same MNIST digits in this
one process, after a warm-up epoch each, and the script prints images per
second for each and their ratio. The trainer side pays for metrics.csv rows,
status.json heartbeats, checkpoints, sample grids and one ``fit`` call per
epoch. A ratio near 1.0 means that this bookkeeping is cheap.

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


def bare_fit(config: TrainConfig, images, labels) -> float:
    """Return images per second of plain model.fit over the timed epochs (after one warm-up epoch)."""
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
    datasets = [
        data.make_dataset(images, labels, batch_size=config.batch_size, seed=config.seed, epoch=epoch)
        for epoch in range(config.epochs + 1)
    ]
    gan.fit(datasets[0], epochs=1, verbose=0, shuffle=False)  # warm-up: tracing
    started = time.perf_counter()
    for dataset in datasets[1:]:
        gan.fit(dataset, epochs=1, verbose=0, shuffle=False)
    return config.epochs * len(images) / (time.perf_counter() - started)


def trainer(config: TrainConfig, root: Path) -> float:
    """Return images per second of gan.train over all epochs after the first.

    The time runs from the first epoch's row in epochs.csv to the last one's,
    so it includes the sample grids, checkpoints and exports in between.
    """
    import pandas as pd

    run_dir = runs.create_run(root / "trainer", config)
    train(run_dir)
    epochs = pd.read_csv(run_dir / runs.EPOCHS_FILE)
    seconds = epochs["wall_time"].iloc[-1] - epochs["wall_time"].iloc[0]
    return (len(epochs) - 1) * config.max_images / seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs on each side (default 3)")
    parser.add_argument("--max-images", type=int, default=10_000, help="training images (default 10000)")
    parser.add_argument("--width", type=int, default=64, help="model width (default 64)")
    args = parser.parse_args()
    logging.getLogger("gan").setLevel(logging.WARNING)

    config = TrainConfig(max_images=args.max_images, width=args.width, epochs=args.epochs + 1)
    dataset = data.load_images(config.data, max_images=config.max_images)
    reference = bare_fit(
        TrainConfig(**{**config.to_dict(), "epochs": args.epochs}), dataset.images, dataset.labels
    )
    with tempfile.TemporaryDirectory() as root:
        measured = trainer(config, Path(root))
    print(f"bare model.fit:   {reference:8.1f} images/s")
    print(f"gan.train:        {measured:8.1f} images/s")
    print(f"ratio train/fit:  {measured / reference:8.3f}")


if __name__ == "__main__":
    main()
