"""The CIFAR-10-C layout (and, through augmix.datasets.imagenet_c, the ImageNet-C folder layout): `<corruption>.npy` uint8 [5N,H,W,3] (severity 1's N images, then
severity 2's, ...) and `labels.npy` [5N], in one directory, local or behind a URI.

The released CIFAR-10-C / CIFAR-100-C archives read the same way. Reads touch only the requested
severity's bytes: a memory map locally, ranged reads (seek + read) on object stores, so scoring
one (corruption, severity) cell never downloads the other 80% of the file.
"""
from __future__ import annotations

import ast
import os
from typing import Sequence

import numpy as np
import pyarrow.fs as pafs
from numpy.lib import format as npy_format

from augmix.corruptions._common import SEVERITIES
from augmix.errors import InputError, MissingInput
from augmix.storage import Location, is_remote, locate

LABELS_FILE = "labels.npy"
HEADER_PREFIX_BYTES = 10  # magic (6) + version (2) + header length (2, version 1.0)


def read_corrupted(
    root: str | os.PathLike,
    corruption: str,
    severity: int,
    *,
    limit: int = 0,
    filesystem: pafs.FileSystem | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N,H,W,3], labels int64 [N]) of one corruption at one severity (1-5);
    the first `limit` images of that severity when limit > 0.

    Local paths are memory-mapped; URIs, or any path when `filesystem` is given, are read with
    ranged reads of just that severity's rows.
    """
    if severity not in SEVERITIES:
        raise InputError(f"severity {severity!r} out of range; allowed: 1, 2, 3, 4, 5")
    directory = locate(root, filesystem)
    image_file = directory.join(f"{corruption}.npy")
    if not image_file.is_file() and directory.join(corruption).is_dir():  # the ImageNet-C folder layout
        from augmix.datasets.imagenet_c import read_corrupted_folder

        return read_corrupted_folder(root, corruption, severity, limit=limit, filesystem=filesystem)
    if not image_file.is_file():
        available = list_corruptions(root, filesystem=filesystem) if directory.is_dir() else []
        raise MissingInput(
            f"{image_file.display} not found; corruptions there: {', '.join(available) or 'none'}"
        )
    ranged = filesystem is not None or is_remote(root)
    read = _read_rows_ranged if ranged else _read_rows_mapped
    images_shape, images_dtype = _npy_header(image_file)
    if images_dtype != np.uint8 or len(images_shape) != 4 or images_shape[-1] != 3:
        raise InputError(f"{image_file.display}: expected uint8 [5N,H,W,3], got {images_dtype} {list(images_shape)}")
    count = _severity_count(image_file, images_shape)
    take = min(limit, count) if limit > 0 else count
    start = (severity - 1) * count
    images = read(image_file, start, take)
    label_file = directory.join(LABELS_FILE)
    labels_shape, _ = _npy_header(label_file)
    if labels_shape != (images_shape[0],):
        raise InputError(f"{label_file.display}: shape {list(labels_shape)}, expected [{images_shape[0]}] to match {image_file.display}")
    labels = read(label_file, start, take)
    if labels.dtype.kind not in "iu":
        raise InputError(f"{label_file.display}: labels must be integers, got {labels.dtype}")
    return images, labels.astype(np.int64)


def list_corruptions(root: str | os.PathLike, *, filesystem: pafs.FileSystem | None = None) -> list[str]:
    """Corruption names present under `root` (every `.npy` but labels.npy, and every folder of the
    ImageNet-C layout), sorted."""
    directory = locate(root, filesystem)
    if not directory.is_dir():
        raise MissingInput(f"corrupted dataset directory not found: {directory.display}")
    names = [
        item.base_name[: -len(".npy")]
        for item in directory.entries()
        if item.type == pafs.FileType.File and item.path.endswith(".npy")
    ]
    from augmix.datasets.imagenet_c import list_folder_corruptions

    names += list_folder_corruptions(root, filesystem=filesystem)
    return sorted(set(name for name in names if name != LABELS_FILE[: -len(".npy")]))


def write_corrupted(
    root: str | os.PathLike,
    corruption: str,
    images_by_severity: Sequence[np.ndarray] | np.ndarray,
    labels: np.ndarray,
    *,
    filesystem: pafs.FileSystem | None = None,
) -> None:
    """Write `<corruption>.npy` (5 severities stacked) and, if absent, `labels.npy` (labels tiled
    5 times); an existing labels.npy must match. Local files appear atomically (written under a
    temporary name, then renamed), so an interrupted run leaves no half file behind.
    """
    if len(images_by_severity) != len(SEVERITIES):
        raise InputError(f"need images for 5 severities, got {len(images_by_severity)}")
    labels = np.asarray(labels)
    first = np.asarray(images_by_severity[0])
    for severity, images in zip(SEVERITIES, images_by_severity):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or images.shape != first.shape:
            raise InputError(
                f"severity {severity}: images must be uint8 [N,H,W,3] of one shape {list(first.shape)}, "
                f"got {images.dtype} {list(images.shape)}"
            )
    if labels.shape != (len(first),) or labels.dtype.kind not in "iu":
        raise InputError(f"labels must be integers [{len(first)}], got {labels.dtype} {list(labels.shape)}")
    directory = locate(root, filesystem)
    directory.filesystem.create_dir(directory.path, recursive=True)
    _write_npy(directory.join(f"{corruption}.npy"), list(images_by_severity))
    label_file = directory.join(LABELS_FILE)
    tiled = np.tile(labels.astype(np.int64), len(SEVERITIES))
    if label_file.is_file():
        existing = _read_rows_ranged(label_file, 0, _npy_header(label_file)[0][0])
        if existing.shape != tiled.shape or not np.array_equal(existing, tiled):
            raise InputError(f"{label_file.display} holds different labels than those given for {corruption}")
        return
    _write_npy(label_file, [tiled])


def _severity_count(location: Location, shape: tuple[int, ...]) -> int:
    if not shape or shape[0] % len(SEVERITIES):
        raise InputError(f"{location.display}: {shape[0] if shape else 0} rows is not 5 severities x N")
    return shape[0] // len(SEVERITIES)


def _npy_header(location: Location) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from the .npy header, reading only its first bytes."""
    if not location.is_file():
        raise MissingInput(f"{location.display} not found")
    shape, _, dtype, _ = _parse_header(location)
    return shape, dtype


def _parse_header(location: Location) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran_order, dtype, data offset)."""
    with location.open_input_file() as handle:
        prefix = handle.read(HEADER_PREFIX_BYTES + 2)
        if prefix[:6] != b"\x93NUMPY":
            raise InputError(f"{location.display}: not a .npy file")
        major = prefix[6]
        if major == 1:
            header_length = int.from_bytes(prefix[8:10], "little")
            start = 10
        elif major in (2, 3):
            header_length = int.from_bytes(prefix[8:12], "little")
            start = 12
        else:
            raise InputError(f"{location.display}: unsupported .npy version {major}")
        handle.seek(start)
        header_text = handle.read(header_length).decode("latin1" if major < 3 else "utf8")
    try:
        header = ast.literal_eval(header_text)
        shape = tuple(int(n) for n in header["shape"])
        dtype = np.dtype(npy_format.descr_to_dtype(header["descr"]))
        fortran = bool(header["fortran_order"])
    except (ValueError, SyntaxError, KeyError, TypeError) as error:
        raise InputError(f"{location.display}: bad .npy header ({error})") from None
    if fortran and len(shape) > 1:
        raise InputError(f"{location.display}: Fortran-ordered arrays are not supported")
    if dtype.hasobject:
        raise InputError(f"{location.display}: object arrays are not supported")
    return shape, fortran, dtype, start + header_length


def _read_rows_ranged(location: Location, start: int, count: int) -> np.ndarray:
    """Rows [start, start+count) through one seek and one read."""
    shape, _, dtype, offset = _parse_header(location)
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    with location.open_input_file() as handle:
        handle.seek(offset + start * row_bytes)
        payload = handle.read(count * row_bytes)
    if len(payload) != count * row_bytes:
        raise InputError(f"{location.display}: truncated (wanted rows {start}..{start + count - 1} of {shape[0]})")
    return np.frombuffer(payload, dtype=dtype).reshape((count, *shape[1:])).copy()


def _read_rows_mapped(location: Location, start: int, count: int) -> np.ndarray:
    try:
        mapped = np.load(location.path, mmap_mode="r", allow_pickle=False)
    except ValueError as error:
        raise InputError(f"{location.display}: unreadable .npy ({error})") from None
    if mapped.shape[0] < start + count:
        raise InputError(f"{location.display}: truncated (wanted rows {start}..{start + count - 1} of {mapped.shape[0]})")
    return np.array(mapped[start : start + count])


def _write_npy(location: Location, parts: list[np.ndarray]) -> None:
    """One .npy of the parts stacked on axis 0, written part by part (no concatenated copy)."""
    total = sum(len(part) for part in parts)
    header = {
        "descr": npy_format.dtype_to_descr(parts[0].dtype),
        "fortran_order": False,
        "shape": (total, *parts[0].shape[1:]),
    }
    local = isinstance(location.filesystem, pafs.LocalFileSystem)
    target = f"{location.path}.partial" if local else location.path
    with location.filesystem.open_output_stream(target) as stream:
        npy_format.write_array_header_1_0(stream, header)
        for part in parts:
            stream.write(np.ascontiguousarray(part).tobytes())
    if local:
        location.filesystem.move(target, location.path)
