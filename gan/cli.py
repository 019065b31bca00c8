"""``python -m gan``: train, stop, status, list and generate from a shell.

Exit status: 0 on success, 1 on a runtime failure, 2 on a usage or input
error, with the message on stderr. TensorFlow is imported only by the
subcommands that need it, so ``--help`` prints at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from dataclasses import fields
from pathlib import Path

from gan import __version__
from gan.config import GROUPS, TrainConfig, field_group
from gan.errors import InputError, RunLockedError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

log = logging.getLogger("gan")

# Flags of `train` that the design fixes; every other TrainConfig field gets a flag too.
_CHOICES = {"model": ("dcgan", "conditional")}


class UsageError(InputError):
    """A command line whose options contradict each other or the run folder."""


# Parser ---------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gan",
        description="Train and explore a DCGAN on handwritten digits. "
        "Runs live in folders under the runs root (--runs-dir, $GAN_RUNS_DIR, default runs/).",
        epilog="Exit status: 0 success, 1 runtime failure, 2 usage or input error.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(commands)

    stop = commands.add_parser("stop", help="stop a training run after its current step, with a checkpoint")
    stop.add_argument("--run-dir", required=True, type=Path, help="the run folder")
    stop.add_argument(
        "--wait",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="seconds to wait for the trainer to exit (default 60)",
    )

    status = commands.add_parser("status", help="show the state and progress of a run")
    status.add_argument("--run-dir", required=True, type=Path, help="the run folder")
    status.add_argument("--json", action="store_true", help="print status.json with the resolved state")

    listing = commands.add_parser("list", help="list the runs under the runs root with their state")
    listing.add_argument("--runs-dir", type=Path, help="runs root (default $GAN_RUNS_DIR, else runs/)")
    listing.add_argument("--json", action="store_true", help="print a JSON array")

    _add_generate(commands)
    return parser


def _add_train(commands) -> None:
    train = commands.add_parser(
        "train",
        help="train a run in the foreground, or --detach to start it in the background",
        description="Create and train the run in --run-dir, or continue it with --resume. "
        "Options override --config, which overrides the defaults.",
    )
    train.add_argument("--run-dir", required=True, type=Path, help="the run folder (created if new)")
    train.add_argument(
        "--config",
        type=Path,
        metavar="FILE.json",
        help="TrainConfig JSON to start from",
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run from its latest complete checkpoint: same step, epoch and optimizer state",
    )
    train.add_argument(
        "--detach",
        action="store_true",
        help="start the trainer as a background process with its output in RUN/train.log, and return",
    )
    groups = {key: train.add_argument_group(f"{title} (TrainConfig fields)") for key, title in GROUPS.items()}
    for field in fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        kind = _field_type(field)
        help_text = field.metadata["help"] + f" (default {field.default})"
        groups[field_group(field.name)].add_argument(
            flag,
            dest=field.name,
            type=kind,
            choices=_CHOICES.get(field.name),
            default=None,
            metavar=None if field.name in _CHOICES else field.name.upper(),
            help=help_text.replace("%", "%%"),
        )


def _field_type(field):
    annotation = str(field.type)
    if "float" in annotation:
        return float
    if "int" in annotation:
        return int
    return str


def _add_generate(commands) -> None:
    generate = commands.add_parser(
        "generate",
        help="write a grid of digits from seeds to a PNG file",
        description="Digit i of the grid comes from seed SEED+i, so any tile can be made again on its own.",
    )

    # Where the generator comes from
    source = generate.add_mutually_exclusive_group(required=True)
    source.add_argument("--run-dir", type=Path, help="load the generator of this run")
    source.add_argument("--generator", type=Path, metavar="FILE.keras", help="load this saved generator")
    generate.add_argument(
        "--checkpoint",
        type=int,
        metavar="STEP",
        help="with --run-dir: the checkpoint at this step (default latest)",
    )

    # What to draw
    generate.add_argument("--seed", type=int, default=0, help="seed of the first digit (default 0)")
    generate.add_argument("--count", type=int, default=64, help="number of digits (default 64)")
    generate.add_argument("--columns", type=int, default=8, help="digits per grid row (default 8)")
    generate.add_argument(
        "--latent-scale",
        type=float,
        default=1.0,
        help="multiply latent vectors by this factor; below 1 trades variety for quality (default 1.0)",
    )
    generate.add_argument(
        "--digit",
        default=None,
        help="conditional generators: a class 0-9 for every digit, or 'rows' for one class per row "
        "(then --count is ignored and the grid has 10 rows of --columns)",
    )

    # Interpolation instead of a grid
    generate.add_argument(
        "--interpolate-to",
        type=int,
        metavar="SEED",
        help="instead of a grid, a strip of --steps digits on the path from --seed to this seed",
    )
    generate.add_argument(
        "--steps",
        type=int,
        default=10,
        help="digits in an interpolation strip (default 10)",
    )

    # Output files
    generate.add_argument(
        "--output",
        type=Path,
        required=True,
        metavar="FILE.png",
        help="PNG file to write",
    )
    generate.add_argument(
        "--npz",
        type=Path,
        metavar="FILE.npz",
        help="also write the images and seeds as .npz",
    )


# Commands -------------------------------------------------------------------


def cmd_train(args) -> int:
    from gan import runs

    run_dir: Path = args.run_dir
    overrides = {field.name: getattr(args, field.name) for field in fields(TrainConfig)}
    overrides = {name: value for name, value in overrides.items() if value is not None}

    if args.resume:
        if overrides or args.config:
            raise UsageError(
                f"--resume continues the run with its saved config; remove {_flags(overrides, args.config)}."
            )
        runs.load_config(run_dir)
    elif runs.is_run(run_dir):
        status = runs.read_status(run_dir)
        if status["state"] not in ("new", "starting"):
            raise UsageError(
                f"run {run_dir} has already started (state: {status['state']}); "
                "add --resume to continue it, or choose a new --run-dir."
            )
        if overrides or args.config:
            raise UsageError(
                f"run {run_dir} already has its {runs.CONFIG_FILE}; remove {_flags(overrides, args.config)} "
                "or choose a new --run-dir."
            )
    else:
        config = TrainConfig.load(args.config) if args.config else TrainConfig()
        config = TrainConfig.from_dict({**config.to_dict(), **overrides}).validate()
        _check_data(config)
        runs.create_run(run_dir, config)

    if args.detach:
        pid = runs.launch(run_dir, resume=args.resume)
        print(f"started trainer pid {pid} for {run_dir}")
        print(f"watch it with: python -m gan status --run-dir {run_dir}")
        return EXIT_OK

    # A stop can arrive while TensorFlow imports, before train() has its handlers.
    signals_received: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda signum, frame: signals_received.append(signum))
    from gan.train import train

    progress = _TerminalProgress() if sys.stderr.isatty() else None
    terminal_handlers = [
        handler
        for handler in logging.getLogger().handlers
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr
    ]
    if progress:
        for handler in terminal_handlers:
            handler.addFilter(progress)
    try:
        state = train(run_dir, resume=args.resume, on_progress=progress, signals_received=signals_received)
    finally:
        if progress:
            progress.close()
            for handler in terminal_handlers:
                handler.removeFilter(progress)
    print(f"{run_dir}: {state}")
    return EXIT_OK


def _check_data(config: TrainConfig) -> None:
    """Load the data source once, so that a bad source or a batch larger than the data fails early.

    It fails with exit status 2 before the run folder exists, so no failed run is left behind.
    """
    from gan import data

    dataset = data.load_images(config.data, max_images=config.max_images)
    config.validate(num_images=len(dataset.images))


def _flags(overrides: dict, config_path) -> str:
    flags = ["--" + name.replace("_", "-") for name in overrides]
    if config_path:
        flags.append("--config")
    return " ".join(flags)


class _TerminalProgress(logging.Filter):
    """A one-line progress bar on stderr, redrawn on every heartbeat.

    It is also a filter on the stderr log handler, which clears the bar before
    each log line so that the line starts at the left edge. The next
    heartbeat draws the bar again.
    """

    width = 30

    def __init__(self):
        super().__init__()
        self.drawn = False

    def filter(self, record: logging.LogRecord) -> bool:
        if self.drawn:
            sys.stderr.write("\r\x1b[2K")
            self.drawn = False
        return True

    def __call__(self, status: dict) -> None:
        total = status.get("total_steps") or 1
        step = status.get("step", 0)
        filled = int(self.width * step / total)
        bar = "#" * filled + "." * (self.width - filled)
        rate = status.get("images_per_second")
        eta = status.get("eta_seconds")
        line = (
            f"\r[{bar}] epoch {status.get('epoch', 0)}/{status.get('epochs', '?')} "
            f"step {step}/{total}"
            f"{f'  {rate:.0f} images/s' if rate else ''}"
            f"{f'  ETA {_duration(eta)}' if eta is not None else ''}"
        )
        sys.stderr.write(line.ljust(100))
        sys.stderr.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            sys.stderr.write("\n")
            self.drawn = False


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def cmd_stop(args) -> int:
    from gan import runs

    status = runs.stop(args.run_dir, wait_seconds=args.wait)
    print(
        f"{args.run_dir}: {status['state']} at epoch {status.get('epoch', 0)}, step {status.get('step', 0)}"
    )
    return EXIT_OK if status["state"] not in runs.LIVE_STATES else EXIT_FAILURE


def cmd_status(args) -> int:
    from gan import runs

    runs.load_config(args.run_dir)
    status = runs.read_status(args.run_dir)
    if args.json:
        print(json.dumps(status, indent=2))
        return EXIT_OK
    info = runs.run_info(args.run_dir)
    print(_describe(info))
    if info.last_error:
        print(f"last error: {info.last_error}")
    for warning in status.get("warnings") or []:
        print(f"warning: {warning}")
    return EXIT_OK


def _describe(info) -> str:
    parts = [
        f"{info.name}: {info.state}",
        f"epoch {info.epoch}/{info.epochs}",
        f"step {info.step}/{info.total_steps}",
    ]
    if info.images_per_second:
        parts.append(f"{info.images_per_second:.0f} images/s")
    if info.eta_seconds is not None and info.state == "running":
        parts.append(f"ETA {_duration(info.eta_seconds)}")
    return ", ".join(parts)


def cmd_list(args) -> int:
    from gan import runs

    found = runs.list_runs(args.runs_dir)
    if args.json:
        rows = [
            {
                **{key: value for key, value in vars(info).items() if key != "path"},
                "path": str(info.path),
            }
            for info in found
        ]
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    if not found:
        print(f"no runs under {runs.runs_root(args.runs_dir)}")
        return EXIT_OK
    for info in found:
        print(_describe(info))
    return EXIT_OK


def cmd_generate(args) -> int:
    from gan import generate

    if args.generator:
        if args.checkpoint is not None:
            raise UsageError("--checkpoint goes with --run-dir, not with --generator.")
        generator = generate.load_generator_file(args.generator)
    else:
        generator = generate.load_generator(args.run_dir, args.checkpoint)

    request = generate.GridRequest(
        seed=args.seed,
        count=args.count,
        columns=args.columns,
        latent_scale=args.latent_scale,
        digit=_parse_digit(args.digit),
    )
    if args.interpolate_to is not None:
        result = generate.make_interpolation(generator, request, args.interpolate_to, args.steps)
    else:
        result = generate.make_grid(generator, request)
    generate.save_png(result.grid, args.output)
    if args.npz:
        args.npz.parent.mkdir(parents=True, exist_ok=True)
        args.npz.write_bytes(generate.npz_bytes(result.images, result.seeds, result.labels))
    print(f"wrote {len(result.images)} digits to {args.output}")
    return EXIT_OK


def _parse_digit(value: str | None) -> int | str | None:
    if value is None or value == "rows":
        return value
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"--digit must be a class number such as 3, or 'rows', got {value!r}.") from None


# Entry point ----------------------------------------------------------------

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

COMMANDS = {
    "train": cmd_train,
    "stop": cmd_stop,
    "status": cmd_status,
    "list": cmd_list,
    "generate": cmd_generate,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits with status 2 on a usage error
    # TensorFlow's native INFO to ERROR lines (CUDA probing on machines without
    # a GPU, grappler notes) bury the trainer's own log. Set the variable to 0 to see them.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.basicConfig(level=logging.INFO, format=_LOG_FORMAT, stream=sys.stderr)
    # TensorFlow's absl logger reports every checkpoint shard at INFO.
    logging.getLogger("absl").setLevel(logging.WARNING)
    try:
        return COMMANDS[args.command](args)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_FAILURE
    except RunLockedError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as error:  # a runtime failure: one line on stderr, the traceback in the log
        log.exception("%s failed", args.command)
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_FAILURE
