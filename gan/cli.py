"""``python -m gan``: train, stop, status, list, generate and evaluate from a shell.

Exit status: 0 on success, 1 on a runtime failure, 2 on a usage or input
error, with the message on stderr. TensorFlow is imported only by the
subcommands that need it, so ``--help`` prints at once.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import logging
import math
import os
import signal
import sys
import time
from dataclasses import fields
from pathlib import Path

from gan import __version__, names
from gan.cluster import Cluster, check_batch_split, read_cluster, require_chief_for_launch
from gan.config import GROUPS, MAX_SEED, TrainConfig, field_group
from gan.errors import InputError, RunLockedError, StorageError, format_value

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

log = logging.getLogger("gan")

# Flags of `train` that the design fixes; every other TrainConfig field gets a flag too.
_CHOICES = {"model": ("dcgan", "conditional")}

# Bounds of the generate options, checked before TensorFlow loads the generator.
MAX_GENERATE_COUNT = 10_000
MAX_GENERATE_COLUMNS = 1000
MAX_INTERPOLATION_STEPS = 1000
MAX_LATENT_SCALE = 10.0
# `status` prints the newest alerts only; alerts.csv keeps them all.
MAX_STATUS_ALERTS = 20
# Maximum wait for a stopping trainer: a day.
MAX_STOP_WAIT_SECONDS = 86_400.0
# How long a multi_worker worker other than the chief waits for the chief to create the run folder.
CHIEF_RUN_WAIT_SECONDS = 300.0
# gan.metrics.DEFAULT_SAMPLES and MAX_SAMPLES, repeated here because gan.metrics imports numpy.
DEFAULT_EVALUATE_SAMPLES = 2000
MAX_EVALUATE_SAMPLES = 10_000
EVALUATE_DATASETS = ("mnist", "fashion_mnist")


class UsageError(InputError):
    """A command line whose options contradict each other or the run folder."""


# Parser ---------------------------------------------------------------------


def _integer(example: object):
    """Return an argparse type that parses an integer and names an example when the text is not one."""

    def parse(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be an integer such as {example}, got {format_value(text)}"
            ) from None

    return parse


def _number(example: object):
    """Return an argparse type that parses a float and names an example when the text is not one."""

    def parse(text: str) -> float:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be a number such as {example}, got {format_value(text)}"
            ) from None

    return parse


def _choice(choices: tuple[str, ...]):
    """Return an argparse type that accepts one of ``choices``, with a short message otherwise."""

    def parse(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(f"must be one of {', '.join(choices)}, got {format_value(text)}")
        return text

    return parse


def _path(text: str) -> Path:
    """Parse a path option, rejecting what no file system accepts: empty, NUL bytes, over-long names."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty; pass a path")
    if "\x00" in text:
        raise argparse.ArgumentTypeError(
            f"contains a NUL character, which no path may contain: {format_value(text)}"
        )
    too_long = names.long_component(text)
    if too_long is not None:
        raise argparse.ArgumentTypeError(
            f"has a file or folder name of more than {names.MAX_COMPONENT_BYTES} bytes, which file systems "
            f"reject: {format_value(too_long)}; use a shorter name"
        )
    return Path(text)


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
    stop.add_argument("--run-dir", required=True, type=_path, help="the run folder")
    stop.add_argument(
        "--wait",
        type=_number(60),
        default=60.0,
        metavar="SECONDS",
        help="seconds to wait for the trainer to exit (default 60)",
    )

    status = commands.add_parser("status", help="show the state and progress of a run")
    status.add_argument("--run-dir", required=True, type=_path, help="the run folder")
    status.add_argument("--json", action="store_true", help="print status.json with the resolved state")

    listing = commands.add_parser("list", help="list the runs under the runs root with their state")
    listing.add_argument("--runs-dir", type=_path, help="runs root (default $GAN_RUNS_DIR, else runs/)")
    listing.add_argument("--json", action="store_true", help="print a JSON array")

    _add_generate(commands)
    _add_evaluate(commands)
    return parser


def _add_train(commands) -> None:
    train = commands.add_parser(
        "train",
        help="train a run in the foreground, or --detach to start it in the background",
        description="Create and train the run in --run-dir, or continue it with --resume. "
        "Options override --config, which overrides the defaults. With --strategy multi_worker, run the "
        "same command on every worker, each with TF_CONFIG in its environment; worker 0 (the chief) "
        "creates and writes the run folder, which every worker must see. docs/scaling.md has examples.",
    )
    train.add_argument("--run-dir", required=True, type=_path, help="the run folder (created if new)")
    train.add_argument(
        "--config",
        type=_path,
        metavar="FILE.json",
        help="TrainConfig JSON to start from",
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run from its latest complete checkpoint: same step, epoch and optimizer state. "
        "The saved config.json decides every setting; a setting flag must repeat its saved value",
    )
    train.add_argument(
        "--detach",
        action="store_true",
        help="start the trainer as a background process with its output in RUN/train.log, and return",
    )
    groups = {key: train.add_argument_group(f"{title} (TrainConfig fields)") for key, title in GROUPS.items()}
    for field in fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        help_text = field.metadata["help"] + f" (default {field.default})"
        if str(field.type) == "bool":
            # --jit-compile sets True and --no-jit-compile sets False. Without either, the config decides.
            groups[field_group(field.name)].add_argument(
                flag,
                dest=field.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text.replace("%", "%%"),
            )
            continue
        choices = _CHOICES.get(field.name)
        kind = _choice(choices) if choices else _field_type(field)
        groups[field_group(field.name)].add_argument(
            flag,
            dest=field.name,
            type=kind,
            default=None,
            metavar="{" + ",".join(choices) + "}" if choices else field.name.upper(),
            help=help_text.replace("%", "%%"),
        )


def _field_type(field):
    annotation = str(field.type)
    example = field.default if field.default is not None else 10000
    if "float" in annotation:
        return _number(example)
    if "int" in annotation:
        return _integer(example)
    return str


def _add_generate(commands) -> None:
    generate = commands.add_parser(
        "generate",
        help="write a grid of digits from seeds to a PNG file",
        description="Digit i of the grid comes from seed SEED+i, so any tile can be made again on its own.",
    )

    # Where the generator comes from
    source = generate.add_mutually_exclusive_group(required=True)
    source.add_argument("--run-dir", type=_path, help="load the generator of this run")
    source.add_argument("--generator", type=_path, metavar="FILE.keras", help="load this saved generator")
    generate.add_argument(
        "--checkpoint",
        type=_integer(500),
        metavar="STEP",
        help="with --run-dir: the checkpoint at this step (default latest)",
    )

    # What to draw
    generate.add_argument("--seed", type=_integer(0), default=0, help="seed of the first digit (default 0)")
    generate.add_argument("--count", type=_integer(64), default=64, help="number of digits (default 64)")
    generate.add_argument("--columns", type=_integer(8), default=8, help="digits per grid row (default 8)")
    generate.add_argument(
        "--latent-scale",
        type=_number(0.8),
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
        type=_integer(1),
        metavar="SEED",
        help="instead of a grid, a strip of --steps digits on the path from --seed to this seed",
    )
    generate.add_argument(
        "--steps",
        type=_integer(10),
        default=10,
        help="digits in an interpolation strip (default 10)",
    )

    # Output files
    generate.add_argument(
        "--output",
        type=_path,
        required=True,
        metavar="FILE.png",
        help="PNG file to write, or a .gif with --interpolate-to for an animation of the steps",
    )
    generate.add_argument(
        "--npz",
        type=_path,
        metavar="FILE.npz",
        help="also write the images and seeds as .npz",
    )


def _add_evaluate(commands) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        help="score a generator's digits with a shipped classifier: Frechet distance, KID, coverage",
        description="Generate --samples digits from seeds SEED, SEED+1, ... and compare the features "
        "of a shipped classifier with those of as many real test images. Each metric is printed "
        "with its real-data floor: the same metric for real training images.",
    )
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument("--run-dir", type=_path, help="score the generator of this run")
    source.add_argument("--generator", type=_path, metavar="FILE.keras", help="score this saved generator")
    evaluate.add_argument(
        "--checkpoint",
        type=_integer(500),
        metavar="STEP",
        help="with --run-dir: the checkpoint at this step (default latest)",
    )
    evaluate.add_argument(
        "--samples",
        type=_integer(DEFAULT_EVALUATE_SAMPLES),
        default=DEFAULT_EVALUATE_SAMPLES,
        metavar="N",
        help=f"generated digits, and real images of the floor, from 2 to {MAX_EVALUATE_SAMPLES} "
        f"(default {DEFAULT_EVALUATE_SAMPLES})",
    )
    evaluate.add_argument("--seed", type=_integer(0), default=0, help="seed of the first digit (default 0)")
    evaluate.add_argument(
        "--dataset",
        type=_choice(EVALUATE_DATASETS),
        help="the classifier to use: mnist or fashion_mnist (default the run's data; mnist with --generator)",
    )
    evaluate.add_argument("--json", action="store_true", help="print the report as JSON")


# Commands -------------------------------------------------------------------


def cmd_train(args) -> int:
    from gan import runs

    run_dir: Path = args.run_dir
    overrides = {field.name: getattr(args, field.name) for field in fields(TrainConfig)}
    overrides = {name: value for name, value in overrides.items() if value is not None}
    cluster = _cluster_of_train(args, overrides)

    if cluster is not None and not cluster.is_chief:
        _join_chief_run(args, overrides, cluster)
    elif args.resume:
        if args.config:
            raise UsageError(
                f"--resume continues the run with its saved config; remove {_flags(overrides, args.config)}."
            )
        _check_resume_flags(runs.load_config(run_dir), overrides)
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
        _check_new_run_dir(run_dir)
        config = TrainConfig.load(args.config) if args.config else TrainConfig()
        config = TrainConfig.from_dict({**config.to_dict(), **overrides}).validate()
        if cluster is not None:
            check_batch_split(config.batch_size, cluster.num_workers, "workers of TF_CONFIG")
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
    if state == "diverged":
        print(f"error: {runs.read_status(run_dir).get('last_error')}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _cluster_of_train(args, overrides: dict) -> Cluster | None:
    """Read TF_CONFIG when the run to train uses strategy multi_worker; return None for other strategies.

    It runs before anything is created or written, so a bad TF_CONFIG leaves
    the run folder as it was. ``--detach`` is accepted for the chief only.
    """
    from gan import runs

    if "strategy" in overrides:
        strategy = overrides["strategy"]
    elif args.config:
        strategy = TrainConfig.load(args.config).strategy
    elif runs.is_run(args.run_dir):
        strategy = runs.load_config(args.run_dir).strategy
    else:
        strategy = TrainConfig().strategy
    if args.detach:
        return require_chief_for_launch(strategy)
    return read_cluster() if strategy == "multi_worker" else None


def _join_chief_run(args, overrides: dict, cluster: Cluster) -> None:
    """Wait for the chief to create the run folder, then check that it is a multi_worker run.

    The chief's config.json decides every setting. Flags of this worker that
    differ from it are logged and have no effect.
    """
    from gan import runs

    run_dir: Path = args.run_dir
    if args.resume and (overrides or args.config):
        raise UsageError(
            f"--resume continues the run with its saved config; remove {_flags(overrides, args.config)}."
        )
    if not runs.is_run(run_dir):
        log.info(
            "%s: waiting up to %.0f s for worker 0 to create %s",
            cluster.describe(),
            CHIEF_RUN_WAIT_SECONDS,
            run_dir / runs.CONFIG_FILE,
        )
        deadline = time.monotonic() + CHIEF_RUN_WAIT_SECONDS
        while not runs.is_run(run_dir):
            if time.monotonic() > deadline:
                raise UsageError(
                    f"worker {cluster.index} waited {CHIEF_RUN_WAIT_SECONDS:.0f} s for "
                    f"{run_dir / runs.CONFIG_FILE}, which worker 0 (the chief) creates. Start worker 0 with "
                    f"the same command, and put {run_dir} on a filesystem that every worker mounts."
                )
            time.sleep(0.5)
    config = runs.load_config(run_dir)
    if config.strategy != "multi_worker":
        raise UsageError(
            f"run {run_dir} trains with strategy {config.strategy}, not multi_worker, so it has no place "
            f"for worker {cluster.index} of TF_CONFIG; choose a multi_worker run or unset TF_CONFIG."
        )
    ignored = [
        name
        for name, value in overrides.items()
        if getattr(config, name) != value and not (name == "precision" and value == "auto")
    ]
    if ignored:
        log.warning(
            "%s trains with the settings of %s; this worker's %s differ and are ignored",
            cluster.describe(),
            run_dir / runs.CONFIG_FILE,
            " ".join("--" + name.replace("_", "-") for name in ignored),
        )


def _check_new_run_dir(run_dir: Path) -> None:
    """Reject a --run-dir for a new run whose last name is not a plain folder name.

    The rest of the path is the shell user's own choice. The last name
    becomes the run's name in listings and on the pages, so it must be 1 to
    MAX_NAME_LENGTH characters without control characters, and not . or ..
    """
    name = run_dir.name
    if name in ("", ".", ".."):
        raise UsageError(f"--run-dir {format_value(str(run_dir))} must end in a folder name for the new run.")
    control = names.control_character(name)
    if control:
        raise UsageError(
            f"--run-dir folder name {format_value(name)} contains the control character {control}; "
            "use letters, digits, '.', '_' and '-'."
        )
    if len(name) > names.MAX_NAME_LENGTH:
        raise UsageError(
            f"--run-dir folder name must be at most {names.MAX_NAME_LENGTH} characters, "
            f"got {len(name)}: {format_value(name)}."
        )
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--run-dir {run_dir} is a file; choose a folder path for the new run.")


def _check_data(config: TrainConfig) -> None:
    """Load the data source once, so that a bad source or a batch larger than the data fails early.

    It fails with exit status 2 before the run folder exists, so no failed run is left behind.
    """
    from gan import data

    dataset = data.load_images(config.data, max_images=config.max_images)
    config.validate(num_images=len(dataset.images))


def _check_resume_flags(saved: TrainConfig, overrides: dict) -> None:
    """Accept flags of a resume that repeat the saved config; raise UsageError naming those that differ."""
    differing = {name: value for name, value in overrides.items() if getattr(saved, name) != value}
    if differing:
        details = "; ".join(
            f"{_flags({name: value}, None)} differs from the saved {name}={getattr(saved, name)!r}"
            for name, value in differing.items()
        )
        raise UsageError(
            f"--resume continues the run with its saved config ({details}); remove "
            f"{_flags(differing, None)}, or start a new --run-dir with the new settings."
        )


def _flags(overrides: dict, config_path) -> str:
    # A bool field set to False came from its --no- switch.
    flags = [
        "--" + ("no-" if value is False else "") + name.replace("_", "-") for name, value in overrides.items()
    ]
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

    if not math.isfinite(args.wait) or not 0 <= args.wait <= MAX_STOP_WAIT_SECONDS:
        raise UsageError(
            f"--wait must be a number of seconds from 0 to {MAX_STOP_WAIT_SECONDS:g}, got {args.wait!r}; "
            "the default is 60."
        )
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
    recorded = status.get("warnings")
    for warning in recorded if isinstance(recorded, list) else []:
        print(f"warning: {warning}")
    for warning in info.warnings:
        if warning != info.last_error:
            print(f"warning: {warning}")
    _print_quality(args.run_dir, status)
    return EXIT_OK


def _print_quality(run_dir: Path, status: dict) -> None:
    """Print the best checkpoint of best.json and the alerts of alerts.csv, if the run has them."""
    from gan import runs

    best = runs.read_best(run_dir)
    if best is not None:
        print(
            f"best: epoch {best['epoch']}, step {best['step']}, Frechet distance "
            f"{best['frechet_distance']:.3f} ({run_dir / runs.BEST_GENERATOR_FILE})"
        )
    path = run_dir / runs.ALERTS_FILE
    text, _ = runs.read_complete_lines(path)
    try:
        rows = list(csv.DictReader(io.StringIO(text)))
    except csv.Error as error:
        print(f"warning: {path} is damaged ({error}); its alerts are not shown.")
        rows = []
    if not rows and isinstance(status.get("alerts"), list):
        rows = [row for row in status["alerts"] if isinstance(row, dict)]
    if len(rows) > MAX_STATUS_ALERTS:
        print(f"{len(rows) - MAX_STATUS_ALERTS} earlier alerts are in {path}")
    for row in rows[-MAX_STATUS_ALERTS:]:
        print(
            f"alert: {row.get('kind')} at epoch {row.get('epoch')}, step {row.get('step')}: "
            f"{row.get('message')}"
        )


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

    if args.runs_dir is not None and args.runs_dir.exists() and not args.runs_dir.is_dir():
        raise UsageError(f"--runs-dir {args.runs_dir} is a file; pass the folder that contains the runs.")
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
        for warning in info.warnings:
            print(f"  warning: {warning}")
    return EXIT_OK


def cmd_generate(args) -> int:
    from gan import generate, runs

    digit = _parse_digit(args.digit)
    _check_generate_options(args)
    if args.generator:
        if args.checkpoint is not None:
            raise UsageError("--checkpoint goes with --run-dir, not with --generator.")
        generator = generate.load_generator_file(args.generator)
    else:
        runs.load_config(args.run_dir)  # a folder that is no run fails here, before TensorFlow loads
        generator = generate.load_generator(args.run_dir, args.checkpoint)

    request = generate.GridRequest(
        seed=args.seed,
        count=args.count,
        columns=args.columns,
        latent_scale=args.latent_scale,
        digit=digit,
    )
    if args.interpolate_to is not None:
        result = generate.make_interpolation(generator, request, args.interpolate_to, args.steps)
    else:
        result = generate.make_grid(generator, request)
    if args.output.suffix.lower() == ".gif":
        runs.write_atomic(args.output, generate.gif_bytes(list(result.images)))
    else:
        generate.save_png(result.grid, args.output)
    if args.npz:
        args.npz.parent.mkdir(parents=True, exist_ok=True)
        args.npz.write_bytes(generate.npz_bytes(result.images, result.seeds, result.labels))
    count = len(result.images)
    print(f"wrote {count} digit{'' if count == 1 else 's'} to {args.output}")
    return EXIT_OK


def _parse_digit(value: str | None) -> int | str | None:
    if value is None or value == "rows":
        return value
    try:
        digit = int(value)
    except ValueError:
        digit = -1
    if digit < 0:
        raise UsageError(
            f"--digit must be a class number such as 3, or 'rows', got {format_value(value)}."
        ) from None
    return digit


def _check_generate_options(args) -> None:
    """Reject out-of-range generate options before TensorFlow loads the generator."""
    ranges = [
        ("--seed", args.seed, 0, MAX_SEED),
        ("--count", args.count, 1, MAX_GENERATE_COUNT),
        ("--columns", args.columns, 1, MAX_GENERATE_COLUMNS),
        ("--steps", args.steps, 2, MAX_INTERPOLATION_STEPS),
    ]
    if args.interpolate_to is not None:
        ranges.append(("--interpolate-to", args.interpolate_to, 0, MAX_SEED))
    if args.checkpoint is not None:
        ranges.append(("--checkpoint", args.checkpoint, 0, 2**63 - 1))
    for flag, value, low, high in ranges:
        if not low <= value <= high:
            raise UsageError(f"{flag} must be an integer from {low} to {high}, got {value}.")
    if args.interpolate_to is None and args.seed + args.count - 1 > MAX_SEED:
        raise UsageError(
            f"--seed {args.seed} with --count {args.count} goes past the largest seed {MAX_SEED}; "
            f"use a --seed of at most {MAX_SEED - args.count + 1}."
        )
    scale = args.latent_scale
    if not math.isfinite(scale) or not 0 < scale <= MAX_LATENT_SCALE:
        raise UsageError(
            f"--latent-scale must be a number greater than 0 and at most {MAX_LATENT_SCALE:g}, "
            f"got {scale!r}; 1.0 draws from the training distribution."
        )
    for flag, path in (("--output", args.output), ("--npz", args.npz)):
        if path is not None:
            _check_output_path(flag, path)
    suffix = args.output.suffix.lower()
    if suffix not in (".png", ".gif"):
        raise UsageError(
            f"--output {format_value(str(args.output))} must end in .png, or .gif for an interpolation."
        )
    if suffix == ".gif" and args.interpolate_to is None:
        raise UsageError(
            "--output .gif animates an interpolation: add --interpolate-to SEED, or write the grid as .png."
        )


def _check_output_path(flag: str, path: Path) -> None:
    """Reject an output file whose name has a control character, or that names a folder."""
    control = names.control_character(path.name)
    if control:
        raise UsageError(
            f"{flag} file name {format_value(path.name)} contains the control character {control}; "
            "choose a name without it."
        )
    if path.name in ("", ".", "..") or path.is_dir():
        raise UsageError(f"{flag} {path} is a folder; pass a file path such as {path / 'digits.png'}.")
    if path.parent.exists() and not path.parent.is_dir():
        raise UsageError(f"{flag} {path}: {path.parent} is a file, not a folder; choose another path.")


def cmd_evaluate(args) -> int:
    from gan import runs

    _check_evaluate_options(args)
    if args.generator:
        if args.checkpoint is not None:
            raise UsageError("--checkpoint goes with --run-dir, not with --generator.")
        dataset = args.dataset or "mnist"
        source = {"generator": str(args.generator)}
    else:
        config = runs.load_config(args.run_dir)  # a folder that is no run fails here, before TensorFlow loads
        dataset = args.dataset or _dataset_of_run(args.run_dir, config.data)
        source = {"run_dir": str(args.run_dir), "checkpoint": args.checkpoint}

    from gan import classifier, generate, metrics

    classifier.load_classifier(dataset)  # a missing classifier fails before the generator loads
    if args.generator:
        generator = generate.load_generator_file(args.generator)
    else:
        source["checkpoint"] = _evaluated_checkpoint(args.run_dir, args.checkpoint)
        generator = generate.load_generator(args.run_dir, args.checkpoint)
    report = metrics.evaluate_generator(generator, dataset, args.samples, args.seed)

    if args.json:
        print(json.dumps({**source, **report.to_dict()}, indent=2))
        return EXIT_OK
    if args.generator:
        print(f"generator {args.generator}")
    else:
        checkpoint = source["checkpoint"]
        origin = runs.GENERATOR_FILE if checkpoint is None else f"checkpoint at step {checkpoint}"
        print(f"run {args.run_dir}, {origin}")
    print(metrics.format_report(report))
    return EXIT_OK


def _check_evaluate_options(args) -> None:
    """Reject out-of-range evaluate options before TensorFlow loads."""
    if not 2 <= args.samples <= MAX_EVALUATE_SAMPLES:
        raise UsageError(
            f"--samples must be an integer from 2 to {MAX_EVALUATE_SAMPLES} (the test images to compare "
            f"with), got {args.samples}; the default is {DEFAULT_EVALUATE_SAMPLES}."
        )
    if not 0 <= args.seed <= MAX_SEED - args.samples + 1:
        raise UsageError(
            f"--seed must be an integer from 0 to {MAX_SEED - args.samples + 1}, so that the "
            f"{args.samples} seeds stay at most {MAX_SEED}; got {args.seed}."
        )
    if args.checkpoint is not None and args.checkpoint < 0:
        raise UsageError(f"--checkpoint must be a step of 0 or more, got {args.checkpoint}.")


def _dataset_of_run(run_dir: Path, data_source: str) -> str:
    """Return the classifier dataset of a run's data, or raise UsageError naming --dataset."""
    from gan import metrics

    dataset = metrics.dataset_of_source(data_source)
    if dataset is None:
        raise UsageError(
            f"run {run_dir} trains on data {format_value(data_source)}, which has no shipped classifier "
            f"(classifiers exist for {', '.join(EVALUATE_DATASETS)}). If its images are MNIST digits or "
            "Fashion-MNIST articles, pass --dataset mnist or --dataset fashion_mnist."
        )
    return dataset


def _evaluated_checkpoint(run_dir: Path, step: int | None) -> int | None:
    """Return the step of the checkpoint that load_generator reads, or None for generator.keras."""
    from gan import checkpoints, runs

    if step is not None:
        return step
    available = checkpoints.list_checkpoints(run_dir / runs.CHECKPOINTS_DIR)
    return available[-1].step if available else None


# Entry point ----------------------------------------------------------------

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

COMMANDS = {
    "train": cmd_train,
    "stop": cmd_stop,
    "status": cmd_status,
    "list": cmd_list,
    "generate": cmd_generate,
    "evaluate": cmd_evaluate,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits with status 2 on a usage error
    # TensorFlow's native INFO to ERROR lines (CUDA probing on machines without
    # a GPU, grappler notes) bury the trainer's own log. Set the variable to 0 to see them.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.basicConfig(level=logging.INFO, format=_LOG_FORMAT, stream=sys.stderr)
    # TensorFlow's absl logger reports every checkpoint shard at INFO, and its "tensorflow" logger
    # every collective operation that a multi_worker trainer builds.
    logging.getLogger("absl").setLevel(logging.WARNING)
    logging.getLogger("tensorflow").setLevel(logging.WARNING)
    try:
        return COMMANDS[args.command](args)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_FAILURE
    except BrokenPipeError:
        # The reader of stdout has gone (`| head`); drop the rest of the output quietly.
        with contextlib.suppress(OSError, ValueError, AttributeError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
    except (RunLockedError, StorageError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as error:  # a runtime failure: one line on stderr, the traceback in the log
        log.exception("%s failed", args.command)
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_FAILURE
