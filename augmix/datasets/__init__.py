"""Dataset readers: every source becomes an `ImageTable` (uint8 HWC images or encoded bytes,
int64 labels, class names), the form the Ray side turns into a Ray Dataset of {image, label}.

Sources: "synthetic" (generated, offline), "cifar10" / "cifar100" (the python-version folders,
downloaded with torchvision only when allowed), "parquet" (encoded images, local or s3://).
Corrupted test sets in the CIFAR-10-C layout: `read_corrupted` / `write_corrupted`.
"""
from __future__ import annotations

import os

import pyarrow.fs as pafs

from augmix.datasets.cifar import read_cifar
from augmix.datasets.cifar_c import SEVERITIES, list_corruptions, read_corrupted, write_corrupted
from augmix.datasets.parquet import parquet_files, read_parquet, split_location
from augmix.datasets.split import train_validation_split
from augmix.datasets.synthetic import CLASSES as SYNTHETIC_CLASSES
from augmix.datasets.synthetic import generate_synthetic, synthetic_table
from augmix.datasets.table import ImageTable, check_labels, decode_images
from augmix.errors import InputError

SOURCES = ("synthetic", "cifar10", "cifar100", "parquet")
SPLITS = ("train", "validation", "test")

__all__ = [
    "ImageTable",
    "SEVERITIES",
    "SOURCES",
    "SPLITS",
    "SYNTHETIC_CLASSES",
    "check_labels",
    "decode_images",
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
) -> ImageTable:
    """One split of a source, as an ImageTable.

    split: "train", "validation" or "test". With validation_fraction > 0, "train" and
    "validation" partition the source's training rows (stratified by label, chosen by `seed`);
    `limit` (first N rows, 0 = all) applies to the source split before that partition.
    path: the CIFAR folder (or its parent), or the Parquet dataset (a directory with
    train.parquet / test.parquet or train/ / test/, or a path containing "{split}"); unused for
    "synthetic", which draws train and test from different streams of `seed`.
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
