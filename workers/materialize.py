"""The `augmix corrupt` worker: one Ray task corrupts one shard of the clean images at one
(corruption, severity) and writes it straight to the destination, then marks the shard done.

A shard is one chunk of the on-the-fly evaluation (workers.evaluate.CHUNK_SIZE images) with the
same seed (chunk_seed), so a materialised set holds exactly the images the evaluation would have
generated. The done-marker is written after the shard's files, so a rerun skips exactly the shards
that are complete and redoes any that a killed task left half written.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch

from augmix import storage
from augmix.corruptions import corrupt
from workers.evaluate import CHUNK_SIZE, chunk_seed

PROGRESS_DIR = ".progress"  # done-markers, one per shard
PARTS_DIR = ".parts"  # npy layout: one .npy per shard until the corruption's file is assembled


@dataclass(frozen=True)
class ShardTask:
    corruption: str
    severity: int
    shard: int

    @property
    def key(self) -> str:
        return f"{self.corruption}-{self.severity}-{self.shard:06d}"


@dataclass(frozen=True)
class CorruptSettings:
    out: str
    layout: str  # "npy" or "folder"
    preset: str
    seed: int
    quality: int
    classes: tuple[str, ...]
    threads: int = 1


def shard_rows(shard: int, total: int) -> slice:
    return slice(shard * CHUNK_SIZE, min((shard + 1) * CHUNK_SIZE, total))


def marker_uri(settings: CorruptSettings, task: ShardTask) -> str:
    return storage.join(settings.out, PROGRESS_DIR, f"{task.key}.done")


def part_uri(settings: CorruptSettings, task: ShardTask) -> str:
    return storage.join(settings.out, PARTS_DIR, f"{task.key}.npy")


def corrupt_shard(task: ShardTask, images: torch.Tensor, labels: torch.Tensor, settings: CorruptSettings) -> int:
    """Corrupt images[shard] (uint8 [N,3,H,W]) and write them; returns the number of images."""
    from augmix.datasets.imagenet_c import write_corrupted_folder

    torch.set_num_threads(settings.threads)
    rows = shard_rows(task.shard, len(images))
    generator = torch.Generator().manual_seed(chunk_seed(settings.seed, task.corruption, task.severity, task.shard))
    corrupted = corrupt(images[rows], task.corruption, task.severity, preset=settings.preset, generator=generator)
    pixels = corrupted.permute(0, 2, 3, 1).contiguous().numpy()
    if settings.layout == "folder":
        names = [f"{row:08d}" for row in range(rows.start, rows.stop)]
        write_corrupted_folder(settings.out, task.corruption, task.severity, pixels, labels[rows].numpy(),
                               settings.classes, names, quality=settings.quality)
    else:
        buffer = io.BytesIO()
        np.save(buffer, pixels, allow_pickle=False)
        storage.write_bytes(part_uri(settings, task), buffer.getvalue())
    storage.write_bytes(marker_uri(settings, task), b"")
    return len(pixels)
