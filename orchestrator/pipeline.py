"""The dataset spec of a Config → the Ray Datasets a training run consumes.

train: rows {image, label} (uint8 HWC or encoded bytes, in small blocks so that Ray Data streams
and can reorder them) → `map_batches(AugmentStage)` on a pool of CPU actors → {clean?, aug1?, aug2?,
label} uint8 views. validation: the held-out rows, decoded once on the driver (a few MB), as
{clean, label}. The validation rows come out of the training split by seed (never the test split).

Sources that fit the driver's memory (synthetic, CIFAR, Parquet up to STREAM_PARQUET_BYTES) are read
there, so the validation rows are a seeded, stratified sample. Larger Parquet sources (ImageNet)
stream through `ray.data.read_parquet` on the cluster and never pass through the driver; their
validation set is then whole files held out by seed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from augmix.datasets import load_split
from augmix.datasets.parquet import parquet_files, parse_classes, split_location
from augmix.datasets.split import train_validation_split
from augmix.datasets.table import ImageTable
from orchestrator.config import Config, DataConfig
from workers.augment import VIEW_COLUMNS, AugmentStage, decode_batch, decode_rows, stage_mode

TARGET_MAX_BLOCK_BYTES = 8 * 1024 * 1024  # small blocks: the map stage and the trainers overlap
ROWS_PER_BLOCK = 1000
STREAM_PARQUET_BYTES = 2 * 1024**3  # larger Parquet sources stream from storage instead of the driver


@dataclass
class PipelineData:
    """What the trainer needs to know about the data besides the datasets themselves."""

    train: object  # ray.data.Dataset of views
    validation: object | None  # ray.data.Dataset {clean, label}, None when no validation split
    classes: list[str]
    train_size: int
    validation_size: int
    columns: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def read_training_table(data: DataConfig) -> ImageTable:
    """The training split of the configured source, first `data.limit` rows (all when 0); a Parquet
    folder resolves to its train file, never its test file."""
    return load_split(data.name, "train", data.path, limit=data.limit, download=data.download,
                      image_column=data.image_column, label_column=data.label_column, seed=data.seed,
                      synthetic_train_size=data.synthetic_train_size, image_size=data.image_size)


def split_tables(table: ImageTable, fraction: float, seed: int) -> tuple[ImageTable, ImageTable | None]:
    """(train, validation) rows held out by seed, stratified by label."""
    if fraction <= 0:
        return table, None
    train_rows, validation_rows = train_validation_split(len(table), fraction, seed, labels=table.labels)
    if len(train_rows) == 0 or len(validation_rows) == 0:
        raise ValueError(f"data.validation_fraction {fraction} leaves an empty split of {len(table)} rows; "
                         "use more rows or a fraction in (0, 1) that keeps both parts non-empty")
    return table.take(train_rows), table.take(validation_rows)


def image_rows_table(table: ImageTable) -> pa.Table:
    """{image, label} as Arrow: binary for encoded images, Ray's tensor extension for pixels."""
    from ray.data.extensions import ArrowTensorArray

    if table.is_encoded:
        images = pa.array(list(table.images), type=pa.binary())
    else:
        images = ArrowTensorArray.from_numpy(np.ascontiguousarray(table.images))
    return pa.table({"image": images, "label": pa.array(table.labels, type=pa.int64())})


def blocks_of(arrow: pa.Table, rows_per_block: int) -> list[pa.Table]:
    return [arrow.slice(start, rows_per_block) for start in range(0, arrow.num_rows, rows_per_block)]


def augment_stage_kwargs(config: Config, clock_name: str | None) -> dict:
    """Constructor arguments of the AugmentStage actors for this config."""
    augmix = config.augmix
    return {
        "mode": stage_mode(augmix.enabled, augmix.jsd, augmix.placement),
        "width": augmix.width, "depth": augmix.depth, "severity": augmix.severity,
        "alpha": augmix.alpha, "all_ops": augmix.all_ops,
        "image_size": config.data.image_size, "crop_padding": config.data.crop_padding,
        "flip": config.data.flip, "train": True, "seed": config.train.seed,
        "image_column": "image", "label_column": "label", "clock_name": clock_name,
    }


def augmented_dataset(rows, config: Config, clock_name: str | None, actors: int | None = None, **stage_overrides):
    """rows {image, label} → the AugMix views, on `scaling.data_actors` CPU actors."""
    import ray.data

    scaling = config.scaling
    options = {"resources": dict(scaling.data_resources)} if scaling.data_resources else {}
    return rows.map_batches(
        AugmentStage,
        fn_constructor_kwargs=augment_stage_kwargs(config, clock_name) | stage_overrides,
        compute=ray.data.ActorPoolStrategy(size=actors or scaling.data_actors),
        num_cpus=scaling.cpus_per_data_actor,
        batch_size=scaling.data_batch_size,
        **options,
    )


def validation_dataset(table: ImageTable, image_size: int):
    """Decoded once here: {clean uint8 [3,S,S], label}."""
    import ray.data
    from ray.data.extensions import ArrowTensorArray

    clean = decode_batch(table.images, image_size, source=f"{table.source} (validation rows)").numpy()
    arrow = pa.table({"clean": ArrowTensorArray.from_numpy(clean), "label": pa.array(table.labels, type=pa.int64())})
    return ray.data.from_arrow(blocks_of(arrow, ROWS_PER_BLOCK))


def large_parquet_files(data: DataConfig) -> list | None:
    """The source's Parquet files when they should stream (no limit, > STREAM_PARQUET_BYTES), else None."""
    if data.name != "parquet" or data.limit:
        return None
    files = parquet_files(split_location(data.path, "train"))
    total = sum(location.info().size or 0 for location in files)
    return files if total > STREAM_PARQUET_BYTES else None


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


def streamed_parquet_datasets(config: Config, files: list, clock_name: str | None) -> PipelineData:
    """Train and validation straight from storage: validation = whole files held out by seed."""
    import ray.data

    data = config.data
    if len(files) < 2 and data.validation_fraction > 0:
        raise ValueError(f"data.path {data.path}: one large Parquet file cannot be split by files for "
                         "validation; write it as several files or set data.validation_fraction=0")
    order = np.random.default_rng(np.random.SeedSequence([data.seed, 0x5EED])).permutation(len(files))
    held = int(max(1, round(data.validation_fraction * len(files)))) if data.validation_fraction > 0 else 0
    validation_files = [files[i] for i in sorted(order[:held])]
    train_files = [files[i] for i in sorted(order[held:])]
    columns = [data.image_column, data.label_column]

    def read(locations: list):
        return ray.data.read_parquet([loc.path for loc in locations],
                                     filesystem=locations[0].filesystem).select_columns(columns)

    train_size, classes = parquet_rows_and_classes(train_files, data.label_column)
    names = {"image_column": data.image_column, "label_column": data.label_column}
    train = augmented_dataset(read(train_files).randomize_block_order(), config, clock_name, **names)
    validation, validation_size = None, 0
    if validation_files:
        validation_size, _ = parquet_rows_and_classes(validation_files, data.label_column)
        validation = read(validation_files).map_batches(
            decode_rows, fn_kwargs={"image_size": data.image_size, **names},
            num_cpus=config.scaling.cpus_per_data_actor, batch_size=config.scaling.data_batch_size)
    mode = stage_mode(config.augmix.enabled, config.augmix.jsd, config.augmix.placement)
    return PipelineData(train, validation, classes, train_size, validation_size, VIEW_COLUMNS[mode])


def build_datasets(config: Config, clock_name: str | None = None) -> PipelineData:
    """Read the source, hold out validation rows, and build the streaming Ray Datasets."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.target_max_block_size = TARGET_MAX_BLOCK_BYTES
    large_files = large_parquet_files(config.data)
    if large_files:
        return streamed_parquet_datasets(config, large_files, clock_name)
    table = read_training_table(config.data)
    train_table, validation_table = split_tables(table, config.data.validation_fraction, config.data.seed)
    rows = ray.data.from_arrow(blocks_of(image_rows_table(train_table), ROWS_PER_BLOCK))
    rows = rows.randomize_block_order()
    train = augmented_dataset(rows, config, clock_name)
    validation = validation_dataset(validation_table, config.data.image_size) if validation_table else None
    mode = stage_mode(config.augmix.enabled, config.augmix.jsd, config.augmix.placement)
    return PipelineData(train, validation, list(table.classes), len(train_table),
                        len(validation_table) if validation_table else 0, VIEW_COLUMNS[mode])
