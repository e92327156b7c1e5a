"""The dataset spec of a Config → what a training run reads.

train: a TrainingStream (workers.training_data): the rows, held once in Ray's object store when they
fit the driver (synthetic, CIFAR, Parquet up to STREAM_PARQUET_BYTES) or left in storage as Parquet
row groups (ImageNet-sized sources), and the rule that deals them out to the trainers epoch by
epoch. Each trainer builds its own Ray Data stream of AugMix views from it, once per run.
ImageFolder trees and WebDataset shards always stream: a folder is listed once here (its listing,
~40 bytes a file, goes to the object store once and the actors read the files), a WebDataset's
shards are indexed once (Ray tasks for object stores: each streams its shard once) and the actors
read only their pieces' samples.
validation: the held-out rows as a Ray Dataset {clean, label}: decoded once on the driver for
in-memory sources (a seeded, stratified sample of the training split, never the test split), or
whole Parquet files held out by seed and decoded by Ray Data tasks for streamed sources (for a
folder: a stratified sample of its files; for WebDataset: whole shards), Resize + CenterCrop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from augmix.datasets import load_split, read_parquet
from augmix.datasets.folder import FolderListing, list_folder, split_root
from augmix.datasets.parquet import parquet_files, parse_classes, split_location
from augmix.datasets.split import train_validation_split
from augmix.datasets.table import ImageTable
from augmix.datasets.webdataset import ShardIndex, index_shard, shard_files
from augmix.errors import BadRow, InputError
from workers.augment import VIEW_COLUMNS, decode_batch, decode_rows, stage_mode, validation_pieces
from workers.training_data import (
    PIECE_BATCHES,
    FolderRows,
    ParquetFragment,
    ParquetRows,
    TableRows,
    TarShard,
    TrainingStream,
    WebDatasetRows,
    plain_pieces,
    rows_per_trainer,
)

if TYPE_CHECKING:  # annotations only: the test set loads without pydantic (benchmarks/reproduce_cifar10.py)
    from orchestrator.config import Config, DataConfig

TARGET_MAX_BLOCK_BYTES = 8 * 1024 * 1024  # small blocks: the map stage and the trainers overlap
ROWS_PER_BLOCK = 1000
STREAM_PARQUET_BYTES = 2 * 1024**3  # larger Parquet sources stream from storage instead of the driver
DECODED_TABLE_BYTES = 4 * 1024**3  # in-memory rows up to this many pixel bytes are decoded once


@dataclass
class PipelineData:
    """What the trainer needs to know about the data besides the datasets themselves."""

    stream: TrainingStream  # the training rows and how they are dealt out per epoch
    validation: object | None  # ray.data.Dataset {clean, label}, None when no validation split
    classes: list[str]
    train_size: int
    validation_size: int
    columns: tuple[str, ...]
    skipped_rows: int = 0  # rows left out before training (data.on_bad_image=skip)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def read_training_table(data: DataConfig) -> ImageTable:
    """The training split of the configured source, first `data.limit` rows (all when 0); a Parquet
    folder resolves to its train file, never its test file."""
    return load_split(data.name, "train", data.path, limit=data.limit, download=data.download,
                      image_column=data.image_column, label_column=data.label_column, seed=data.seed,
                      synthetic_train_size=data.synthetic_train_size, image_size=data.image_size,
                      image_key=data.image_key, label_key=data.label_key)


@dataclass(frozen=True)
class TestSet:
    """A split decoded once on the driver for scoring (evaluation cells, `augmix corrupt`)."""

    images: torch.Tensor  # uint8 [N,3,H,W]
    labels: torch.Tensor  # int64 [N]
    classes: list[str]


def read_test_table(data: DataConfig, limit: int) -> ImageTable:
    """The test split of the configured source, first `limit` rows (all when 0): `data.test_path`
    when a Parquet source names one, else the source's own test split."""
    if data.name == "parquet" and data.test_path:
        return read_parquet(data.test_path, image_column=data.image_column, label_column=data.label_column,
                            limit=limit)
    return load_split(data.name, "test", data.path, limit, seed=data.seed, download=data.download,
                      image_column=data.image_column, label_column=data.label_column,
                      synthetic_train_size=data.synthetic_train_size,
                      synthetic_test_size=data.synthetic_test_size, image_size=data.image_size,
                      test_path=data.test_path, image_key=data.image_key, label_key=data.label_key)


def load_images(config: Config, split: str = "test") -> TestSet:
    """A split as uint8 NCHW: the test split's first eval.limit images, or the training split's
    first data.limit."""
    data = config.data
    if split == "test":
        table = read_test_table(data, config.eval.limit)
    else:
        table = load_split(data.name, split, data.path, data.limit, seed=data.seed, download=data.download,
                           image_column=data.image_column, label_column=data.label_column,
                           synthetic_train_size=data.synthetic_train_size,
                           synthetic_test_size=data.synthetic_test_size, image_size=data.image_size,
                           image_key=data.image_key, label_key=data.label_key)
    # encoded images of other sizes: Resize(data.resize) + CenterCrop(data.image_size), as validation
    pixels = table.decoded(size=data.image_size, resize=data.resize or None) if table.is_encoded else table.decoded()
    images = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).contiguous()
    return TestSet(images, torch.from_numpy(table.labels.astype(np.int64)), list(table.classes))


def split_tables(table: ImageTable, fraction: float, seed: int) -> tuple[ImageTable, ImageTable | None]:
    """(train, validation) rows held out by seed, stratified by label."""
    if fraction <= 0:
        return table, None
    train_rows, validation_rows = train_validation_split(len(table), fraction, seed, labels=table.labels)
    if len(train_rows) == 0 or len(validation_rows) == 0:
        raise InputError(f"data.validation_fraction {fraction} leaves an empty split of {len(table)} rows; "
                         "use more rows or a fraction in (0, 1) that keeps both parts non-empty")
    return table.take(train_rows), table.take(validation_rows)


def blocks_of(arrow: pa.Table, rows_per_block: int) -> list[pa.Table]:
    return [arrow.slice(start, rows_per_block) for start in range(0, arrow.num_rows, rows_per_block)]


def augment_stage_kwargs(config: Config) -> dict:
    """Constructor arguments of the AugmentStage actors for this config (the source comes with the stream)."""
    augmix = config.augmix
    return {
        "mode": stage_mode(augmix.enabled, augmix.jsd, augmix.placement),
        "width": augmix.width, "depth": augmix.depth, "severity": augmix.severity,
        "alpha": augmix.alpha, "all_ops": augmix.all_ops,
        "image_size": config.data.image_size, "crop_padding": config.data.crop_padding,
        "flip": config.data.flip, "train_crop": config.data.train_crop,
        "crop_scale": tuple(config.data.crop_scale), "crop_ratio": tuple(config.data.crop_ratio),
        "seed": config.train.seed, "batch_rows": config.scaling.data_batch_size, "on_bad_image": config.data.on_bad_image,
    }


def training_stream(config: Config, source: TableRows | FolderRows | ParquetRows | WebDatasetRows) -> TrainingStream:
    """Deal `source` out to the configured trainers: equal whole batches per trainer and epoch."""
    world = max(config.scaling.num_workers, 1)
    rows = rows_per_trainer(source.size, world, config.train.batch_size, config.train.max_steps_per_epoch)
    return TrainingStream(source, seed=config.train.seed, world=world, rows_per_epoch=rows,
                          piece_rows=config.scaling.data_batch_size * PIECE_BATCHES)


def table_rows(table: ImageTable) -> TableRows:
    """The rows into Ray's object store once: every AugMix actor of the run reads them from there."""
    import ray

    rows = {"image": table.images, "label": table.labels}
    if table.paths is not None:
        rows["path"] = table.paths
    return TableRows(ray.put(rows), len(table), table.source)


def usable_table(table: ImageTable, image_size: int, on_bad_image: str,
                 keep_encoded: bool = False) -> tuple[ImageTable, list[int]]:
    """The rows decoded once, here, when their pixels fit DECODED_TABLE_BYTES (an actor would
    otherwise decode every row again every epoch: a quarter of its time on CIFAR JPEGs), and the
    rows dropped as undecodable with on_bad_image=skip. A bad image is named by its row in the
    source and its path; with "fail" it ends the run before any training starts. `keep_encoded`
    (RandomResizedCrop, which crops each image at its own size) leaves the rows as they are."""
    if keep_encoded or not table.is_encoded or len(table) * 3 * image_size**2 > DECODED_TABLE_BYTES:
        return table, []
    try:
        return _decoded(table, image_size), []
    except BadRow as bad:
        if on_bad_image != "skip":
            raise bad.at(table.source, bad.row, table.path(bad.row)) from None
    bad_rows = []
    for row in range(len(table)):
        try:
            decode_batch(table.images[row:row + 1], image_size)
        except BadRow:
            bad_rows.append(row)
    shown = ", ".join(f"{row}" + (f" ({table.path(row)})" if table.paths is not None else "") for row in bad_rows[:5])
    print(f"data: skipping {len(bad_rows)} row(s) of {table.source} whose image cannot be decoded: {shown}"
          + (" ..." if len(bad_rows) > 5 else ""), flush=True)
    keep = np.setdiff1d(np.arange(len(table)), bad_rows)
    return _decoded(table.take(keep), image_size), bad_rows


def _decoded(table: ImageTable, image_size: int) -> ImageTable:
    images = decode_batch(table.images, image_size, source=table.source).permute(0, 2, 3, 1).numpy()
    return ImageTable(images, table.labels, table.classes, table.source, table.paths)


def validation_dataset(table: ImageTable, image_size: int, resize: int | None = None):
    """Decoded once here: {clean uint8 [3,S,S], label}."""
    import ray.data
    from ray.data.extensions import ArrowTensorArray

    clean = decode_batch(table.images, image_size, source=f"{table.source} (validation rows)", resize=resize).numpy()
    arrow = pa.table({"clean": ArrowTensorArray.from_numpy(clean), "label": pa.array(table.labels, type=pa.int64())})
    dataset = ray.data.from_blocks(blocks_of(arrow, ROWS_PER_BLOCK))  # no Ray task per block (from_arrow has one)
    return quiet(dataset)


def quiet(dataset):
    """Settings of a validation dataset, scoped to it: read every epoch inside the trainers, where a
    progress bar per epoch would only fill the log; small blocks so reading and scoring overlap."""
    dataset.context.enable_progress_bars = False
    dataset.context.target_max_block_size = TARGET_MAX_BLOCK_BYTES
    return dataset


def large_parquet_files(data: DataConfig) -> list | None:
    """The source's Parquet files when they should stream (no limit, > STREAM_PARQUET_BYTES), else None."""
    if data.name != "parquet" or data.limit:
        return None
    files = parquet_files(split_location(data.path, "train"))
    total = sum(location.info().size or 0 for location in files)
    return files if total > STREAM_PARQUET_BYTES else None


def parquet_fragments(files: list) -> tuple[ParquetFragment, ...]:
    """Every row group of `files` (from the footers), with the global index of its first row."""
    fragments, offset = [], 0
    for location in files:
        with location.filesystem.open_input_file(location.path) as handle:
            metadata = pq.ParquetFile(handle).metadata
        for group in range(metadata.num_row_groups):
            rows = metadata.row_group(group).num_rows
            if rows:
                fragments.append(ParquetFragment(location.path, group, rows, offset))
                offset += rows
    return tuple(fragments)


def parquet_rows_and_classes(files: list, label_column: str) -> tuple[int, list[str]]:
    """Row count (from the footers) and class names (schema metadata, else 0..max label) of the files."""
    rows, classes, top = 0, None, -1
    for location in files:
        with location.filesystem.open_input_file(location.path) as handle:
            parquet = pq.ParquetFile(handle)
            rows += parquet.metadata.num_rows
            classes = classes or parse_classes(parquet.schema_arrow.metadata)
            if classes is None:
                labels = parquet.read(columns=[label_column]).column(label_column).to_numpy()
                top = max(top, int(labels.max()) if len(labels) else -1)
    return rows, classes or [str(label) for label in range(top + 1)]


def streamed_parquet_datasets(config: Config, files: list) -> PipelineData:
    """Train and validation straight from storage: validation = whole files held out by seed."""
    import ray.data

    data = config.data
    if len(files) < 2 and data.validation_fraction > 0:
        raise InputError(f"data.path {data.path}: one large Parquet file cannot be split by files for "
                         "validation; write it as several files or set data.validation_fraction=0")
    order = np.random.default_rng(np.random.SeedSequence([data.seed, 0x5EED])).permutation(len(files))
    held = int(max(1, round(data.validation_fraction * len(files)))) if data.validation_fraction > 0 else 0
    validation_files = [files[i] for i in sorted(order[:held])]
    train_files = [files[i] for i in sorted(order[held:])]
    columns = [data.image_column, data.label_column]

    def read(locations: list):
        return ray.data.read_parquet([loc.path for loc in locations],
                                     filesystem=locations[0].filesystem).select_columns(columns)

    _, classes = parquet_rows_and_classes(train_files, data.label_column)
    names = {"image_column": data.image_column, "label_column": data.label_column}
    source = ParquetRows(parquet_fragments(train_files), train_files[0].filesystem, **names)
    validation, validation_size = None, 0
    if validation_files:
        validation_size, _ = parquet_rows_and_classes(validation_files, data.label_column)
        validation = quiet(read(validation_files).map_batches(
            decode_rows, fn_kwargs={"image_size": data.image_size, "resize": data.resize or None, **names},
            num_cpus=config.scaling.cpus_per_data_actor, batch_size=config.scaling.data_batch_size))
    mode = stage_mode(config.augmix.enabled, config.augmix.jsd, config.augmix.placement)
    return PipelineData(training_stream(config, source), validation, classes, source.size, validation_size,
                        VIEW_COLUMNS[mode])


def folder_rows(listing: FolderListing) -> FolderRows:
    """The listing into the object store once (paths as one bytes array: no per-file Python objects)."""
    import ray

    files = ray.put({"path": listing.paths, "label": listing.labels.astype(np.int64)})
    return FolderRows(files, len(listing), listing.root.path, listing.root.filesystem, listing.root.display)


def index_shards(shards: list, data: DataConfig) -> list[ShardIndex]:
    """Index every shard once: local shards here (headers only), remote ones as Ray tasks (each
    streams its shard once, on the cluster rather than through the driver)."""
    if all(type(shard.filesystem).__name__ == "LocalFileSystem" for shard in shards):
        return [index_shard(shard, data.image_key, data.label_key) for shard in shards]
    import ray

    task = ray.remote(index_shard).options(num_cpus=0.25, max_retries=2)
    return ray.get([task.remote(shard, data.image_key, data.label_key) for shard in shards])


def webdataset_rows(indices: list[ShardIndex], filesystem) -> WebDatasetRows:
    """Shards and their concatenated index (into the object store once)."""
    import ray

    shards, offset = [], 0
    for index in indices:
        shards.append(TarShard(index.path, len(index), offset))
        offset += len(index)
    table = {name: np.concatenate([getattr(index, attribute) for index in indices])
             for name, attribute in (("offset", "offsets"), ("size", "sizes"), ("label", "labels"))}
    return WebDatasetRows(tuple(shards), ray.put(table), filesystem)


def limited(indices: list[ShardIndex], limit: int) -> list[ShardIndex]:
    """The first `limit` samples in shard order (all when 0)."""
    if limit <= 0:
        return indices
    kept, left = [], limit
    for index in indices:
        if left <= 0:
            break
        take = min(left, len(index))
        kept.append(ShardIndex(index.path, index.display, index.offsets[:take], index.sizes[:take],
                               index.labels[:take], index.keys[:take]))
        left -= take
    return kept


def piece_validation_dataset(source, config: Config):
    """A held-out folder or WebDataset source as {clean, label}, read and decoded by Ray Data tasks."""
    import ray.data

    pieces = plain_pieces(source, config.scaling.data_batch_size)
    dataset = ray.data.from_blocks([pieces.slice(i, 1) for i in range(pieces.num_rows)])
    kwargs = {"source": source, "image_size": config.data.image_size, "resize": config.data.resize or None}
    return quiet(dataset.map_batches(validation_pieces, fn_kwargs=kwargs, batch_size=1,
                                     num_cpus=config.scaling.cpus_per_data_actor))


def file_source_datasets(config: Config) -> PipelineData:
    """Train and validation of an ImageFolder tree or WebDataset shards, streamed from storage."""
    data = config.data
    root = split_root(data.path, "train", what=data.name)
    fraction = data.validation_fraction
    if data.name == "folder":
        listing = list_folder(root).head(data.limit)
        train_rows, validation_rows = (train_validation_split(len(listing), fraction, data.seed, listing.labels)
                                       if fraction > 0 else (np.arange(len(listing)), np.arange(0)))
        if fraction > 0 and (len(train_rows) == 0 or len(validation_rows) == 0):
            raise InputError(f"data.validation_fraction {fraction} leaves an empty split of {len(listing)} images "
                             f"in {listing.root.display}; use more images or another fraction")
        source = folder_rows(listing.take(train_rows))
        held = folder_rows(listing.take(validation_rows)) if len(validation_rows) else None
        classes = list(listing.classes)
    else:
        shards = shard_files(root)
        indices = limited(index_shards(shards, data), data.limit)
        if len(indices) < 2 and fraction > 0:
            raise InputError(f"data.path {data.path}: validation holds out whole shards, and there is only one; "
                             "write several shards or set data.validation_fraction=0")
        order = np.random.default_rng(np.random.SeedSequence([data.seed, 0x5EED])).permutation(len(indices))
        count = int(max(1, round(fraction * len(indices)))) if fraction > 0 else 0
        filesystem = shards[0].filesystem
        source = webdataset_rows([indices[i] for i in sorted(order[count:])], filesystem)
        held = webdataset_rows([indices[i] for i in sorted(order[:count])], filesystem) if count else None
        top = max(int(index.labels.max()) for index in indices)
        classes = [str(label) for label in range(top + 1)]
    validation = piece_validation_dataset(held, config) if held is not None else None
    mode = stage_mode(config.augmix.enabled, config.augmix.jsd, config.augmix.placement)
    return PipelineData(training_stream(config, source), validation, classes, source.size,
                        held.size if held is not None else 0, VIEW_COLUMNS[mode])


def build_datasets(config: Config) -> PipelineData:
    """Read the source, hold out validation rows, and prepare the training stream."""

    if config.data.name in ("folder", "webdataset"):
        return file_source_datasets(config)
    large_files = large_parquet_files(config.data)
    if large_files:
        return streamed_parquet_datasets(config, large_files)
    table, skipped = usable_table(read_training_table(config.data), config.data.image_size, config.data.on_bad_image,
                                  keep_encoded=config.data.train_crop == "random_resized")
    train_table, validation_table = split_tables(table, config.data.validation_fraction, config.data.seed)
    resize = config.data.resize or None
    validation = validation_dataset(validation_table, config.data.image_size, resize) if validation_table else None
    mode = stage_mode(config.augmix.enabled, config.augmix.jsd, config.augmix.placement)
    return PipelineData(training_stream(config, table_rows(train_table)), validation, list(table.classes),
                        len(train_table), len(validation_table) if validation_table else 0, VIEW_COLUMNS[mode],
                        skipped_rows=len(skipped))
