"""The released ImageNet-C layout: `<root>/<corruption>/<severity>/<class>/<image>.JPEG`, each
severity folder an ImageFolder tree (local or s3://), read and written here.

`read_corrupted` (augmix.datasets.cifar_c) reads this layout when `<root>/<corruption>/` is a
folder instead of `<root>/<corruption>.npy`. Images are JPEG-coded at `JPEG_QUALITY` (85, the
quality, with optimised Huffman tables, that the ImageNet-C generation script saves with) unless
told otherwise.
"""
from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
import pyarrow.fs as pafs

from augmix.datasets.folder import IO_THREADS, list_folder
from augmix.datasets.table import decode_images
from augmix.storage import locate

JPEG_QUALITY = 85
SEVERITY_NAMES = ("1", "2", "3", "4", "5")


def is_folder_layout(root: str | os.PathLike, corruption: str, filesystem: pafs.FileSystem | None = None) -> bool:
    return locate(root, filesystem).join(corruption).is_dir()


def list_folder_corruptions(root: str | os.PathLike, filesystem: pafs.FileSystem | None = None) -> list[str]:
    """Corruption folders under `root` (those holding at least one severity folder 1-5), sorted."""
    directory = locate(root, filesystem)
    names = []
    for entry in directory.entries():
        if entry.type != pafs.FileType.Directory or entry.base_name.startswith("."):
            continue
        inner = directory.join(entry.base_name).entries()
        if any(e.type == pafs.FileType.Directory and e.base_name in SEVERITY_NAMES for e in inner):
            names.append(entry.base_name)
    return sorted(names)


def read_corrupted_folder(root: str | os.PathLike, corruption: str, severity: int, *, limit: int = 0,
                          classes: list[str] | None = None,
                          filesystem: pafs.FileSystem | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [N,H,W,3], int64 [N]) of `<root>/<corruption>/<severity>/` (an ImageFolder tree; labels by
    `classes`, default its own sorted class folders; `limit` rows round-robin over the classes)."""
    folder = locate(root, filesystem).join(corruption, str(severity))
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder.display} not found; severities of {corruption} are folders 1..5 "
                                "holding one folder per class")
    listing = list_folder(folder.display if filesystem is None else folder.path, classes, filesystem).head(limit)
    return decode_images(listing.read(), source=folder.display), listing.labels.astype(np.int64)


def encode_jpeg(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def write_corrupted_folder(root: str | os.PathLike, corruption: str, severity: int, images: np.ndarray,
                           labels: np.ndarray, classes: Sequence[str], names: Sequence[str], *,
                           quality: int = JPEG_QUALITY, filesystem: pafs.FileSystem | None = None) -> None:
    """Write uint8 [N,H,W,3] images as `<root>/<corruption>/<severity>/<class>/<name>.JPEG`."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 [N,H,W,3], got {images.dtype} {list(images.shape)}")
    if not (len(labels) == len(names) == len(images)):
        raise ValueError(f"{len(images)} images, {len(labels)} labels and {len(names)} names: need one each")
    folder = locate(root, filesystem).join(corruption, str(severity))
    local = isinstance(folder.filesystem, pafs.LocalFileSystem)
    if local:
        for name in sorted({classes[int(label)] for label in labels}):
            folder.filesystem.create_dir(folder.join(name).path, recursive=True)

    def write(row: int) -> None:
        target = folder.join(classes[int(labels[row])], f"{names[row]}.JPEG")
        partial = f"{target.path}.partial" if local else target.path
        with folder.filesystem.open_output_stream(partial) as stream:
            stream.write(encode_jpeg(images[row], quality))
        if local:
            folder.filesystem.move(partial, target.path)

    with ThreadPoolExecutor(max_workers=IO_THREADS) as pool:
        list(pool.map(write, range(len(images))))
