"""`augmix corrupt`: materialise a -C dataset from any image dataset, fanned out on the cluster.

One Ray task per (corruption, severity, shard) (workers.materialize): the clean images go into the
object store once, each task corrupts its shard and writes it straight to the destination (local
or s3://), then a done-marker; a rerun lists the markers and schedules only the missing shards, so
an interrupted run resumes shard by shard. Two layouts (eval.corrupted_layout):
- "npy", the released CIFAR-10-C layout: `<corruption>.npy` uint8 [5N,H,W,3] (severities 1-5
  stacked) and `labels.npy`; shards land as parts and each corruption's file is assembled once all
  its parts are there;
- "folder", the released ImageNet-C layout: `<corruption>/<severity>/<class>/<row>.JPEG` at
  eval.corrupted_jpeg_quality (85, as ImageNet-C), written directly by the tasks.
"auto" writes folder for folder/webdataset sources and npy otherwise. The images are exactly those
the on-the-fly evaluation generates for the same eval.seed (one shard = one of its seeded chunks),
before the JPEG coding of the folder layout.

With `p` in eval.suites it also writes a -P set (the CIFAR-10-P layout): straight into --out with
one suite, into --out/p beside a -C set (both layouts name files `<name>.npy`).
"""
from __future__ import annotations

import io
import math
import time
from typing import TYPE_CHECKING

import numpy as np

from augmix import storage
from augmix.corruptions import ALL_CORRUPTIONS, CORRUPTIONS, EXTRA_CORRUPTIONS
from augmix.datasets.cifar_c import SEVERITIES, write_corrupted
from orchestrator.config import Config
from orchestrator.evaluation import EvaluationIncomplete
from workers.evaluate import CHUNK_SIZE
from workers.materialize import PARTS_DIR, PROGRESS_DIR, CorruptSettings, ShardTask, corrupt_shard, part_uri
from workers.perturb import generated_sequences

if TYPE_CHECKING:
    from orchestrator.pipeline import TestSet

P_SUBFOLDER = "p"


class CorruptionIncomplete(EvaluationIncomplete):
    """Some shards failed after all retries; the finished ones are kept and a rerun resumes."""


def corruption_names(config: Config) -> list[str]:
    names = list(config.eval.corruptions or CORRUPTIONS)
    if config.eval.extra:
        names += [n for n in EXTRA_CORRUPTIONS if n not in names]
    return [n for n in ALL_CORRUPTIONS if n in names]


def output_layout(config: Config) -> str:
    layout = config.eval.corrupted_layout
    if layout == "auto":
        return "folder" if config.data.name in ("folder", "webdataset") else "npy"
    return layout


def perturbed_folder(config: Config, out: str) -> str:
    """Where `augmix corrupt` writes the -P set: --out itself, or --out/p beside a -C set."""
    return storage.join(out, P_SUBFOLDER) if "c" in config.eval.suites else out


def materialize(config: Config, out: str, split: str = "test", address: str | None = None) -> list[str]:
    """The suites of eval.suites: -C into out, -P into perturbed_folder(config, out)."""
    from orchestrator.evaluation import load_images

    loaded = load_images(config, split)
    names = materialize_corrupted(config, out, loaded=loaded, address=address) if "c" in config.eval.suites else []
    if "p" in config.eval.suites:
        names += materialize_perturbed(config, perturbed_folder(config, out), loaded)
    return names


def materialize_perturbed(config: Config, out: str, loaded: "TestSet") -> list[str]:
    """Write `<out>/<perturbation>[_<difficulty>].npy` ([N, frames, H, W, 3] uint8) and labels.npy."""
    from tqdm import tqdm

    from augmix.datasets.cifar_p import write_perturbed
    from orchestrator.evaluation import p_cells_for

    cells = p_cells_for(config)
    for cell in tqdm(cells, desc=f"materialising -P sequences of {len(loaded.images)} images", unit="cell"):
        chunks = [sequences.permute(0, 1, 3, 4, 2).contiguous().numpy() for sequences in generated_sequences(
            loaded.images, cell, config.eval.preset, config.eval.frames, config.eval.seed)]
        write_perturbed(out, cell.perturbation, cell.difficulty, chunks, loaded.labels.numpy())
    print(f"wrote {len(cells)} -P sequence files of {len(loaded.images)} videos to {out}")
    return [cell.key for cell in cells]


def shard_tasks(config: Config, images: int, layout: str) -> list[ShardTask]:
    """Every (corruption, severity, shard): all 5 severities for npy (the file stacks them), the
    configured ones for the folder layout."""
    severities = SEVERITIES if layout == "npy" else config.eval.severities
    shards = math.ceil(images / CHUNK_SIZE)
    return [ShardTask(name, severity, shard) for name in corruption_names(config) for severity in severities
            for shard in range(shards)]


def finished(out: str) -> set[str]:
    return {name.removesuffix(".done") for name in storage.list_names(storage.join(out, PROGRESS_DIR))
            if name.endswith(".done")}


def run_shards(config: Config, tasks: list[ShardTask], images, labels, settings: CorruptSettings) -> list[ShardTask]:
    """Schedule the shards as Ray tasks (images put once); returns those that failed for good."""
    import ray
    from tqdm import tqdm

    remote = ray.remote(corrupt_shard).options(num_cpus=config.eval.cpus_per_cell, max_retries=config.eval.max_retries,
                                               retry_exceptions=True)
    images_ref, labels_ref = ray.put(images), ray.put(labels)
    pending = {remote.remote(task, images_ref, labels_ref, settings): task for task in tasks}
    failed, done_images, started = [], 0, time.monotonic()
    bar = tqdm(total=len(tasks), desc="corrupt shards", unit="shard", dynamic_ncols=True)
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            task = pending.pop(ready[0])
            try:
                done_images += ray.get(ready[0])
                rate = done_images / max(time.monotonic() - started, 1e-9)
                bar.set_postfix(images_per_s=f"{rate:.0f}", refresh=False)
            except Exception as error:  # noqa: BLE001 - a shard that exhausted its retries
                failed.append(task)
                reason = (str(error).strip().splitlines() or [type(error).__name__])[-1]
                bar.write(f"shard {task.key} failed after {config.eval.max_retries} retries: {reason}")
            bar.update(1)
    finally:
        bar.close()
    return failed


def assemble_npy(out: str, name: str, shards: int, labels: np.ndarray, settings: CorruptSettings) -> None:
    """`<out>/<name>.npy` from its 5 x shards parts (then its parts and done-markers are deleted: the
    file itself now says the corruption is done)."""
    by_severity = []
    for severity in SEVERITIES:
        parts = [np.load(io.BytesIO(storage.read_bytes(part_uri(settings, ShardTask(name, severity, shard)))))
                 for shard in range(shards)]
        by_severity.append(np.concatenate(parts))
    write_corrupted(out, name, by_severity, labels)
    parts, markers = storage.locate(storage.join(out, PARTS_DIR)), storage.locate(storage.join(out, PROGRESS_DIR))
    for severity in SEVERITIES:
        for shard in range(shards):
            key = ShardTask(name, severity, shard).key
            parts.join(f"{key}.npy").delete_file()
            markers.join(f"{key}.done").delete_file()


def materialize_corrupted(config: Config, out: str, split: str = "test", address: str | None = None,
                          loaded: "TestSet | None" = None) -> list[str]:
    """Write the -C set of `split` under `out` (see the module doc); returns the corruption names.
    `loaded`: the split's images when the caller already holds them."""
    from orchestrator.evaluation import load_images
    from orchestrator.ray_session import ensure_ray

    layout = output_layout(config)
    storage.check_writable(out)
    loaded = loaded or load_images(config, split)
    images, labels = loaded.images, loaded.labels
    tasks = shard_tasks(config, len(images), layout)
    done = finished(out)
    if layout == "npy":  # an assembled <corruption>.npy is done whole
        existing = set(storage.list_names(out))
        done |= {task.key for task in tasks if f"{task.corruption}.npy" in existing}
    todo = [task for task in tasks if task.key not in done]
    names = corruption_names(config)
    quality = config.eval.corrupted_jpeg_quality
    print(f"corrupt: {len(names)} corruptions x {len(tasks) // max(len(names), 1)} (severity, shard) of "
          f"{len(images)} images -> {out} ({layout} layout{f', JPEG quality {quality}' if layout == 'folder' else ''}); "
          f"{len(tasks) - len(todo)} of {len(tasks)} shards already done")
    settings = CorruptSettings(out, layout, config.eval.preset, config.eval.seed, quality, tuple(loaded.classes),
                               max(1, int(config.eval.cpus_per_cell)))
    failed = []
    if todo:
        ensure_ray(address, endpoint_url=config.storage.endpoint_url)
        failed = run_shards(config, todo, images, labels, settings)
    if layout == "npy":
        shards = math.ceil(len(images) / CHUNK_SIZE)
        failed_names = {task.corruption for task in failed}
        existing = set(storage.list_names(out))
        for name in names:
            if name not in failed_names and f"{name}.npy" not in existing:
                assemble_npy(out, name, shards, labels.numpy(), settings)
        if not failed:  # nothing left to resume: only the released layout's files remain
            for folder in (PARTS_DIR, PROGRESS_DIR):
                storage.delete_dir(storage.join(out, folder))
    if failed:
        raise CorruptionIncomplete(f"{len(failed)} of {len(tasks)} shards failed: "
                                   f"{', '.join(task.key for task in failed[:5])}{' ...' if len(failed) > 5 else ''}; "
                                   "rerun `augmix corrupt` with the same --out to redo only those")
    print(f"wrote {len(names)} corruptions of {len(images)} images to {out} ({layout} layout)")
    return names
