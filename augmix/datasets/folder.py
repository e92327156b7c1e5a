"""ImageFolder trees: `<root>/<class>/<image>` (local or s3://), the layout of ImageNet and of most
custom datasets, read as torchvision's ImageFolder numbers them (classes in sorted order, files in
sorted order within a class, any depth below the class folder).

A tree is listed once into a `FolderListing`: the relative paths as one compact bytes array and the
labels as int64 (about 40 bytes a file, so ImageNet's 1.28 million files take ~50 MB, not the
gigabyte that Python strings and FileInfo objects would). Class folders are listed in parallel
(one listing per class: on S3 that is a few requests each). Files are read by whoever needs their
bytes: the training actors piece by piece, or `read_folder` for a test split.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow.fs as pafs

from augmix.datasets.table import ImageTable
from augmix.errors import InputError, MissingInput
from augmix.storage import Location, locate

# torchvision's IMG_EXTENSIONS (ImageFolder), compared case-insensitively (ImageNet uses .JPEG)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
IO_THREADS = 16  # concurrent listings / reads: object stores answer each request in tens of ms
TEST_SPLIT_NAMES = ("val", "test", "validation")


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not os.path.basename(name).startswith(".")


@dataclass(frozen=True)
class FolderListing:
    """The image files of one tree. paths: bytes [N] (UTF-8, relative to the root, "class/name.JPEG");
    labels: int64 [N], indices into classes; rows in ImageFolder order."""

    root: Location
    paths: np.ndarray
    labels: np.ndarray
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, indices: np.ndarray) -> "FolderListing":
        return FolderListing(self.root, self.paths[indices], self.labels[indices], self.classes)

    def head(self, count: int) -> "FolderListing":
        """`count` rows (all when count <= 0) picked round-robin over the classes (the first file of
        every class, then the second, ...), kept in ImageFolder order: the meaning of data.limit and
        eval.limit here, since the first N rows of a class-sorted tree would all be one class."""
        if count <= 0 or count >= len(self):
            return self
        starts = np.searchsorted(self.labels, self.labels, side="left")  # labels are sorted
        rank = np.arange(len(self)) - starts
        order = np.lexsort((self.labels, rank))  # by rank within class, then class
        return self.take(np.sort(order[:count]))

    def read(self, rows: np.ndarray | None = None, threads: int = IO_THREADS) -> list[bytes]:
        """The encoded bytes of `rows` (all when None), read concurrently."""
        paths = self.paths if rows is None else self.paths[rows]
        return read_files(self.root, paths, threads)

    def table(self, threads: int = IO_THREADS) -> ImageTable:
        """All rows as an ImageTable of encoded bytes."""
        images = np.empty(len(self), dtype=object)
        images[:] = self.read(threads=threads)
        return ImageTable(images, self.labels.astype(np.int64), list(self.classes), self.root.display)


def read_files(root: Location, paths: np.ndarray, threads: int = IO_THREADS) -> list[bytes]:
    """Bytes of root/path for each relative path (bytes or str); a missing file is one line naming it."""

    def read(path) -> bytes:
        location = root.join(path.decode("utf-8") if isinstance(path, bytes) else str(path))
        with location.open_input_file() as handle:
            return handle.read()

    if len(paths) <= 1 or threads <= 1:
        return [read(path) for path in paths]
    with ThreadPoolExecutor(max_workers=min(threads, len(paths))) as pool:
        return list(pool.map(read, paths))


def _entries(location: Location, recursive: bool) -> list[pafs.FileInfo]:
    try:
        return location.entries(recursive)
    except MissingInput:
        raise MissingInput(f"image folder not found: {location.display}") from None


def _check_root(root: Location) -> None:
    info = root.info()
    if info.type == pafs.FileType.NotFound:
        raise MissingInput(f"image folder not found: {root.display}")
    if info.type != pafs.FileType.Directory:
        raise InputError(f"{root.display} is a file; data.name 'folder' needs a folder of class subfolders "
                         "(<root>/<class>/<image>)")


def folder_classes(path: str | os.PathLike, filesystem: pafs.FileSystem | None = None) -> list[str]:
    """The class names of a tree (its subfolders, sorted); image files beside them are an error."""
    root = locate(path, filesystem)
    _check_root(root)
    classes, stray = [], []
    for entry in _entries(root, recursive=False):
        name = entry.base_name
        if name.startswith("."):
            continue
        if entry.type == pafs.FileType.Directory:
            classes.append(name)
        elif is_image_name(name):
            stray.append(name)
    if stray:
        raise InputError(f"{root.display}: image file '{sorted(stray)[0]}' at the class level; a folder source holds "
                         "one subfolder per class (<root>/<class>/<image>), images only inside them")
    if not classes:
        raise InputError(f"{root.display}: no class subfolders; a folder source is <root>/<class>/<image>")
    return sorted(classes)


def list_folder(path: str | os.PathLike, classes: list[str] | None = None,
                filesystem: pafs.FileSystem | None = None) -> FolderListing:
    """List a tree once. With `classes` (the training split's names), labels index into them and a
    class folder not among them is an error (a test split must not invent classes)."""
    root = locate(path, filesystem)
    present = folder_classes(path, filesystem)
    if classes is not None:
        unknown = [name for name in present if name not in set(classes)]
        if unknown:
            raise InputError(f"{root.display}: class folder '{unknown[0]}' is not a training class "
                             f"({len(classes)} classes in the training split); a test split may only hold those")
    classes = list(classes) if classes is not None else present

    def files_of(name: str) -> list[str]:
        folder = root.join(name)
        prefix = folder.path.rstrip("/") + "/"
        found = sorted(f"{name}/{entry.path[len(prefix):]}" for entry in _entries(folder, recursive=True)
                       if entry.type == pafs.FileType.File and entry.path.startswith(prefix)
                       and is_image_name(entry.base_name))
        if not found:
            raise InputError(f"{folder.display}: class folder holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
                             "remove the folder or add its images")
        return found

    with ThreadPoolExecutor(max_workers=min(IO_THREADS, len(present))) as pool:
        per_class = list(pool.map(files_of, present))
    index = {name: i for i, name in enumerate(classes)}
    paths = np.array([p.encode("utf-8") for files in per_class for p in files], dtype=np.bytes_)
    labels = np.concatenate([np.full(len(files), index[name], dtype=np.int64) for name, files in zip(present, per_class)])
    order = np.argsort(labels, kind="stable")  # given classes may order the folders differently
    return FolderListing(root, paths[order], labels[order], classes)


def read_folder(path: str | os.PathLike, *, limit: int = 0, classes: list[str] | None = None,
                filesystem: pafs.FileSystem | None = None) -> ImageTable:
    """A tree as an ImageTable of encoded bytes (`limit` rows round-robin over the classes when > 0)."""
    return list_folder(path, classes, filesystem).head(limit).table()


def split_root(path: str | os.PathLike, split: str, test_path: str | None = None,
               filesystem: pafs.FileSystem | None = None, what: str = "folder") -> str:
    """Where a split of a folder (or WebDataset) source lives: `test_path` for "test" when given;
    `<path>/train` and `<path>/val|test` when `path` holds a train/ folder (the dataset's root);
    otherwise `path` is the training split and the test split its sibling val/, test/ or validation/.
    A path containing "{split}" names both ("train" and "val")."""
    text = os.fspath(path).rstrip("/")
    if split == "test" and test_path:
        return os.fspath(test_path).rstrip("/")
    if "{split}" in text:
        return text.replace("{split}", "train" if split == "train" else "val")
    root = locate(text, filesystem)
    if root.join("train").is_dir():
        if split == "train":
            return f"{text}/train"
        for name in TEST_SPLIT_NAMES:
            if root.join(name).is_dir():
                return f"{text}/{name}"
    elif split == "train":
        return text
    else:
        head = text.rpartition("/")[0]
        for name in TEST_SPLIT_NAMES:
            sibling = f"{head}/{name}" if head else name
            if sibling != text and locate(sibling, filesystem).is_dir():
                return sibling
    raise MissingInput(f"no test split for {what} source {root.display}: expected a sibling folder "
                            f"{', '.join(n + '/' for n in TEST_SPLIT_NAMES)} beside it (or inside it, next to "
                            "train/), or set data.test_path")
