"""Reproduce the paper's CIFAR-10 row on one machine, without Ray: WRN-40-2, standard training
(crop + flip) vs AugMix + JSD, both for E epochs, scored on CIFAR-10-C.

Why without Ray: the GPU machine this is meant for has neither Ray nor pydantic and cannot fetch
them, so the script runs the Ray job's own pieces in one process, not a copy of them:
  data      workers.training_data.TrainingStream deals the rows into per-epoch permutations and
            workers.augment.AugmentStage turns each piece into uint8 views (crop + flip, then
            AugMix.triple), in torch DataLoader worker processes (--workers) instead of Ray Data
            actors; with --placement trainer the workers send clean crops and AugMix runs on the
            device (workers.train_loop.training_inputs), as `augmix.placement=trainer` does.
  training  workers.train_loop: build_state (the model placed by .to(device) instead of Ray's
            prepare_model), train_epoch (training_inputs + optimisation_step: SGD Nesterov, lr 0.1
            per 128, cosine per step, CE + λ·JSD), epoch_metrics and print_epoch.
  scoring   workers.evaluate.load_model + score_cell for clean and each (corruption, severity)
            cell, written under <run>/eval/cells as `augmix evaluate` writes them; then
            orchestrator.report.aggregate + write_report (results.json, report.md, plots) and
            compare_runs, so `augmix report <out>/standard <out>/augmix` reads these folders.
The Config those functions read is a plain nested dict with Config's own keys (`Settings`);
tests/test_reproduce.py checks that orchestrator.config accepts it.

Output under --out, written as it goes (a run cut off still leaves what finished):
  <run>/history.json          per-epoch metrics, rewritten after every epoch
  <run>/model/model.pt        the final weights (the DESIGN model file)
  <run>/results.json, report.md, results.parquet, *.png   the run's evaluation report
  comparison/                 `augmix report`'s table and plot of the two runs
  reproduction.md / .json     the paper-style table beside the paper's figures, with timings, per-epoch
                              histories and each run's results (under --tables when given)

    python benchmarks/reproduce_cifar10.py --epochs 30 --out runs/reproduce          # GPU
    python benchmarks/reproduce_cifar10.py --epochs 1 --limit-train 512 --limit-test 100 \\
        --model wrn10_1 --workers 1 --out /tmp/reproduce                             # CPU check
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import io
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from augmix import storage  # noqa: E402
from augmix.corruptions import CORRUPTIONS  # noqa: E402
from orchestrator.evaluation import cell_settings, cells_for, check_spec, finished_cells  # noqa: E402
from orchestrator.pipeline import TestSet, augment_stage_kwargs, load_images  # noqa: E402
from orchestrator.report import aggregate, compare_runs, write_report  # noqa: E402
from workers.augment import AugmentStage  # noqa: E402
from workers.evaluate import load_model, score_cell  # noqa: E402
from workers.train_loop import (  # noqa: E402
    LoopRuntime,
    TrainingState,
    Worker,
    build_state,
    epoch_metrics,
    print_epoch,
    train_epoch,
    trainer_augmix,
    unwrap,
    validate_epoch,
)
from workers.training_data import PIECE_COLUMNS, TableRows, TrainingStream, rows_per_trainer  # noqa: E402

SHARED_DATA = Path(os.environ.get("AUGMIX_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
DEFAULT_DATA = SHARED_DATA / "cifar10"
RUNS = ("augmix", "standard")  # AugMix first: if the call is cut off, the run the issue is about is done
LABELS = {"standard": "standard (crop + flip)", "augmix": "AugMix + JSD (λ 12)"}
# The paper's CIFAR-10 WRN-40-2 figures (Hendrycks et al. 2020: CIFAR-10-C mean error and clean error), as fractions.
PAPER = {"standard": {"clean_error": 0.052, "mean_corruption_error": 0.269},
         "augmix": {"clean_error": 0.049, "mean_corruption_error": 0.112}}
ACCEPT_RATIO = 0.55  # acceptance: AugMix's mean C error at most this times the standard run's
ACCEPT_CLEAN_POINTS = 1.5  # ... and its clean error within this many points of the standard's


class Settings(SimpleNamespace):
    """A Config-shaped view of a plain nested dict: the sections as attributes, `to_dict()` as the
    tree. The project's loop, aggregation and report functions read a Config only through such
    attributes, so this lets them run where pydantic is not installed."""

    def __init__(self, tree: dict[str, Any]) -> None:
        sections = {key: SimpleNamespace(**value) if isinstance(value, dict) else value for key, value in tree.items()}
        super().__init__(**sections)
        self._tree = copy.deepcopy(tree)

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self._tree)


def settings_tree(args: argparse.Namespace, run: str) -> dict[str, Any]:
    """The run as Config keys: the paper's CIFAR recipe, AugMix + JSD on or off."""
    data = Path(args.data)
    return {
        "name": run,
        "data": {"name": "parquet", "path": str(data / "train.parquet"), "test_path": str(data / "test.parquet"),
                 "image_column": "image", "label_column": "label", "limit": args.limit_train,
                 "validation_fraction": 0.0, "seed": 0, "download": False, "image_size": 32,
                 "synthetic_train_size": 20000, "synthetic_test_size": 2000, "crop_padding": 4, "flip": True,
                 "on_bad_image": "fail", "image_key": "jpg;jpeg;png;webp", "label_key": "cls", "train_crop": "pad",
                 "crop_scale": [0.08, 1.0], "crop_ratio": [0.75, 4 / 3], "resize": 0},
        "model": {"name": args.model, "options": {}},
        "augmix": {"enabled": run == "augmix", "width": 3, "depth": -1, "severity": 3, "alpha": 1.0,
                   "all_ops": False, "jsd": True, "lam": 12.0, "placement": args.placement},
        "train": {"epochs": args.epochs, "batch_size": 128, "lr": 0.1, "momentum": 0.9, "nesterov": True,
                  "weight_decay": 5e-4, "amp": args.amp, "channels_last": args.channels_last,
                  "compile": args.compile, "seed": args.seed, "max_steps_per_epoch": 0, "threads_per_worker": 1,
                  "validate_corrupted": False, "max_failures": 1},
        "scaling": {"num_workers": 0, "use_gpu": args.device.startswith("cuda"), "data_actors": max(args.workers, 1),
                    "data_batch_size": 128, "cpus_per_worker": 1.0, "cpus_per_data_actor": 1.0,
                    "trainer_resources": {}, "data_resources": {}},
        "storage": {"uri": str(Path(args.out) / run), "endpoint_url": None},
        "eval": {"limit": args.limit_test, "corruptions": None, "extra": False, "severities": list(args.severities),
                 "preset": "cifar", "source": "generate", "corrupted_path": None, "batch_size": args.eval_batch,
                 "seed": 0, "baseline": "none", "cpus_per_cell": 1.0, "suites": ["c"], "corrupted_layout": "auto",
                 "corrupted_jpeg_quality": 85, "gpus_per_cell": 0.25, "max_retries": 2, "perturbations": None,
                 "perturbation_extra": False, "difficulties": [1], "frames": None, "perturbed_path": None,
                 "p_baseline": None},
    }


def stage_kwargs(settings: Settings, num_classes: int, threads: int) -> dict[str, Any]:
    """AugmentStage's arguments for this run (the training job's own, data_batch_size = one trainer batch)."""
    return augment_stage_kwargs(settings) | {"num_classes": num_classes, "threads": threads}


class PieceViews(torch.utils.data.Dataset):
    """Item i = the views of the stream's i-th piece (one trainer batch), made by AugmentStage in
    whichever process asks: the DataLoader's workers stand in for the Ray Data actors."""

    def __init__(self, stream: TrainingStream, first_epoch: int, last_epoch: int, kwargs: dict[str, Any]) -> None:
        self.pieces = stream.pieces(0, first_epoch, last_epoch).to_pydict()
        self.source, self.kwargs = stream.source, kwargs
        self.stage: AugmentStage | None = None  # built in the worker that uses it

    def __len__(self) -> int:
        return len(self.pieces["epoch"])

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        if self.stage is None:
            self.stage = AugmentStage(self.source, **self.kwargs)
        piece = {name: np.array([self.pieces[name][index]], dtype=np.int64) for name in PIECE_COLUMNS}
        (batch,) = list(self.stage(piece))  # piece_rows == batch_rows: exactly one batch
        return batch


def training_batches(stream: TrainingStream, epochs: int, kwargs: dict[str, Any], workers: int,
                     pin: bool) -> Iterator[dict[str, torch.Tensor]]:
    """Every epoch's batches as one stream, workers started once (as the Ray job's one stream)."""
    loader = torch.utils.data.DataLoader(PieceViews(stream, 1, epochs, kwargs), batch_size=None, shuffle=False,
                                         num_workers=workers, pin_memory=pin,
                                         prefetch_factor=4 if workers else None)
    return iter(loader)


def worker_for(args: argparse.Namespace) -> Worker:
    """The device and its precision settings, gated on CUDA exactly as the Ray loop gates them."""
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    return Worker(0, 1, device, amp=args.amp and cuda, channels_last=args.channels_last and cuda,
                  compile=args.compile and cuda)


def train_run(settings: Settings, train_set: TestSet, worker: Worker, workers: int,
              on_epoch: Callable[[list[dict[str, Any]]], None]) -> TrainingState:
    """E epochs of the Ray loop's own epoch function on this process's device; `on_epoch` gets the
    history after each (the tables are rewritten then, so a cut-off run still shows its progress)."""
    images = np.ascontiguousarray(train_set.images.permute(0, 2, 3, 1).numpy())  # rows as the actors read them
    source = TableRows({"image": images, "label": train_set.labels.numpy()}, len(images), settings.data.path)
    batch = settings.train.batch_size
    stream = TrainingStream(source, seed=settings.train.seed, world=1,
                            rows_per_epoch=rows_per_trainer(len(images), 1, batch), piece_rows=batch)
    kwargs = stage_kwargs(settings, len(train_set.classes), threads=1 if workers else torch.get_num_threads())
    runtime = LoopRuntime(stream=stream, stage_kwargs=kwargs, num_classes=len(train_set.classes),
                          classes=train_set.classes, validation_size=0, local_mode=True)
    torch.manual_seed(settings.train.seed)
    state = build_state(settings, runtime, worker, prepare=lambda model: model.to(worker.device))
    steps, epochs = stream.rows_per_epoch // batch, settings.train.epochs
    batches = training_batches(stream, epochs, kwargs, workers, pin=worker.device.type == "cuda")
    augmix = trainer_augmix(settings)
    for epoch in range(1, epochs + 1):
        sums = train_epoch(state, batches, epoch, steps, settings, worker, augmix)
        totals = sums | validate_epoch(state, None, settings, worker) | {"skipped_before": 0}
        metrics = epoch_metrics(epoch, totals, settings, worker, state) | {"seconds": sums["time"]}
        state.epoch = epoch
        state.history.append(metrics)
        print(f"[{settings.name}] ", end="")
        print_epoch(metrics, epochs)
        storage.write_json(storage.join(settings.storage.uri, "history.json"), state.history)
        on_epoch(state.history)
    return state


def export_model(state: TrainingState, settings: Settings, classes: list[str]) -> bytes:
    """<run>/model/model.pt with the fields `augmix train` writes (DESIGN: model file); its bytes."""
    buffer = io.BytesIO()
    torch.save({"state_dict": {key: value.detach().cpu() for key, value in unwrap(state.model).state_dict().items()},
                "model_name": settings.model.name, "num_classes": len(classes), "classes": classes,
                "config": settings.to_dict(), "epoch": state.epoch, "history": state.history}, buffer)
    data = buffer.getvalue()
    storage.write_bytes(storage.join(settings.storage.uri, "model", "model.pt"), data)
    return data


def evaluate_run(settings: Settings, model_file: bytes, test_set: TestSet, device: torch.device) -> dict[str, Any]:
    """Clean + every (corruption, severity) cell through score_cell, then the project's aggregation
    and report into the run folder; cells already there for the same model are kept."""
    check_spec(settings, hashlib.sha256(model_file).hexdigest())
    cells = cells_for(settings)
    todo = [cell for cell in cells if cell not in finished_cells(settings)]
    model = load_model(torch.load(io.BytesIO(model_file), map_location="cpu", weights_only=False), device)
    cell_config, start = cell_settings(settings), time.perf_counter()
    for done, cell in enumerate(todo, 1):
        summary = score_cell(cell, model, test_set.images, test_set.labels, cell_config)
        if done % 15 == 1 or done == len(todo):
            elapsed = time.perf_counter() - start
            print(f"[{settings.name}] eval {done}/{len(todo)} cells ({summary['cell']}: error {summary['error']:.3f}), "
                  f"{done * len(test_set.labels) / elapsed:.0f} images/s, {elapsed:.1f} s", flush=True)
    results = aggregate(settings, cells, settings.model.name)
    write_report(settings, results)
    return results


def run_summary(run: str, settings: Settings, results: dict[str, Any], state: TrainingState,
                seconds: dict[str, float]) -> dict[str, Any]:
    """What the reproduction table needs from one finished run."""
    history = state.history
    return {"run": run, "epochs": state.epoch, "clean_error": results["clean_error"],
            "mean_corruption_error": results["mean_corruption_error"], "mce": results["mce"],
            "train_samples_per_s": float(np.mean([h["samples_per_s"] for h in history[1:] or history])),
            "data_wait_fraction": float(np.mean([h["data_wait_fraction"] for h in history[1:] or history])),
            "seconds": seconds, "folder": settings.storage.uri}


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def verdict(summaries: dict[str, dict[str, Any]]) -> str:
    """The issue's acceptance test on the measured figures (both runs needed)."""
    if not all(run in summaries for run in RUNS):
        return "Acceptance: needs both runs."
    aug, std = summaries["augmix"], summaries["standard"]
    if aug["mean_corruption_error"] is None or std["mean_corruption_error"] is None:
        return "Acceptance: needs every corruption at every severity."
    ratio = aug["mean_corruption_error"] / max(std["mean_corruption_error"], 1e-12)
    clean_points = 100 * (aug["clean_error"] - std["clean_error"])
    paper_ratio = PAPER["augmix"]["mean_corruption_error"] / PAPER["standard"]["mean_corruption_error"]
    met = ratio <= ACCEPT_RATIO and abs(clean_points) <= ACCEPT_CLEAN_POINTS
    return (f"AugMix / standard mean CIFAR-10-C error: **{ratio:.2f}** (paper {paper_ratio:.2f}; acceptance: "
            f"≤ {ACCEPT_RATIO}); clean error difference {clean_points:+.1f} points "
            f"(asks within ±{ACCEPT_CLEAN_POINTS}): **{'met' if met else 'not met'}**.")


def run_row(run: str, got: dict[str, Any] | None, history: list[dict[str, Any]]) -> str:
    """One line of the table: a finished run, one still training (epochs so far), or one not started."""
    paper = f"{_pct(PAPER[run]['clean_error'])} | {_pct(PAPER[run]['mean_corruption_error'])}"
    if got is None:
        progress = f"{len(history)} (training)" if history else "–"
        return f"| {LABELS[run]} | {progress} | – | – | {paper} | – | – | – | – |"
    return (f"| {LABELS[run]} | {got['epochs']} | {_pct(got['clean_error'])} | {_pct(got['mean_corruption_error'])} | "
            f"{paper} | {got['seconds']['train']:.0f} | {got['train_samples_per_s']:.0f} | "
            f"{got['data_wait_fraction']:.1%} | {got['seconds']['eval']:.0f} |")


def reproduction_markdown(summaries: dict[str, dict[str, Any]], context: dict[str, Any],
                          histories: dict[str, list[dict[str, Any]]] | None = None) -> str:
    """The paper-style table: this run's clean and mean CIFAR-10-C error beside the paper's."""
    lines = [f"# CIFAR-10 reproduction: {context['model']}, standard vs AugMix + JSD", "",
             f"{context['train_images']} training images, {context['test_images']} test images × (clean + "
             f"{context['corruptions']} corruptions × {len(context['severities'])} severities, seed 0); "
             f"device {context['device']}, torch {context['torch']}, amp {context['amp']}, "
             f"channels_last {context['channels_last']}, compile {context['compile']}, "
             f"placement {context['placement']}, {context['workers']} data workers.", "",
             "| run | epochs | clean error (%) | mean CIFAR-10-C error (%) | paper clean (%) | paper mean C (%) "
             "| train s | triples or images/s | data wait | eval s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [run_row(run, summaries.get(run), (histories or {}).get(run, [])) for run in RUNS]
    lines += ["", "Paper: WRN-40-2, 100 epochs (Hendrycks et al., ICLR 2020). " + verdict(summaries), ""]
    return "\n".join(lines)


class Tables:
    """reproduction.md / .json under --tables, rewritten after every epoch and every finished run
    (the JSON holds each finished run's results.json and every run's history so far: on the device
    machine only a few files come back, so these two carry everything), and `augmix report`'s
    comparison under --out once both runs are in."""

    def __init__(self, directory: str, out: str, context: dict[str, Any]) -> None:
        self.directory, self.out, self.context = directory, out, context
        self.summaries: dict[str, dict[str, Any]] = {}
        self.histories: dict[str, list[dict[str, Any]]] = {}
        self.results: dict[str, dict[str, Any]] = {}

    def epoch(self, run: str, history: list[dict[str, Any]]) -> None:
        self.histories[run] = list(history)
        self.write()

    def finished(self, run: str, summary: dict[str, Any], results: dict[str, Any]) -> None:
        self.summaries[run], self.results[run] = summary, results
        self.write()
        if all(name in self.summaries for name in RUNS):
            compare_runs([self.summaries[name]["folder"] for name in ("standard", "augmix")],
                         storage.join(self.out, "comparison"), names=["standard", "augmix"])

    def write(self) -> None:
        storage.write_json(storage.join(self.directory, "reproduction.json"), {
            "context": self.context, "paper": PAPER, "runs": self.summaries, "verdict": verdict(self.summaries),
            "history": self.histories, "results": self.results})
        storage.write_bytes(storage.join(self.directory, "reproduction.md"),
                            reproduction_markdown(self.summaries, self.context, self.histories).encode())


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="folder with train.parquet and test.parquet")
    parser.add_argument("--out", required=True, help="output folder (use $OUT on the device machine)")
    parser.add_argument("--tables", default=None,
                        help="where reproduction.md/.json go (default: --out); e.g. $OUT, with --out elsewhere")
    parser.add_argument("--epochs", type=int, default=30, help="epochs of each run (the paper: 100)")
    parser.add_argument("--limit-train", type=int, default=0, help="first N training images (0 = all 50,000)")
    parser.add_argument("--limit-test", type=int, default=0, help="first N test images (0 = all 10,000)")
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS), help="which runs, in this order")
    parser.add_argument("--model", default="wrn40_2", help="augmix.models name (the paper's: wrn40_2)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True, help="fp16 autocast (CUDA only)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                        help="NHWC model and inputs (CUDA only)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                        help="torch.compile the model (CUDA only; train.compile)")
    parser.add_argument("--placement", choices=("data", "trainer"), default="data",
                        help="AugMix in the data workers (CPU) or on the trainer's device")
    parser.add_argument("--workers", type=int, default=min(8, max((os.cpu_count() or 2) - 2, 0)),
                        help="DataLoader worker processes running AugmentStage (0 = in this process)")
    parser.add_argument("--severities", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--eval-batch", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0, help="train.seed (data order, augmentation, init)")
    args = parser.parse_args(argv)
    if not (Path(args.data) / "train.parquet").exists():
        parser.error(f"--data {args.data}: no train.parquet there (the CIFAR-10 JPEG-in-Parquet folder)")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    args = parse_args(argv)
    worker, started = worker_for(args), time.perf_counter()
    first = Settings(settings_tree(args, args.runs[0]))
    train_set, test_set = load_images(first, "train"), load_images(first, "test")
    print(f"data: {len(train_set.labels)} training, {len(test_set.labels)} test images decoded in "
          f"{time.perf_counter() - started:.1f} s; device {worker.device}, amp {worker.amp}, "
          f"channels_last {worker.channels_last}, compile {worker.compile}, {args.workers} data workers", flush=True)
    context = {"model": args.model, "train_images": len(train_set.labels), "test_images": len(test_set.labels),
               "corruptions": len(CORRUPTIONS), "severities": list(args.severities), "device": str(worker.device),
               "torch": torch.__version__, "amp": worker.amp, "channels_last": worker.channels_last,
               "compile": worker.compile, "placement": args.placement, "workers": args.workers,
               "load_seconds": time.perf_counter() - started}
    if worker.device.type == "cuda":
        context["device"] = torch.cuda.get_device_name(worker.device)
    tables = Tables(args.tables or args.out, args.out, context)
    for run in args.runs:
        settings = Settings(settings_tree(args, run))
        tick = time.perf_counter()
        state = train_run(settings, train_set, worker, args.workers,
                          lambda history, run=run: tables.epoch(run, history))
        model_file = export_model(state, settings, train_set.classes)
        trained = time.perf_counter()
        results = evaluate_run(settings, model_file, test_set, worker.device)
        seconds = {"train": trained - tick, "eval": time.perf_counter() - trained}
        tables.finished(run, run_summary(run, settings, results, state, seconds), results)
        print(f"[{run}] clean error {_pct(results['clean_error'])}%, mean corruption error "
              f"{_pct(results['mean_corruption_error'])}%; train {seconds['train']:.0f} s, "
              f"eval {seconds['eval']:.0f} s, {time.perf_counter() - started:.0f} s since start", flush=True)
    print(reproduction_markdown(tables.summaries, context))
    print(f"total {time.perf_counter() - started:.0f} s; tables under {args.tables or args.out}")
    return tables.summaries


if __name__ == "__main__":
    main()
