"""`augmix convert SRC DST`: an ImageFolder tree or WebDataset shards → Parquet shards of encoded
images, for those who prefer Parquet (the `parquet` source, which streams row groups from storage).

Rows: `image` (the encoded bytes, unchanged: no re-encoding), `label` (int64) and `path` (the file's
path below the tree, or the sample's key); class names in the schema metadata key `classes` (a JSON
list), which the parquet reader takes them from. A tree is written in a seeded random order, since
a training piece reads one row group (a class-sorted file would give batches of one class);
WebDataset samples keep their shard order (shards are written shuffled). Each output file closes
at about `shard_mb` MB, in row groups of `row_group` rows.
"""
from __future__ import annotations

import json
import os
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from augmix.datasets.folder import folder_classes, list_folder
from augmix.datasets.webdataset import IMAGE_KEYS, LABEL_KEY, keys_of, samples, shard_files
from augmix.errors import InputError
from augmix.storage import absolute, locate

SCHEMA = pa.schema([("image", pa.binary()), ("label", pa.int64()), ("path", pa.string())])


def source_kind(source: str) -> str:
    """"webdataset" for .tar files, brace patterns and folders of them; "folder" for class trees."""
    text = os.fspath(source)
    if "{" in text or text.rstrip("/").endswith(".tar"):
        return "webdataset"
    try:
        folder_classes(text)
        return "folder"
    except ValueError as folder_error:
        try:
            shard_files(text)
            return "webdataset"
        except FileNotFoundError:
            raise InputError(f"{text}: neither an image folder (<root>/<class>/<image>) nor WebDataset shards "
                             f"(.tar): {folder_error}") from None


def _folder_batches(source: str, row_group: int, seed: int, classes_from: str | None):
    classes = folder_classes(classes_from) if classes_from else None
    listing = list_folder(source, classes)
    order = np.random.default_rng(np.random.SeedSequence([seed, 0xC0])).permutation(len(listing))

    def batches() -> Iterator[pa.RecordBatch]:
        for start in range(0, len(order), row_group):
            rows = order[start:start + row_group]
            yield pa.record_batch([pa.array(listing.read(rows), pa.binary()), pa.array(listing.labels[rows], pa.int64()),
                                   pa.array([p.decode("utf-8") for p in listing.paths[rows]], pa.string())],
                                  schema=SCHEMA)

    return batches(), len(listing), list(listing.classes)


def _webdataset_batches(source: str, row_group: int, image_key: str, label_key: str, classes_from: str | None):
    """Samples in shard order. Tars carry no class names: they come from `classes_from` (a tree's class
    folders), else "0".."max label", found by indexing the shards first (headers only on a local disk)."""
    from concurrent.futures import ThreadPoolExecutor

    from augmix.datasets.webdataset import index_shard

    shards = shard_files(source)
    with ThreadPoolExecutor(max_workers=8) as pool:
        indices = list(pool.map(lambda shard: index_shard(shard, image_key, label_key), shards))
    total = sum(len(index) for index in indices)
    top = max(int(index.labels.max()) for index in indices)
    classes = folder_classes(classes_from) if classes_from else [str(i) for i in range(top + 1)]
    if top >= len(classes):
        raise InputError(f"{source}: label {top} but {len(classes)} classes in {classes_from}")

    def batches() -> Iterator[pa.RecordBatch]:
        images, labels, keys = [], [], []
        for shard in shards:
            for key, _, _, label, data in samples(shard, keys_of(image_key), keys_of(label_key)[0], with_images=True):
                images.append(data)
                labels.append(label)
                keys.append(key)
                if len(labels) == row_group:
                    yield pa.record_batch([pa.array(images, pa.binary()), pa.array(labels, pa.int64()),
                                           pa.array(keys, pa.string())], schema=SCHEMA)
                    images, labels, keys = [], [], []
        if labels:
            yield pa.record_batch([pa.array(images, pa.binary()), pa.array(labels, pa.int64()),
                                   pa.array(keys, pa.string())], schema=SCHEMA)

    return batches(), total, classes


def convert(source: str, destination: str, *, shard_mb: float = 256, row_group: int = 1000, seed: int = 0,
            image_key: str = IMAGE_KEYS, label_key: str = LABEL_KEY, classes_from: str | None = None,
            progress: bool = True) -> list[str]:
    """Write `destination/part-00000.parquet`, ...; returns the files written."""
    from tqdm import tqdm

    if shard_mb <= 0 or row_group < 1:
        raise InputError(f"--shard-mb {shard_mb} and --row-group {row_group} must be positive")
    kind = source_kind(source)
    if kind == "folder":
        batches, total, classes = _folder_batches(source, row_group, seed, classes_from)
    else:
        batches, total, classes = _webdataset_batches(source, row_group, image_key, label_key, classes_from)
    target = locate(destination)
    target.filesystem.create_dir(target.path, recursive=True)
    schema = SCHEMA.with_metadata({"classes": json.dumps(classes)})
    written: list[str] = []
    writer, size, rows = None, 0, 0
    bar = tqdm(total=total, desc=f"convert {kind} -> parquet", unit="image", disable=not progress, dynamic_ncols=True)
    try:
        for batch in batches:
            if writer is None:
                name = f"part-{len(written):05d}.parquet"
                written.append("/".join([os.fspath(destination).rstrip("/"), name]))
                writer = pq.ParquetWriter(target.join(name).path, schema, filesystem=target.filesystem)
            writer.write_batch(batch, row_group_size=row_group)
            size += batch.nbytes
            rows += batch.num_rows
            bar.update(batch.num_rows)
            if size >= shard_mb * 1024 * 1024:
                writer.close()
                writer, size = None, 0
    finally:
        if writer is not None:
            writer.close()
        bar.close()
    print(f"wrote {rows} images of {len(classes)} classes in {len(written)} Parquet file(s) under "
          f"{absolute(destination)}")
    return written
