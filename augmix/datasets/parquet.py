"""Parquet files of encoded images (one row per image: encoded bytes + integer label).

The layout of CIFAR-10 as JPEG-in-Parquet and of what Ray Data writes: a file or a directory of files,
on a local disk or behind a URI (s3://...). Class names come from the schema metadata key
`classes` ("a,b,c" or a JSON list) when the writer stored them.
"""
from __future__ import annotations

import json
import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from augmix.datasets.table import PATH_COLUMN, ImageTable, check_labels, decode_images
from augmix.errors import BadRow, InputError, MissingInput
from augmix.storage import Location, locate

PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")
# "train.parquet", "cifar10_test.parquet", "train/": the split word ends the name's stem
_SPLIT_IN_NAME = re.compile(r"^(?P<stem>(?:.*[-_.])?)(?:train|test)(?P<suffix>(?:\.parquet|\.parq|\.pq)?)$")


def parquet_files(path: str | os.PathLike, filesystem: pafs.FileSystem | None = None) -> list[Location]:
    """The Parquet files at `path` (itself, or those under the directory, sorted by path)."""
    return locate(path, filesystem).matching_files(PARQUET_SUFFIXES, "Parquet source", "Parquet files")


def split_location(path: str | os.PathLike, split: str, filesystem: pafs.FileSystem | None = None) -> str:
    """Where a split lives, first match of:
    `path` with "{split}" filled in; `<path>/<split>.parquet`; `<path>/<split>/`; the sibling of
    `path` named with `split` in place of the other split's name (…/train.parquet → …/test.parquet);
    `path` itself for "train" (a single file or directory is the training data)."""
    text = os.fspath(path).rstrip("/")
    if "{split}" in text:
        return text.replace("{split}", split)
    root = locate(text, filesystem)
    if not root.exists():
        raise MissingInput(f"Parquet dataset not found: {root.display}")
    for candidate in (f"{split}.parquet", split):
        if root.join(candidate).exists():
            return "/".join([text, candidate])
    head, _, name = text.rpartition("/")
    named = _SPLIT_IN_NAME.match(name)
    if named:
        sibling_name = f"{named['stem']}{split}{named['suffix']}"
        sibling = f"{head}/{sibling_name}" if head else sibling_name
        if locate(sibling, filesystem).exists():
            return sibling
    if split == "train":
        return text
    raise MissingInput(
        f"no '{split}' split for {root.display}: expected {split}.parquet or a {split}/ directory "
        f"in it, a sibling named with '{split}', or a path containing '{{split}}'"
    )


def parse_classes(metadata: dict[bytes, bytes] | None) -> list[str] | None:
    """Class names from schema metadata key `classes`, or None when absent."""
    if not metadata or b"classes" not in metadata:
        return None
    text = metadata[b"classes"].decode("utf-8").strip()
    if text.startswith("["):
        return [str(name) for name in json.loads(text)]
    return [name.strip() for name in text.split(",")]


def read_parquet(
    path: str | os.PathLike,
    *,
    image_column: str = "image",
    label_column: str = "label",
    classes: list[str] | None = None,
    limit: int = 0,
    decode: bool = False,
    filesystem: pafs.FileSystem | None = None,
) -> ImageTable:
    """Read encoded images and labels (the first `limit` rows when limit > 0).

    Labels are checked against the class list (given, else from the metadata, else 0..max);
    decode=True also decodes, failing on the first bad image with its file and row.
    """
    files = parquet_files(path, filesystem)
    images: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    paths: list[np.ndarray] = []
    remaining = limit if limit > 0 else None
    for location in files:
        if remaining == 0:
            break
        table, file_classes = _read_file(location, image_column, label_column, remaining)
        classes = classes or file_classes
        file_labels = _labels(table.column(label_column), location.display)
        if classes is not None:
            check_labels(file_labels, len(classes), location.display)
        file_images = _encoded(table.column(image_column), location.display)
        if decode and len(file_images):
            file_images = decode_images(file_images, source=location.display)
        images.append(file_images)
        labels.append(file_labels)
        paths.append(table.column(PATH_COLUMN).to_numpy(zero_copy_only=False) if PATH_COLUMN in table.column_names
                     else np.full(len(file_labels), None, dtype=object))
        if remaining is not None:
            remaining -= len(file_labels)
    all_labels = np.concatenate(labels)
    if len(all_labels) == 0:
        raise InputError(f"{os.fspath(path)}: no rows")
    if classes is None:
        if all_labels.min() < 0:
            row = int(np.argmin(all_labels))
            raise BadRow(os.fspath(path), row, f"label {int(all_labels[row])} is negative")
        classes = [str(i) for i in range(int(all_labels.max()) + 1)]
    all_paths = np.concatenate(paths)
    return ImageTable(np.concatenate(images), all_labels, list(classes), os.fspath(path),
                      None if all(p is None for p in all_paths) else all_paths)


def _read_file(
    location: Location, image_column: str, label_column: str, limit: int | None
) -> tuple[pa.Table, list[str] | None]:
    try:
        with location.open_input_file() as handle:
            parquet = pq.ParquetFile(handle)
            schema = parquet.schema_arrow
            missing = [c for c in (image_column, label_column) if c not in schema.names]
            if missing:
                raise InputError(
                    f"{location.display}: no column {', '.join(map(repr, missing))}; columns are "
                    f"{', '.join(schema.names)} (set the image/label column names)"
                )
            columns = [image_column, label_column] + ([PATH_COLUMN] if PATH_COLUMN in schema.names else [])
            groups: list[pa.Table] = []
            rows = 0
            for group in range(parquet.num_row_groups):
                if limit is not None and rows >= limit:
                    break
                part = parquet.read_row_group(group, columns=columns)
                groups.append(part)
                rows += part.num_rows
            table = pa.concat_tables(groups) if groups else schema.empty_table().select(columns)
    except (pa.ArrowInvalid, OSError) as error:
        raise InputError(f"{location.display}: not a readable Parquet file ({error})") from None
    if limit is not None:
        table = table.slice(0, limit)
    return table, parse_classes(schema.metadata)


def _labels(column: pa.ChunkedArray, source: str) -> np.ndarray:
    if column.null_count:
        row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise BadRow(source, row, "label is null")
    if not pa.types.is_integer(column.type):
        raise InputError(f"{source}: label column must hold integers, got {column.type}")
    return column.to_numpy().astype(np.int64)


def _encoded(column: pa.ChunkedArray, source: str) -> np.ndarray:
    if not (pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type)):
        raise InputError(f"{source}: image column must hold encoded bytes (binary), got {column.type}")
    if column.null_count:
        row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise BadRow(source, row, "image is null")
    return column.to_numpy(zero_copy_only=False)
