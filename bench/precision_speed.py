"""Measure training speed per precision and XLA setting: images per second of whole trainer epochs.

Every entry is the real trainer, ``gan.train.train``, on its own run folder
with the default TrainConfig. Only these fields change: ``precision`` and
``jit_compile`` (the entry), ``max_images`` (``--max-images``), ``epochs``
(warm-up plus timed epochs) and ``checkpoint_every_minutes``, set to its
maximum of a week. A paused trainer waits minutes for the other entries, so
the 5-minute timer would write checkpoints that a trainer running alone
would not. The evaluation after every epoch stays on, as in the default
configuration.

The entries are float32, float32 with XLA (``jit_compile``), mixed_bfloat16,
mixed_bfloat16 with XLA and mixed_float16 (``--no-float16`` leaves it out).
They run in one process, each in its own thread, paused between turns by
the ``LiveTrainer`` of ``bench/train_speed.py``, whose module docstring
describes the pause and the two substitutions it needs. A warm-up round
builds every model, traces and compiles every step and trains the first
epoch of each entry. No figure includes it. Each timed round then trains
``--epochs-per-round`` epochs of every entry, one entry at a time, starting
at a different entry each round.

Reported per entry and round:

- images/s of the whole epoch: ``make_dataset``, ``fit`` with the trainer's
  callback, and the epoch end (evaluation, epochs.csv, sample grid,
  checkpoint, export, status.json);
- ratio: that rate over float32 without XLA in the same round, so that both
  sides of a ratio run in the same minutes when other work shares the
  machine;
- CPU ratio: the same with the process's CPU seconds (``time.process_time``),
  which other processes stretch far less than wall time;
- fit ratio: the same with the ``seconds`` column of epochs.csv, which covers
  ``make_dataset`` and ``fit`` only.

A CPU without float16 arithmetic runs TensorFlow's float16 kernels more
slowly than float32, so every round also measures the best of several
2048x2048 ``tf.linalg.matmul`` calls in float32, bfloat16 and float16. The
header lists the CPU's bf16 and fp16 feature flags from /proc/cpuinfo.

Ctrl-C can take effect only when the current entry's turn ends: the main
thread waits for the turn, and the signal may reach one of TensorFlow's
threads instead.

Timings are only reported, never checked. An entry whose trainer fails is
reported with its error, and the others go on. The exit status is 1 when
float32 without XLA, the reference of every ratio, fails or the benchmark
cannot run, and 2 for invalid options.

    GAN_MNIST_PATH=/path/to/mnist.npz python bench/precision_speed.py --max-images 2048 --rounds 3
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

import tensorflow as tf  # noqa: E402
from train_speed import (  # noqa: E402
    OURS,
    LiveTrainer,
    TrainerFailed,
    load_average,
    machine_description,
    markdown_table,
    matmul_peak_gflops,
    positive_integer,
    progress,
    run_in_work_dir,
    trainer_substitutions,
)

from gan import data, devices, runs  # noqa: E402
from gan.config import MAX_CHECKPOINT_MINUTES, TrainConfig  # noqa: E402
from gan.errors import InputError  # noqa: E402

WARM_UP_EPOCHS = 1
DEFAULT_MAX_IMAGES = 2048
# CPU flags of native bfloat16 and float16 arithmetic, as Linux lists them in /proc/cpuinfo.
HALF_PRECISION_FLAGS = ("avx512_bf16", "amx_bf16", "avx512_fp16", "amx_fp16")
MATMUL_DTYPES = {"float32": tf.float32, "bfloat16": tf.bfloat16, "float16": tf.float16}


@dataclass
class Entry:
    """One trainer setting and its timings per timed round."""

    precision: str
    jit_compile: bool
    runner: LiveTrainer | None = None
    failure: str | None = None
    warm_up_seconds: float = 0.0
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    fit_seconds: list[float | None] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.precision + (" + XLA" if self.jit_compile else "")

    @property
    def folder_name(self) -> str:
        return self.precision + ("-xla" if self.jit_compile else "")


@dataclass
class Round:
    number: int  # 0 is the warm-up
    load: str
    matmul_gflops: dict[str, float]


def make_entries(float16: bool) -> list[Entry]:
    entries = [
        Entry("float32", False),
        Entry("float32", True),
        Entry("mixed_bfloat16", False),
        Entry("mixed_bfloat16", True),
    ]
    if float16:
        entries.append(Entry("mixed_float16", False))
    return entries


def entry_config(entry: Entry, epochs: int, max_images: int | None) -> TrainConfig:
    config = TrainConfig()
    config.precision = entry.precision
    config.jit_compile = entry.jit_compile
    config.epochs = epochs
    config.max_images = max_images
    config.checkpoint_every_minutes = MAX_CHECKPOINT_MINUTES
    return config


def start_trainers(entries: list[Entry], args: argparse.Namespace, work_dir: Path) -> None:
    epochs = WARM_UP_EPOCHS + args.rounds * args.epochs_per_round
    for entry in entries:
        config = entry_config(entry, epochs, args.max_images)
        run_dir = runs.create_run(work_dir / entry.folder_name, config)
        entry.runner = LiveTrainer(run_dir, OURS)


def active(entries: list[Entry]) -> list[Entry]:
    return [entry for entry in entries if entry.failure is None]


def run_round(number: int, entries: list[Entry], epochs: int) -> Round:
    """Train ``epochs`` epochs of every working entry, starting at a different entry each round."""
    matmul = {name: matmul_peak_gflops(dtype) for name, dtype in MATMUL_DTYPES.items()}
    round_ = Round(number, load_average(), matmul)
    working = active(entries)
    offset = number % len(working)
    for entry in working[offset:] + working[:offset]:
        cpu_started = time.process_time()
        try:
            seconds = entry.runner.run_epochs(epochs)
        except TrainerFailed as error:
            if entry is entries[0]:
                raise
            entry.failure = f"round {number}: {error}"
            progress(f"round {number}: {entry.label} failed: {error}")
            continue
        cpu_seconds = time.process_time() - cpu_started
        if number == 0:
            entry.warm_up_seconds = seconds
        else:
            entry.seconds.append(seconds)
            entry.cpu_seconds.append(cpu_seconds)
            entry.fit_seconds.append(entry.runner.recorded_fit_seconds(entry.runner.turns[-1]))
        progress(f"round {number}: {entry.label}: {seconds:.1f} s, {cpu_seconds:.1f} CPU s")
    return round_


def xla_in_effect(run_dir: Path) -> str:
    """Return the jit_compile value that the trainer logged after building the model, or "?"."""
    try:
        log = (run_dir / runs.LOG_FILE).read_text()
    except OSError:
        return "?"
    found = re.findall(r"precision: \S+, jit_compile: (True|False)", log)
    return found[0] if found else "?"


# Report ------------------------------------------------------------------------------------------


def ratio_list(own: list[float | None], reference: list[float | None]) -> list[float | None]:
    """Return the reference's seconds over the entry's per round: the entry's rate over the reference's."""
    return [
        None if seconds is None or theirs is None else theirs / seconds
        for seconds, theirs in zip(own, reference, strict=True)
    ]


def median_or_none(values: list[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return statistics.median(known) if known else None


def formatted(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def round_table(entries: list[Entry], rounds: list[Round], images_per_round: int) -> str:
    reference = entries[0]
    rows = []
    for index, round_ in enumerate(rounds):
        peaks = ", ".join(f"{name} {gflops:.0f}" for name, gflops in round_.matmul_gflops.items())
        for entry in active(entries):
            seconds, cpu_seconds = entry.seconds[index], entry.cpu_seconds[index]
            fit = entry.fit_seconds[index]
            [fit_ratio] = ratio_list([fit], [reference.fit_seconds[index]])
            rows.append(
                [
                    str(round_.number),
                    round_.load,
                    peaks,
                    entry.label,
                    f"{seconds:.1f}",
                    f"{cpu_seconds:.1f}",
                    formatted(fit, 1),
                    f"{images_per_round / seconds:.0f}",
                    f"{reference.seconds[index] / seconds:.3f}",
                    f"{reference.cpu_seconds[index] / cpu_seconds:.3f}",
                    formatted(fit_ratio),
                ]
            )
    header = [
        "round",
        "load (1, 5, 15 min)",
        "matmul peak GFLOP/s",
        "entry",
        "s",
        "CPU s",
        "fit s",
        "images/s",
        "ratio",
        "CPU ratio",
        "fit ratio",
    ]
    return markdown_table(header, rows)


def summary_table(entries: list[Entry], images_per_round: int) -> str:
    reference = entries[0]
    rows = []
    for entry in active(entries):
        rates = [images_per_round / seconds for seconds in entry.seconds]
        wall_ratios = ratio_list(entry.seconds, reference.seconds)
        cpu_ratios = ratio_list(entry.cpu_seconds, reference.cpu_seconds)
        fit_ratios = ratio_list(entry.fit_seconds, reference.fit_seconds)
        rows.append(
            [
                entry.label,
                xla_in_effect(entry.runner.run_dir),
                f"{entry.warm_up_seconds:.1f}",
                f"{statistics.median(rates):.0f}",
                ", ".join(formatted(ratio, 2) for ratio in wall_ratios),
                formatted(median_or_none(wall_ratios)),
                formatted(median_or_none(cpu_ratios)),
                formatted(median_or_none(fit_ratios)),
            ]
        )
    header = [
        "entry",
        "XLA in effect (train.log)",
        "warm-up s",
        "images/s (median)",
        "ratio per round",
        "median ratio",
        "median CPU ratio",
        "median fit ratio",
    ]
    return markdown_table(header, rows)


def cpu_flag_line() -> str:
    flags = devices.cpu_flags()
    return ", ".join(f"{flag} {'yes' if flag in flags else 'no'}" for flag in HALF_PRECISION_FLAGS)


def print_report(
    args: argparse.Namespace, entries: list[Entry], rounds: list[Round], num_images: int
) -> None:
    images_per_round = num_images * args.epochs_per_round
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"date: {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"machine: {machine_description()}")
    print(f"CPU flags: {cpu_flag_line()}")
    print(
        f"data: {num_images} digits of {os.environ.get(data.MNIST_PATH_ENV) or 'mnist (Keras)'}, "
        f"{args.rounds} timed round(s) of {args.epochs_per_round} epoch(s), batch {TrainConfig.batch_size}, "
        f"evaluation of {TrainConfig.eval_samples} digits after every epoch, "
        f"load average at the end {load_average()}"
    )
    print()
    print(
        "Timed rounds (ratio: images/s of the entry over float32 without XLA in the same round; "
        "CPU ratio: the same with the process's CPU seconds; fit ratio: the same with the seconds "
        "column of epochs.csv, make_dataset and fit only):"
    )
    print(round_table(entries, rounds, images_per_round))
    print()
    print("Summary (warm-up: model building, tracing or XLA compilation, and the first epoch):")
    print(summary_table(entries, images_per_round))
    failed = [entry for entry in entries if entry.failure is not None]
    if failed:
        print()
        print("Failed entries:")
        for entry in failed:
            print(f"- {entry.label}: {entry.failure}")


# Command line ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rounds", type=positive_integer, default=3, help="timed rounds after the warm-up (default 3)"
    )
    parser.add_argument(
        "--epochs-per-round",
        type=positive_integer,
        default=1,
        help="epochs of every entry per round (default 1)",
    )
    parser.add_argument(
        "--max-images",
        type=positive_integer,
        default=DEFAULT_MAX_IMAGES,
        help=f"train on the first N digits (default {DEFAULT_MAX_IMAGES}), so that an epoch is N images",
    )
    parser.add_argument("--no-float16", dest="float16", action="store_false", help="leave out mixed_float16")
    parser.add_argument(
        "--work-dir",
        type=Path,
        help="folder for the run folders, kept afterwards (default: a temporary folder, deleted)",
    )
    return parser


def run(args: argparse.Namespace, work_dir: Path) -> None:
    num_images = len(data.load_images(TrainConfig.data, max_images=args.max_images).images)
    if num_images < TrainConfig.batch_size:
        raise InputError(
            f"--max-images {args.max_images} gives {num_images} digits, fewer than the default batch "
            f"of {TrainConfig.batch_size}; choose at least {TrainConfig.batch_size}."
        )
    entries = make_entries(args.float16)
    rounds = []
    with trainer_substitutions():
        try:
            start_trainers(entries, args, work_dir)
            progress(f"warm-up round: {len(entries)} entries on {num_images} digits")
            run_round(0, entries, WARM_UP_EPOCHS)
            for number in range(1, args.rounds + 1):
                rounds.append(run_round(number, entries, args.epochs_per_round))
        except BaseException:
            # A trainer in the middle of an epoch checks for the stop only at the epoch end.
            close_trainers(entries, stop=True, timeout=10)
            raise
        close_trainers(entries, stop=False, timeout=600)
    print_report(args, entries, rounds, num_images)


def close_trainers(entries: list[Entry], stop: bool, timeout: float) -> None:
    for entry in entries:
        if entry.runner is not None:
            entry.runner.close(stop=stop, timeout=timeout)


def main(argv: list[str] | None = None) -> int:
    return run_in_work_dir("precision_speed", build_parser().parse_args(argv), run)


if __name__ == "__main__":
    sys.exit(main())
