"""`augmix evaluate`: fan the corruption × severity table (-C) and the perturbation × difficulty
sequences (-P, eval.suites) out over the cluster, then aggregate.

The clean test set and the model weights go into the object store once; every cell is one Ray
task that reads both, scores its images and writes its own result under `<out>/eval/cells/`.
A rerun lists that folder and only schedules what is missing, so an interrupted evaluation
resumes where it stopped; cells that keep failing after their retries are listed at the end
while everything that finished stays written and aggregated. `eval/spec.json` records what the
cells were computed from (model digest, test set, seed, source) so a rerun never mixes cells of
a different model or test set into one table; -P cells live under `<out>/eval/p_cells/`, guarded
by the same spec plus their own keys (frames, -P folder) in `eval/p_spec.json`.
"""
from __future__ import annotations

import hashlib
import io
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from augmix import storage
from augmix.corruptions import CORRUPTIONS, EXTRA_CORRUPTIONS
from augmix.errors import InputError
from augmix.perturbations import NOISE_PERTURBATIONS, TEST_PERTURBATIONS, VALIDATION_PERTURBATIONS
from orchestrator import layout
from orchestrator.pipeline import TestSet, load_images
from orchestrator.report import aggregate, write_report
from orchestrator.resources import cell_demand, ensure_schedulable
from workers.evaluate import CLEAN, CellSettings, EvaluationCell, evaluation_task
from workers.perturb import PerturbationCell, SequenceSettings, perturbation_task

if TYPE_CHECKING:  # annotations only: aggregation and reports run without pydantic (benchmarks/reproduce_cifar10.py)
    from orchestrator.config import Config

Cell = EvaluationCell | PerturbationCell


class EvaluationIncomplete(RuntimeError):
    """Some cells failed after all retries; the finished ones are kept."""


@dataclass(frozen=True)
class ModelFile:
    state: dict
    digest: str  # sha256 of the file's bytes: which weights the cells were scored with


def cells_for(config: Config) -> list[EvaluationCell]:
    """Clean plus, with the -C suite, every requested corruption at every requested severity."""
    if "c" not in config.eval.suites:
        return [EvaluationCell(CLEAN, 0)]
    names = list(config.eval.corruptions or CORRUPTIONS)
    if config.eval.extra:
        names += [name for name in EXTRA_CORRUPTIONS if name not in names]
    return [EvaluationCell(CLEAN, 0)] + [EvaluationCell(n, s) for n in names for s in config.eval.severities]


def perturbation_names(config: Config) -> list[str]:
    """The requested perturbations (default: the 10 test ones), validation ones appended on request."""
    names = list(config.eval.perturbations or TEST_PERTURBATIONS)
    if config.eval.perturbation_extra:
        names += [name for name in VALIDATION_PERTURBATIONS if name not in names]
    return names


def p_cells_for(config: Config) -> list[PerturbationCell]:
    """With the -P suite: every requested perturbation, the noise ones at every requested difficulty
    (the others have a single level, difficulty 1)."""
    if "p" not in config.eval.suites:
        return []
    return [PerturbationCell(name, difficulty) for name in perturbation_names(config)
            for difficulty in (config.eval.difficulties if name in NOISE_PERTURBATIONS else [1])]


def eval_uri(config: Config) -> str:
    return layout.eval_uri(config.storage.uri)


def cells_uri(config: Config) -> str:
    return layout.cells_uri(config.storage.uri)


def p_cells_uri(config: Config) -> str:
    return layout.p_cells_uri(config.storage.uri)


def finished_cells(config: Config) -> set[Cell]:
    """Cells with a result file, -C and -P."""
    found: set[Cell] = set()
    for uri, parse in ((cells_uri(config), EvaluationCell.from_file_name),
                       (p_cells_uri(config), PerturbationCell.from_file_name)):
        found |= {cell for cell in map(parse, storage.list_names(uri)) if cell is not None}
    return found


# --- inputs ---------------------------------------------------------------------------------------

def load_model_file(checkpoint: str) -> ModelFile:
    """The weights and their digest, from the model file itself or a run folder holding model/model.pt."""
    uri = layout.resolve_model_uri(checkpoint)
    data = storage.read_bytes(uri)
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means "not a model file"
        raise InputError(f"{uri} is not a torch model file ({type(error).__name__}); "
                         "pass the model.pt that `augmix train` writes") from None
    missing = [key for key in ("model_name", "num_classes", "state_dict") if key not in state]
    if missing:
        raise InputError(f"{uri} is not an augmix model file: missing {missing} (train with `augmix train`)")
    return ModelFile(state, hashlib.sha256(data).hexdigest())


def evaluation_spec(config: Config, model_digest: str) -> dict:
    """Everything a cell's numbers depend on besides its own (corruption, severity)."""
    data, evaluation = config.data, config.eval
    return {"model_sha256": model_digest, "data": [data.name, data.path, data.test_path, data.seed, data.image_size,
                                                   data.synthetic_test_size],
            "limit": evaluation.limit, "seed": evaluation.seed, "preset": evaluation.preset,
            "source": evaluation.source, "corrupted_path": evaluation.corrupted_path}


def sequence_spec(config: Config, model_digest: str) -> dict:
    """What -P cells depend on beyond the evaluation spec: sequence length and the -P folder."""
    return {**evaluation_spec(config, model_digest), "frames": config.eval.frames,
            "perturbed_path": config.eval.perturbed_path}


def check_spec(config: Config, model_digest: str) -> None:
    """Record the spec(s) on the first run; refuse to resume cells computed from a different one."""
    _check_recorded(config, layout.spec_uri(config.storage.uri), evaluation_spec(config, model_digest))
    if "p" in config.eval.suites:
        _check_recorded(config, layout.p_spec_uri(config.storage.uri), sequence_spec(config, model_digest))


def _check_recorded(config: Config, uri: str, spec: dict) -> None:
    if not storage.exists(uri):
        storage.write_json(uri, spec)
        return
    recorded = storage.read_json(uri)
    changed = sorted(key for key in spec if recorded.get(key) != spec[key])
    if changed:
        raise InputError(f"{eval_uri(config)} holds cells of another evaluation (differs in {', '.join(changed)}); "
                         "use a new --out, or delete that eval/ folder to recompute")


# --- the fan-out ------------------------------------------------------------------------------------

def task_options(config: Config, gpus_in_cluster: float) -> dict:
    """Ray resources per cell: a GPU share when the cluster has GPUs (several small models per
    GPU), else CPUs only; failed cells are retried, application errors included."""
    gpus = config.eval.gpus_per_cell if gpus_in_cluster > 0 else 0.0
    return {"num_cpus": config.eval.cpus_per_cell, "num_gpus": gpus,
            "max_retries": config.eval.max_retries, "retry_exceptions": True}


def cell_settings(config: Config) -> CellSettings:
    materialized = config.eval.source == "materialized"
    return CellSettings(preset=config.eval.preset, seed=config.eval.seed, batch_size=config.eval.batch_size,
                        cells_uri=cells_uri(config), corrupted_path=config.eval.corrupted_path if materialized else None,
                        limit=config.eval.limit, threads=max(1, int(config.eval.cpus_per_cell)))


def sequence_settings(config: Config) -> SequenceSettings:
    return SequenceSettings(preset=config.eval.preset, seed=config.eval.seed, batch_size=config.eval.batch_size,
                            cells_uri=p_cells_uri(config), frames=config.eval.frames,
                            perturbed_path=config.eval.perturbed_path, limit=config.eval.limit,
                            threads=max(1, int(config.eval.cpus_per_cell)))


class Progress:
    """Cells done / total, images/s (model inputs: a -P cell counts every frame) and ETA on one
    tqdm line (stderr; also shown in Ray job logs)."""

    def __init__(self, total: int):
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc="evaluation cells", unit="cell", dynamic_ncols=True)
        self.images, self.started = 0, time.monotonic()

    def done(self, images: int) -> None:
        self.images += images
        rate = self.images / max(time.monotonic() - self.started, 1e-9)
        self.bar.set_postfix(images_per_s=f"{rate:.0f}", refresh=False)
        self.bar.update(1)

    def failed(self, cell: Cell, retries: int, error: Exception) -> None:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[-1]
        self.bar.write(f"cell {cell.key} failed after {retries} retries: {reason}")
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def run_cells(config: Config, cells: list[Cell], state: dict, test_set: TestSet) -> list[Cell]:
    """Schedule the cells as Ray tasks (weights and clean images put once), return those that failed for good.

    -P cells go first: each is ~30x a -C cell's model work, so starting them early keeps the
    cluster busy to the end instead of waiting on one long cell after the short ones."""
    import ray

    gpus = ray.cluster_resources().get("GPU", 0)
    ensure_schedulable([cell_demand(config, gpus)], "the evaluation", "lower eval.cpus_per_cell or use larger nodes")
    options = task_options(config, gpus)
    tasks = {EvaluationCell: (ray.remote(evaluation_task).options(**options), cell_settings(config)),
             PerturbationCell: (ray.remote(perturbation_task).options(**options), sequence_settings(config))}
    state_ref, images_ref, labels_ref = ray.put(state), ray.put(test_set.images), ray.put(test_set.labels)
    ordered = sorted(cells, key=lambda cell: not isinstance(cell, PerturbationCell))
    pending = {}
    for cell in ordered:
        remote, settings = tasks[type(cell)]
        pending[remote.remote(cell, state_ref, images_ref, labels_ref, settings)] = cell
    failed: list[Cell] = []
    progress = Progress(len(cells))
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            cell = pending.pop(ready[0])
            try:
                progress.done(ray.get(ready[0])["images"])
            except Exception as error:  # noqa: BLE001 - a cell that exhausted its retries
                failed.append(cell)
                progress.failed(cell, config.eval.max_retries, error)
    finally:
        progress.close()
    return failed


def evaluate(config: Config, checkpoint: str, address: str | None = None) -> dict:
    """Score every missing cell, then aggregate all cells into results.json, Parquet, report, plots."""
    from orchestrator.ray_session import ensure_ray

    model = load_model_file(checkpoint)
    storage.check_writable(config.storage.uri)
    check_spec(config, model.digest)
    cells: list[Cell] = [*cells_for(config), *p_cells_for(config)]
    finished = finished_cells(config)
    todo = [cell for cell in cells if cell not in finished]
    print(f"evaluation ({' + '.join(f'-{s.upper()}' for s in config.eval.suites)}): {len(cells)} cells, "
          f"{len(cells) - len(todo)} already finished in {eval_uri(config)}")
    failed: list[Cell] = []
    if todo:
        ensure_ray(address, endpoint_url=config.storage.endpoint_url)
        failed = run_cells(config, todo, model.state, load_images(config))
    results = aggregate(config, [cell for cell in cells if cell not in set(failed)], model.state["model_name"])
    write_report(config, results)
    if failed:
        missing = ", ".join(cell.key for cell in failed)
        raise EvaluationIncomplete(f"{len(failed)} of {len(cells)} cells failed and are missing: {missing}; "
                                   f"rerun `augmix evaluate` with the same --out to retry only those")
    return results
