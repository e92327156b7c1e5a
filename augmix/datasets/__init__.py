"""Dataset readers: every source becomes an `ImageTable` (uint8 HWC images or encoded bytes,
int64 labels, class names), the form the Ray side turns into a Ray Dataset of {image, label}.

Sources: "synthetic" (generated, offline), "cifar10" / "cifar100" (the python-version folders,
downloaded with torchvision only when allowed), "parquet" (encoded images, local or s3://),
"folder" (ImageFolder class subfolders) and "webdataset" (tar shards), local or s3://.
Corrupted test sets in the CIFAR-10-C layout (`read_corrupted` / `write_corrupted`) or the
ImageNet-C folder layout (`<corruption>/<severity>/<class>/<image>`, read by the same
`read_corrupted`).
"""
from __future__ import annotations

import os

import pyarrow.fs as pafs

from augmix.datasets.cifar import read_cifar
from augmix.datasets.cifar_c import SEVERITIES, list_corruptions, read_corrupted, write_corrupted
from augmix.datasets.folder import FolderListing, folder_classes, list_folder, read_folder, split_root
from augmix.datasets.parquet import parquet_files, read_parquet, split_location
from augmix.datasets.split import train_validation_split
from augmix.datasets.synthetic import CLASSES as SYNTHETIC_CLASSES
from augmix.datasets.synthetic import generate_synthetic, synthetic_table
from augmix.datasets.table import ImageTable, check_labels, decode_images
from augmix.datasets.webdataset import IMAGE_KEYS, LABEL_KEY, read_webdataset, shard_files
from augmix.errors import InputError

SOURCES = ("synthetic", "cifar10", "cifar100", "parquet", "folder", "webdataset")
SPLITS = ("train", "validation", "test")

__all__ = [
    "FolderListing",
    "IMAGE_KEYS",
    "ImageTable",
    "LABEL_KEY",
    "SEVERITIES",
    "SOURCES",
    "SPLITS",
    "SYNTHETIC_CLASSES",
    "check_labels",
    "decode_images",
    "folder_classes",
    "list_folder",
    "read_folder",
    "read_webdataset",
    "shard_files",
    "split_root",
    "generate_synthetic",
    "list_corruptions",
    "load_split",
    "parquet_files",
    "read_cifar",
    "read_corrupted",
    "read_parquet",
    "split_location",
    "synthetic_table",
    "train_validation_split",
    "write_corrupted",
]


def load_split(
    name: str,
    split: str,
    path: str | os.PathLike | None = None,
    limit: int = 0,
    *,
    validation_fraction: float = 0.0,
    seed: int = 0,
    download: bool = False,
    decode: bool = False,
    image_column: str = "image",
    label_column: str = "label",
    classes: list[str] | None = None,
    filesystem: pafs.FileSystem | None = None,
    synthetic_train_size: int = 50_000,
    synthetic_test_size: int = 10_000,
    image_size: int = 32,
    test_path: str | os.PathLike | None = None,
    image_key: str = IMAGE_KEYS,
    label_key: str = LABEL_KEY,
) -> ImageTable:
    """One split of a source, as an ImageTable.

    split: "train", "validation" or "test". With validation_fraction > 0, "train" and
    "validation" partition the source's training rows (stratified by label, chosen by `seed`);
    `limit` (first N rows, 0 = all) applies to the source split before that partition.
    path: the CIFAR folder (or its parent), or the Parquet dataset (a directory with
    train.parquet / test.parquet or train/ / test/, or a path containing "{split}"); unused for
    "synthetic", which draws train and test from different streams of `seed`.
    For "folder" and "webdataset", path is the training split or the dataset's root (see
    augmix.datasets.folder.split_root), `test_path` overrides where the test split is, and `limit`
    picks rows round-robin over the classes (folder) or the first rows in shard order (webdataset);
    a folder test split is labelled with the training folder's class names.
    decode: Parquet only; decode the bytes now instead of leaving that to the pipeline.
    """
    if name not in SOURCES:
        raise InputError(f"unknown dataset {name!r}; allowed: {', '.join(SOURCES)}")
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    if limit < 0:
        raise InputError(f"limit {limit} is negative; allowed: 0 (all) or a positive row count")
    if split == "validation" and validation_fraction <= 0:
        raise InputError("split 'validation' needs validation_fraction > 0 (it is held out of train)")
    source_split = "test" if split == "test" else "train"
    if name == "synthetic":
        size = synthetic_test_size if source_split == "test" else synthetic_train_size
        table = synthetic_table(source_split, min(limit, size) if limit > 0 else size, seed=seed, image_size=image_size)
    elif name in ("cifar10", "cifar100"):
        table = read_cifar(name, source_split, path, limit=limit, download=download, filesystem=filesystem)
    elif name in ("folder", "webdataset"):
        if path is None:
            raise InputError(f"dataset {name!r} needs a path (local folder or s3:// URI)")
        location = split_root(path, source_split, test_path, filesystem, what=name)
        if name == "folder":
            train_classes = classes
            if train_classes is None and source_split == "test":
                try:  # the test split is labelled as the model was trained: by the training classes
                    train_classes = folder_classes(split_root(path, "train", None, filesystem), filesystem)
                except FileNotFoundError:
                    train_classes = None
            table = read_folder(location, limit=limit, classes=train_classes, filesystem=filesystem)
        else:
            table = read_webdataset(location, limit=limit, image_keys=image_key, label_key=label_key,
                                    classes=classes, filesystem=filesystem)
    else:
        if path is None:
            raise InputError("dataset 'parquet' needs a path (local directory/file or s3:// URI)")
        table = read_parquet(
            split_location(path, source_split, filesystem),
            image_column=image_column,
            label_column=label_column,
            classes=classes,
            limit=limit,
            decode=decode,
            filesystem=filesystem,
        )
    if split == "test" or validation_fraction <= 0:
        return table
    train_rows, validation_rows = train_validation_split(len(table), validation_fraction, seed, table.labels)
    return table.take(validation_rows if split == "validation" else train_rows)
