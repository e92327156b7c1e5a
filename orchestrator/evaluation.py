"""`augmix evaluate`: fan the corruption × severity table out over the cluster, then aggregate.

The clean test set and the model weights go into the object store once; every cell is one Ray
task that reads both, scores its images and writes its own result under `<out>/eval/cells/`.
A rerun lists that folder and only schedules what is missing, so an interrupted evaluation
resumes where it stopped; cells that keep failing after their retries are listed at the end
while everything that finished stays written and aggregated.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from augmix import storage
from augmix.corruptions import CORRUPTIONS, EXTRA_CORRUPTIONS
from orchestrator.config import Config
from workers.evaluate import CLEAN, EvaluationCell, evaluation_task


class EvaluationIncomplete(RuntimeError):
    """Some cells failed after all retries; the finished ones are kept."""


@dataclass(frozen=True)
class TestSet:
    images: torch.Tensor  # uint8 [N,3,H,W]
    labels: torch.Tensor  # int64 [N]
    classes: list[str]


def cells_for(config: Config) -> list[EvaluationCell]:
    """Clean plus every requested corruption at every requested severity."""
    names = list(config.eval.corruptions or CORRUPTIONS)
    if config.eval.extra:
        names += [name for name in EXTRA_CORRUPTIONS if name not in names]
    return [EvaluationCell(CLEAN, 0)] + [EvaluationCell(n, s) for n in names for s in config.eval.severities]


def eval_uri(config: Config) -> str:
    return storage.join(config.storage.uri, "eval")


def cells_uri(config: Config) -> str:
    return storage.join(eval_uri(config), "cells")


def finished_cells(config: Config) -> set[EvaluationCell]:
    names = storage.list_names(cells_uri(config))
    return {cell for cell in map(EvaluationCell.from_file_name, names) if cell is not None}


def load_images(config: Config, split: str = "test") -> TestSet:
    """A split as uint8 NCHW: the test split's first eval.limit images, or the training split's
    first data.limit."""
    from augmix.datasets import load_split

    test = split == "test"
    path = (config.data.test_path or config.data.path) if test else config.data.path
    table = load_split(config.data.name, split, path=path, limit=config.eval.limit if test else config.data.limit,
                       seed=config.data.seed, image_size=config.data.image_size,
                       synthetic_size=config.data.synthetic_test_size if test else config.data.synthetic_train_size,
                       download=config.data.download, image_column=config.data.image_column,
                       label_column=config.data.label_column)
    images = torch.from_numpy(np.ascontiguousarray(table.decoded())).permute(0, 3, 1, 2).contiguous()
    return TestSet(images, torch.from_numpy(table.labels.astype(np.int64)), list(table.classes))


def resolve_model_uri(checkpoint: str) -> str:
    """Accept the model file itself or a run folder that holds model/model.pt."""
    if checkpoint.endswith(".pt"):
        return checkpoint
    return storage.join(checkpoint, "model", "model.pt")


def load_model_state(checkpoint: str) -> dict:
    import io

    uri = resolve_model_uri(checkpoint)
    state = torch.load(io.BytesIO(storage.read_bytes(uri)), map_location="cpu", weights_only=False)
    for key in ("model_name", "num_classes", "state_dict"):
        if key not in state:
            raise ValueError(f"{uri} is not an augmix model file: missing {key!r} (train with `augmix train`)")
    return state


def _task_options(config: Config, gpus_available: float) -> dict:
    use_gpu = gpus_available > 0 and config.scaling.use_gpu
    return {"num_cpus": config.eval.cpus_per_cell, "num_gpus": config.eval.gpus_per_cell if use_gpu else 0,
            "max_retries": config.eval.max_retries, "retry_exceptions": True}


def run_cells(config: Config, cells: list[EvaluationCell], state: dict, test_set: TestSet) -> list[EvaluationCell]:
    """Schedule the cells as Ray tasks, show progress, return the cells that failed for good."""
    import ray
    from tqdm import tqdm

    remote = ray.remote(evaluation_task).options(**_task_options(config, ray.cluster_resources().get("GPU", 0)))
    state_ref, images_ref, labels_ref = ray.put(state), ray.put(test_set.images), ray.put(test_set.labels)
    options = {"preset": config.eval.preset, "seed": config.eval.seed, "batch_size": config.eval.batch_size,
               "cells_uri": cells_uri(config), "threads": max(1, int(config.eval.cpus_per_cell)),
               "corrupted_path": config.eval.corrupted_path if config.eval.source == "materialized" else None,
               "limit": config.eval.limit}
    pending = {remote.remote(cell, state_ref, images_ref, labels_ref, options): cell for cell in cells}
    failed: list[EvaluationCell] = []
    images_done, started = 0, time.monotonic()
    with tqdm(total=len(cells), desc="evaluation cells", unit="cell", dynamic_ncols=True) as progress:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            cell = pending.pop(ready[0])
            try:
                summary = ray.get(ready[0])
                images_done += summary["images"]
            except Exception as error:  # noqa: BLE001 - a cell that exhausted its retries
                failed.append(cell)
                progress.write(f"cell {cell.key} failed after {config.eval.max_retries} retries: "
                               f"{str(error).splitlines()[-1]}")
            progress.set_postfix(images_per_s=f"{images_done / max(time.monotonic() - started, 1e-9):.0f}")
            progress.update(1)
    return failed


def evaluate(config: Config, checkpoint: str, address: str | None = None) -> dict:
    """Score every missing cell, then aggregate all cells into results.json, Parquet, report, plots."""
    from orchestrator.ray_session import ensure_ray
    from orchestrator.report import aggregate, write_report

    storage.check_writable(config.storage.uri)
    state = load_model_state(checkpoint)
    cells = cells_for(config)
    done = finished_cells(config)
    todo = [cell for cell in cells if cell not in done]
    print(f"evaluation: {len(cells)} cells, {len(cells) - len(todo)} already finished in {cells_uri(config)}")
    failed: list[EvaluationCell] = []
    if todo:
        ensure_ray(address)
        failed = run_cells(config, todo, state, load_images(config))
    finished = [cell for cell in cells if cell not in set(failed)]
    results = aggregate(config, finished)
    write_report(config, results)
    if failed:
        missing = ", ".join(cell.key for cell in failed)
        raise EvaluationIncomplete(f"{len(failed)} of {len(cells)} cells failed and are missing: {missing}; "
                                   f"rerun `augmix evaluate` with the same --out to retry only those")
    return results
