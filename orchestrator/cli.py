"""`augmix`: the command line. Each subcommand is a thin shell over one orchestrator function.

The CLI owns no settings of its own: `--config` picks a YAML file, `--set a.b=c` overrides it and
`--out` is `storage.uri`. Bad input (an InputError, wherever it was raised, Ray workers included)
ends with one line on stderr and exit code 2 (when Ray wrapped it, the whole traceback goes to a
log file the line names); anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Sequence

from augmix.errors import InputError, find_input_error
from orchestrator.config import Config, load_config
from orchestrator.ray_session import pin_local_environment

EXIT_BAD_INPUT = 2


class UsageError(InputError):
    """Bad command-line input; printed as one line, exit 2."""


def _add_config_args(parser: argparse.ArgumentParser, out_required: bool = False) -> None:
    parser.add_argument("--config", "-c", help="YAML file (a path or a name in jobs/configs/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.epochs=3 (repeatable)")
    parser.add_argument("--out", required=out_required, metavar="DIR_OR_URI",
                        help="where results go (local folder or s3://bucket/prefix): sets storage.uri")
    parser.add_argument("--address", default=None,
                        help="Ray cluster address (default: RAY_ADDRESS, else a local cluster for this run)")


def _config(args: argparse.Namespace) -> Config:
    overrides = list(args.overrides)
    if getattr(args, "out", None):
        overrides.append(f"storage.uri={args.out}")
    config = load_config(args.config, overrides)
    from augmix.storage import apply_endpoint

    apply_endpoint(config.storage.endpoint_url)
    return config


def _cmd_train(args: argparse.Namespace) -> int:
    from orchestrator.training import train

    train(_config(args), address=args.address)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from orchestrator.run import run

    run(_config(args), address=args.address)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from orchestrator.evaluation import evaluate

    evaluate(_config(args), checkpoint=args.checkpoint, address=args.address)
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from orchestrator.sweep import sweep

    sweep(_config(args), address=args.address, resume=not args.fresh)
    return 0


def _cmd_corrupt(args: argparse.Namespace) -> int:
    from orchestrator.materialize import materialize

    materialize(_config(args), out=args.out, split=args.split, address=args.address)
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from orchestrator.convert import convert

    keys = {name: value for name, value in (("image_key", args.image_key), ("label_key", args.label_key)) if value}
    convert(args.source, args.destination, shard_mb=args.shard_mb, row_group=args.row_group, seed=args.seed,
            classes_from=args.classes_from, **keys)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from orchestrator.report import compare_runs

    compare_runs(args.runs, out=args.out, names=args.names)
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    from orchestrator.submit import submit

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise UsageError("augmix submit needs a command after --, e.g. augmix submit -- run --config quickstart.yaml")
    return submit(command, address=args.address, follow=not args.no_wait, working_dir=args.working_dir)


def _cmd_job(action: str) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        from orchestrator import submit

        return getattr(submit, f"job_{action}")(args.job_id, address=args.address)

    return handler


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="augmix", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command_name", required=True, metavar="COMMAND")

    p = commands.add_parser("run", help="train, evaluate on every corruption, write the report (the main job)")
    _add_config_args(p)
    p.set_defaults(handler=_cmd_run)

    p = commands.add_parser("train", help="train with AugMix on Ray (Ray Data augmentation -> Ray Train)")
    _add_config_args(p)
    p.set_defaults(handler=_cmd_train)

    p = commands.add_parser("evaluate", help="fan-out -C / -P evaluation of a trained model (eval.suites)")
    _add_config_args(p)
    p.add_argument("--checkpoint", required=True, metavar="URI",
                   help="a model.pt written by training (or a run folder holding model/model.pt)")
    p.set_defaults(handler=_cmd_evaluate)

    p = commands.add_parser("sweep", help="Ray Tune search over lambda, width, alpha, depth (ASHA)")
    _add_config_args(p)
    p.add_argument("--fresh", action="store_true", help="start over instead of resuming an interrupted sweep")
    p.set_defaults(handler=_cmd_sweep)

    p = commands.add_parser("corrupt", help="materialise a -C dataset (CIFAR-10-C .npy or ImageNet-C folder layout, one "
                                            "Ray task per (corruption, severity, shard)) and/or a -P set (eval.suites)")
    _add_config_args(p, out_required=True)
    p.add_argument("--split", default="test", choices=["test", "train"], help="which split to corrupt")
    p.set_defaults(handler=_cmd_corrupt)

    p = commands.add_parser("convert", help="an image folder tree or WebDataset shards -> Parquet shards "
                                            "(class names in the schema metadata)")
    p.add_argument("source", metavar="SRC", help="a folder of class subfolders, or .tar shards (folder, file, "
                                                  "or pattern such as train-{000000..000146}.tar); local or s3://")
    p.add_argument("destination", metavar="DST", help="folder (local or s3://) for part-00000.parquet, ...")
    p.add_argument("--shard-mb", type=float, default=256, help="close each Parquet file at about this size (MB)")
    p.add_argument("--row-group", type=int, default=1000, help="rows per row group (a training piece reads one)")
    p.add_argument("--seed", type=int, default=0, help="order of a folder's rows (written shuffled)")
    p.add_argument("--image-key", default=None, help="WebDataset: the image member's extension(s) (default jpg;jpeg;png;webp)")
    p.add_argument("--label-key", default=None, help="WebDataset: the label member's extension (default cls)")
    p.add_argument("--classes-from", default=None, metavar="DIR",
                   help="take class names (and label numbers) from this training folder's class subfolders")
    p.set_defaults(handler=_cmd_convert)

    p = commands.add_parser("report", help="compare two or more evaluated runs side by side")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders/URIs holding results.json")
    p.add_argument("--names", nargs="*", default=None, help="labels for the runs (default: folder names)")
    p.add_argument("--out", default="comparison", metavar="DIR_OR_URI", help="where the comparison goes")
    p.set_defaults(handler=_cmd_report)

    p = commands.add_parser("submit", help="submit an augmix command as a Ray job and stream its logs")
    p.add_argument("--address", default=None, help="Ray dashboard address (default: RAY_ADDRESS, else http://127.0.0.1:8265)")
    p.add_argument("--no-wait", action="store_true", help="return after submitting instead of following the logs")
    p.add_argument("--working-dir", default=None, help="directory shipped as the job's working_dir (default: this project)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the augmix subcommand and its arguments")
    p.set_defaults(handler=_cmd_submit)

    for action, text in (("status", "show a submitted job's status"), ("stop", "stop a submitted job"),
                         ("logs", "print a submitted job's logs")):
        p = commands.add_parser(action, help=text)
        p.add_argument("job_id")
        p.add_argument("--address", default=None)
        p.set_defaults(handler=_cmd_job(action))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "address", None) and not os.environ.get("RAY_ADDRESS"):
        pin_local_environment()  # Ray reads it when first imported: a cluster we start stays on 127.0.0.1
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("augmix: interrupted; finished work is kept and a rerun resumes it", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - sorted into bad input (one line) and bugs (re-raised)
        return _report_failure(error)


def _report_failure(error: Exception) -> int:
    """One line for bad input (its cause, however deep Ray wrapped it) or an incomplete evaluation;
    a wrapped error's full traceback goes to a log file. Anything else is re-raised (a bug)."""
    import tempfile
    import traceback

    from orchestrator.evaluation import EvaluationIncomplete

    cause = find_input_error(error)
    if cause is None and not isinstance(error, EvaluationIncomplete):
        raise error
    message = str(cause if cause is not None else error).strip().splitlines()
    where = ""
    if error is not cause:
        log = os.path.join(tempfile.gettempdir(), f"augmix-error-{os.getpid()}.log")
        with open(log, "w") as handle:
            handle.write("".join(traceback.format_exception(error)))
        where = f" (traceback: {log})"
    print(f"augmix: error: {message[0] if message else type(error).__name__}{where}", file=sys.stderr)
    return EXIT_BAD_INPUT if cause is not None else 1


if __name__ == "__main__":
    sys.exit(main())
