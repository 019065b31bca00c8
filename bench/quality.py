"""Sample quality of the default configuration, epoch by epoch, against the real-data floor.

Trains a run of the default TrainConfig (width 64, Adam 2e-4 and beta_1 0.5,
the trainer's own quality evaluation after every epoch) on the MNIST training
digits of ``GAN_MNIST_PATH``, keeping the checkpoint of every epoch end. The
scores come from the run's epochs.csv; an epoch without them (a run trained
with the evaluation off) is scored from its checkpoint with the same
function, seed and number of digits (``gan.metrics.evaluate_generator``). An
existing run folder is resumed, and epochs already scored are not scored again.

    GAN_MNIST_PATH=/path/to/mnist.npz python bench/quality.py --run-dir runs/quality --epochs 30

It writes RUN/quality.csv (one row per epoch) and prints a table, the best
epoch by Frechet distance, and the targets for the last epoch: Frechet
distance within 3x the real-versus-real floor, every class between 6% and
14% of the digits, and mean confidence above 0.9.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

from gan import checkpoints, metrics, runs  # noqa: E402
from gan.config import TrainConfig  # noqa: E402
from gan.generate import load_generator  # noqa: E402
from gan.train import EVAL_SEED  # noqa: E402

COLUMNS = (
    "epoch",
    "step",
    "frechet_distance",
    "frechet_floor",
    "kid",
    "kid_std_error",
    "min_class_share",
    "max_class_share",
    "class_entropy_bits",
    "confidence",
    "diversity",
    "diversity_floor",
    "seconds",
)
FRECHET_RATIO_TARGET = 3.0
CLASS_SHARE_RANGE = (0.06, 0.14)
CONFIDENCE_TARGET = 0.9


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, required=True, help="run folder to create or resume")
    parser.add_argument("--epochs", type=int, default=30, help="epochs to train (default 30)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=TrainConfig.batch_size,
        help=f"images per step of a new run (default {TrainConfig.batch_size}, the TrainConfig default)",
    )
    parser.add_argument(
        "--precision",
        default=TrainConfig.precision,
        help=f"Keras dtype policy of a new run (default {TrainConfig.precision})",
    )
    parser.add_argument("--samples", type=int, default=metrics.DEFAULT_SAMPLES, help="digits per score")
    parser.add_argument("--score-only", action="store_true", help="score existing checkpoints only")
    return parser.parse_args()


def train_run(run_dir: Path, args: argparse.Namespace) -> None:
    """Train the default configuration with the options in ``args``, keeping every checkpoint."""
    from gan.train import train

    if not runs.is_run(run_dir):
        settings = {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "precision": args.precision,
            "checkpoints_kept": 1000,
            "data": "mnist",
            "eval_every_epochs": 1,
            "eval_samples": args.samples,
        }
        runs.create_run(run_dir, TrainConfig(**settings))
    state = runs.read_status(run_dir)["state"]
    if state != "finished":
        train(run_dir, resume=state != "new")


def epoch_checkpoints(run_dir: Path) -> list[checkpoints.CheckpointInfo]:
    """Return the checkpoints written at epoch ends, oldest first."""
    status = runs.read_status(run_dir)
    steps_per_epoch = status["steps_per_epoch"]
    found = checkpoints.list_checkpoints(run_dir / runs.CHECKPOINTS_DIR)
    return [info for info in found if info.epoch > 0 and info.step == info.epoch * steps_per_epoch]


def score(run_dir: Path, info: checkpoints.CheckpointInfo, samples: int) -> dict:
    report = metrics.evaluate_generator(load_generator(run_dir, info.step), "mnist", samples, seed=EVAL_SEED)
    generated, floor = report.generated, report.floor
    return {
        "epoch": info.epoch,
        "step": info.step,
        "frechet_distance": round(generated.frechet_distance, 4),
        "frechet_floor": round(floor.frechet_distance, 4),
        "kid": round(generated.kid, 4),
        "kid_std_error": round(generated.kid_std_error, 4),
        "min_class_share": round(min(generated.class_shares), 4),
        "max_class_share": round(max(generated.class_shares), 4),
        "class_entropy_bits": round(generated.class_entropy_bits, 4),
        "confidence": round(generated.confidence, 4),
        "diversity": round(generated.diversity, 4),
        "diversity_floor": round(floor.diversity, 4),
        "seconds": round(report.seconds, 1),
    }


def trainer_scores(run_dir: Path) -> dict[int, dict]:
    """Return the scores that the trainer wrote to epochs.csv, by epoch, in this script's columns."""
    text, _ = runs.read_complete_lines(run_dir / runs.EPOCHS_FILE)
    scores = {}
    for row in csv.DictReader(io.StringIO(text)):
        if not row.get("frechet_distance"):
            continue
        shares = [float(row[f"share_{digit}"]) for digit in range(10)]
        scores[int(row["epoch"])] = {
            **{name: row.get(name, "") for name in COLUMNS},
            "min_class_share": min(shares),
            "max_class_share": max(shares),
            "seconds": "",  # the trainer logs the time of its evaluation, not epochs.csv
        }
    return scores


def read_scores(path: Path) -> dict[int, dict]:
    if not path.exists():
        return {}
    with open(path, newline="") as handle:
        return {int(row["epoch"]): row for row in csv.DictReader(handle)}


def write_scores(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def main() -> int:
    args = parse_args()
    run_dir = args.run_dir
    started = time.perf_counter()
    if not args.score_only:
        train_run(run_dir, args)
    trained = time.perf_counter()

    path = run_dir / "quality.csv"
    scored = {**read_scores(path), **trainer_scores(run_dir)}
    rows = []
    for info in epoch_checkpoints(run_dir):
        row = scored.get(info.epoch) or score(run_dir, info, args.samples)
        rows.append({name: row[name] for name in COLUMNS})
        write_scores(path, rows)
        print(
            f"epoch {info.epoch:3d}: Frechet {float(row['frechet_distance']):8.3f} "
            f"(floor {float(row['frechet_floor']):.3f}), KID {float(row['kid']):8.3f}, "
            f"class shares {float(row['min_class_share']):.3f}..{float(row['max_class_share']):.3f}, "
            f"confidence {float(row['confidence']):.3f}, diversity {float(row['diversity']):.3f}",
            flush=True,
        )
    if not rows:
        print(f"no epoch checkpoints in {run_dir}", file=sys.stderr)
        return 1

    best = min(rows, key=lambda row: float(row["frechet_distance"]))
    last = rows[-1]
    ratio = float(last["frechet_distance"]) / float(last["frechet_floor"])
    low, high = CLASS_SHARE_RANGE
    shares_ok = low <= float(last["min_class_share"]) and float(last["max_class_share"]) <= high
    print(f"\ntraining {trained - started:.0f} s, scoring {time.perf_counter() - trained:.0f} s")
    print(f"best epoch by Frechet distance: {best['epoch']} ({float(best['frechet_distance']):.3f})")
    print(f"epoch {last['epoch']} against the targets:")
    print(f"  Frechet distance / floor = {ratio:.1f} (target <= {FRECHET_RATIO_TARGET:g})")
    print(
        f"  class shares {float(last['min_class_share']):.3f}..{float(last['max_class_share']):.3f} "
        f"(target {low:g}..{high:g}): {'met' if shares_ok else 'not met'}"
    )
    print(f"  confidence {float(last['confidence']):.3f} (target > {CONFIDENCE_TARGET:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
