"""The CIFAR-10-P layout: `<perturbation>.npy` uint8 [N, frames, H, W, 3] per perturbation (the
noise ones' harder levels as `<perturbation>_2.npy`, `_3.npy`, ImageNet-P's folder names) and,
when written here, `labels.npy` [N]. The released CIFAR-10-P / CIFAR-100-P files read the same way.

Reads take a range of videos at a time (a memory map locally, one ranged read on object stores):
a whole CIFAR-10-P file is ~1 GB, so a cell streams it in chunks instead of loading it.
"""
from __future__ import annotations

import os

import numpy as np
import pyarrow.fs as pafs

from augmix.datasets.cifar_c import LABELS_FILE, _npy_header, _read_rows_mapped, _read_rows_ranged, _write_npy
from augmix.errors import InputError, MissingInput
from augmix.storage import Location, is_remote, locate


def perturbed_file_name(perturbation: str, difficulty: int = 1) -> str:
    """`gaussian_noise.npy` for difficulty 1, `gaussian_noise_2.npy` for 2 (ImageNet-P's naming)."""
    return f"{perturbation}.npy" if difficulty == 1 else f"{perturbation}_{difficulty}.npy"


def _location(root: str | os.PathLike, perturbation: str, difficulty: int,
              filesystem: pafs.FileSystem | None) -> Location:
    return locate(root, filesystem).join(perturbed_file_name(perturbation, difficulty))


def perturbed_shape(root: str | os.PathLike, perturbation: str, difficulty: int = 1, *,
                    filesystem: pafs.FileSystem | None = None) -> tuple[int, int, int, int, int]:
    """(videos, frames, H, W, 3) of one -P file, from its header; one-line errors for anything else."""
    location = _location(root, perturbation, difficulty, filesystem)
    if not location.is_file():
        raise MissingInput(f"{location.display} not found; a -P folder holds "
                                f"{perturbed_file_name(perturbation, difficulty)} for this cell")
    shape, dtype = _npy_header(location)
    if dtype != np.uint8 or len(shape) != 5 or shape[-1] != 3 or shape[1] < 2 or shape[0] < 1:
        raise InputError(f"{location.display}: {dtype} {list(shape)}; allowed: uint8 [N, frames >= 2, H, W, 3]")
    return shape  # type: ignore[return-value]


def read_perturbed(root: str | os.PathLike, perturbation: str, difficulty: int, start: int, count: int, *,
                   filesystem: pafs.FileSystem | None = None) -> np.ndarray:
    """Videos [start, start+count) of one -P file: uint8 [count, frames, H, W, 3]."""
    perturbed_shape(root, perturbation, difficulty, filesystem=filesystem)
    location = _location(root, perturbation, difficulty, filesystem)
    ranged = filesystem is not None or is_remote(root)
    return (_read_rows_ranged if ranged else _read_rows_mapped)(location, start, count)


def write_perturbed(root: str | os.PathLike, perturbation: str, difficulty: int, chunks: list[np.ndarray],
                    labels: np.ndarray, *, filesystem: pafs.FileSystem | None = None) -> None:
    """Write `<perturbation>[_<difficulty>].npy` from chunks of uint8 [n, frames, H, W, 3] (no
    concatenated copy) and, if absent, labels.npy [N]; an existing labels.npy must match."""
    first = np.asarray(chunks[0]) if chunks else np.zeros((0,), np.uint8)
    for chunk in chunks:
        if chunk.dtype != np.uint8 or chunk.ndim != 5 or chunk.shape[-1] != 3 or chunk.shape[1:] != first.shape[1:]:
            raise InputError(f"sequences must be uint8 [N, frames, H, W, 3] of one shape, got {chunk.dtype} "
                             f"{list(chunk.shape)}")
    total = sum(len(chunk) for chunk in chunks)
    labels = np.asarray(labels)
    if not chunks or labels.shape != (total,) or labels.dtype.kind not in "iu":
        raise InputError(f"labels must be integers [{total}] for {total} sequences, got {labels.dtype} {list(labels.shape)}")
    directory = locate(root, filesystem)
    directory.filesystem.create_dir(directory.path, recursive=True)
    _write_npy(directory.join(perturbed_file_name(perturbation, difficulty)), chunks)
    label_file = directory.join(LABELS_FILE)
    if label_file.is_file():
        existing = _read_rows_ranged(label_file, 0, _npy_header(label_file)[0][0])
        if not np.array_equal(existing, labels.astype(np.int64)):
            raise InputError(f"{label_file.display} holds different labels than those given for {perturbation}")
        return
    _write_npy(label_file, [labels.astype(np.int64)])
