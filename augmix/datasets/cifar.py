"""CIFAR-10 / CIFAR-100 in the original "python version" folders, read without torchvision.

cifar-10-batches-py: data_batch_1..5, test_batch, batches.meta (label_names).
cifar-100-python:    train, test (fine_labels), meta (fine_label_names).
Each batch is a pickled dict whose b"data" is uint8 [N, 3072] in CHW order per row.

The pickles are read with an unpickler that only builds dicts, lists, strings and numpy arrays,
so a tampered file cannot run code. torchvision is only used to download, when asked.
"""
from __future__ import annotations

import io
import os
import pickle

import numpy as np
import pyarrow.fs as pafs

from augmix.datasets.table import ImageTable, check_labels
from augmix.errors import InputError, MissingInput
from augmix.storage import Location, locate

FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
BATCHES = {
    ("cifar10", "train"): [f"data_batch_{i}" for i in range(1, 6)],
    ("cifar10", "test"): ["test_batch"],
    ("cifar100", "train"): ["train"],
    ("cifar100", "test"): ["test"],
}
META = {"cifar10": ("batches.meta", b"label_names"), "cifar100": ("meta", b"fine_label_names")}
LABEL_KEYS = {"cifar10": b"labels", "cifar100": b"fine_labels"}
DOWNLOAD_URL = {
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
}
SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("copyreg", "_reconstructor"),
    ("builtins", "object"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
}


def default_root() -> str:
    """Where CIFAR folders are looked for when no path is given ($AUGMIX_DATA_DIR)."""
    return os.environ.get("AUGMIX_DATA_DIR", os.path.join("~", ".cache", "augmix-ray", "data"))


def read_cifar(
    name: str,
    split: str,
    path: str | os.PathLike | None = None,
    *,
    limit: int = 0,
    download: bool = False,
    filesystem: pafs.FileSystem | None = None,
) -> ImageTable:
    """CIFAR-10/100 `split` ("train" or "test") as uint8 [N,32,32,3].

    path: the cifar-10-batches-py / cifar-100-python folder itself, or a directory holding it
    (torchvision's root); a local path or a URI. download=True fetches it with torchvision when
    it is missing from a local directory.
    """
    if name not in FOLDERS:
        raise InputError(f"unknown CIFAR dataset {name!r}; allowed: {', '.join(FOLDERS)}")
    if split not in ("train", "test"):
        raise InputError(f"unknown {name} split {split!r}; allowed: train, test")
    folder = find_folder(name, path if path is not None else default_root(), download, filesystem)
    classes = _read_classes(name, folder)
    images, labels, read = [], [], 0
    for batch_name in BATCHES[(name, split)]:
        if 0 < limit <= read:
            break
        batch_images, batch_labels = _read_batch(folder.join(batch_name), LABEL_KEYS[name])
        check_labels(batch_labels, len(classes), folder.join(batch_name).display)
        images.append(batch_images)
        labels.append(batch_labels)
        read += len(batch_labels)
    table = ImageTable(np.concatenate(images), np.concatenate(labels), classes, folder.display)
    return table.head(limit)


def find_folder(
    name: str, path: str | os.PathLike, download: bool, filesystem: pafs.FileSystem | None = None
) -> Location:
    """The dataset folder at or under `path`; downloads into a local `path` when allowed."""
    root = locate(path, filesystem)
    marker = META[name][0]
    for candidate in (root, root.join(FOLDERS[name])):
        if candidate.join(marker).is_file():
            return candidate
    if download and root.is_local and filesystem is None:
        _download(name, root.path)
        return root.join(FOLDERS[name])
    raise MissingInput(
        f"{name} not found at {root.display} (looked for {marker} there and in "
        f"{FOLDERS[name]}/): download and extract {DOWNLOAD_URL[name]} into that directory, "
        f"or allow the download (download=True / data.download: true)"
    )


def write_cifar_batch(path: str | os.PathLike, images: np.ndarray, labels: np.ndarray, label_key: str) -> None:
    """Write uint8 [N,32,32,3] images in the original pickle format (tests and tools)."""
    data = np.ascontiguousarray(images.transpose(0, 3, 1, 2)).reshape(len(images), -1)
    batch = {b"data": data, label_key.encode(): [int(v) for v in labels]}
    with open(path, "wb") as handle:
        pickle.dump(batch, handle, protocol=2)


def _download(name: str, directory: str) -> None:
    import torchvision.datasets

    dataset_class = {"cifar10": torchvision.datasets.CIFAR10, "cifar100": torchvision.datasets.CIFAR100}[name]
    try:
        dataset_class(directory, train=True, download=True)
    except (OSError, RuntimeError) as error:
        raise MissingInput(
            f"{name}: download into {directory} failed ({error}); fetch {DOWNLOAD_URL[name]} and "
            f"extract it there"
        ) from None


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in SAFE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")


def _load_pickle(location: Location) -> dict:
    try:
        with location.open_input_file() as handle:
            payload = handle.read()
    except FileNotFoundError:
        raise MissingInput(f"CIFAR batch file missing: {location.display}") from None
    try:
        content = _SafeUnpickler(io.BytesIO(payload), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise InputError(f"{location.display}: not a CIFAR python batch ({error})") from None
    if not isinstance(content, dict):
        raise InputError(f"{location.display}: not a CIFAR python batch (a {type(content).__name__})")
    return content


def _read_classes(name: str, folder: Location) -> list[str]:
    file_name, key = META[name]
    meta = _load_pickle(folder.join(file_name))
    if key not in meta:
        raise InputError(f"{folder.join(file_name).display}: no {key.decode()} entry")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in meta[key]]


def _read_batch(location: Location, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    batch = _load_pickle(location)
    if b"data" not in batch or label_key not in batch:
        raise InputError(
            f"{location.display}: expected entries data and {label_key.decode()}, found "
            f"{', '.join(k.decode() if isinstance(k, bytes) else str(k) for k in batch)}"
        )
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise InputError(f"{location.display}: data must be uint8 [N, 3072], got {data.dtype} {list(data.shape)}")
    if len(labels) != len(data):
        raise InputError(f"{location.display}: {len(labels)} labels for {len(data)} images")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels
