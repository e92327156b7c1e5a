"""Rows/s read and decoded from an image folder tree, from WebDataset tar shards and from Parquet,
per core, through the readers the training actors use (workers.training_data.PieceReader, then the
decode the actor does).

The same images are written in the three layouts in a temporary folder (the shared CIFAR-10 JPEGs,
and a second set of larger JPEGs of mixed ImageNet-like sizes made from them), then each source is
read piece by piece in a fresh epoch order, on one torch thread. Two figures per source: rows per
wall-clock second and rows per CPU second of this process (the readers use I/O threads to hide
storage latency, so CPU seconds are the per-core cost). Parquet is the reference each run: the
ratios printed are source / Parquet, measured in the same run on the same rows.

Local disk, warm page cache (each layout is read once before it is timed): this measures the
readers' own cost, not a disk or S3.

    python -m benchmarks.data_read_throughput [--rows 5000] [--large-rows 500] [--piece 256]
"""
from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
LARGE_SIZES = ((500, 375), (375, 500), (500, 333), (400, 400), (640, 480))  # common ImageNet shapes


def cifar_rows(rows: int) -> tuple[list[bytes], np.ndarray, list[str]]:
    from augmix.datasets import read_parquet

    table = read_parquet(SHARED_DATA / "cifar10" / "train.parquet", limit=rows)
    return list(table.images), table.labels, table.classes


def enlarge(images: list[bytes]) -> list[bytes]:
    """Each image upscaled to an ImageNet-like size (cycling through LARGE_SIZES), JPEG quality 90."""
    from PIL import Image

    out = []
    for index, data in enumerate(images):
        buffer = io.BytesIO()
        Image.open(io.BytesIO(data)).convert("RGB").resize(LARGE_SIZES[index % len(LARGE_SIZES)], Image.BICUBIC) \
            .save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def write_layouts(root: Path, images: list[bytes], labels: np.ndarray, classes: list[str], group: int):
    """The three sources over the same rows: (FolderRows, WebDatasetRows, ParquetRows)."""
    from augmix.datasets.folder import list_folder
    from augmix.datasets.webdataset import index_shard, shard_files, write_shards
    from workers.training_data import FolderRows, ParquetFragment, ParquetRows, TarShard, WebDatasetRows

    for row, (data, label) in enumerate(zip(images, labels)):
        folder = root / "tree" / classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{row:07d}.JPEG").write_bytes(data)
    listing = list_folder(root / "tree")
    tree = FolderRows({"path": listing.paths, "label": listing.labels}, len(listing), listing.root.path,
                      listing.root.filesystem, listing.root.display)

    write_shards(images, labels, root / "shards", group)
    indices = [index_shard(shard) for shard in shard_files(root / "shards")]
    offsets = np.cumsum([0] + [len(index) for index in indices])
    table = {"offset": np.concatenate([i.offsets for i in indices]), "size": np.concatenate([i.sizes for i in indices]),
             "label": np.concatenate([i.labels for i in indices])}
    tars = WebDatasetRows(tuple(TarShard(i.path, len(i), int(o)) for i, o in zip(indices, offsets)), table,
                          pafs.LocalFileSystem())

    path = root / "rows.parquet"
    pq.write_table(pa.table({"image": pa.array(images, pa.binary()), "label": pa.array(labels, pa.int64())}), path,
                   row_group_size=group)
    fragments = tuple(ParquetFragment(str(path), g, min(group, len(labels) - g * group), g * group)
                      for g in range(-(-len(labels) // group)))
    parquet = ParquetRows(fragments, pafs.LocalFileSystem(), "image", "label")
    return {"folder": tree, "webdataset": tars, "parquet": parquet}


def read_rate(source, piece: int, decode, epoch: int) -> tuple[float, float, int]:
    """(rows per wall second, rows per CPU second, rows) of one epoch of `source`, read + decoded."""
    from workers.training_data import TrainingStream, PieceReader, PIECE_COLUMNS

    stream = TrainingStream(source, seed=0, world=1, rows_per_epoch=(source.size // piece) * piece, piece_rows=piece)
    pieces = stream.pieces(0, epoch, epoch).to_pydict()
    reader = PieceReader(source, 0)
    wall, cpu, rows = time.perf_counter(), time.process_time(), 0
    for e, fragment, start, stop in zip(*(pieces[name] for name in PIECE_COLUMNS)):
        images, labels, _ = reader.read(e, fragment, start, stop)
        for offset in range(0, len(images), piece):
            decode(images[offset:offset + piece])
        rows += len(labels)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return rows / wall, rows / cpu, rows


def measure(title: str, sources: dict, piece: int, decode) -> None:
    for source in sources.values():  # warm the page cache and the decoders
        read_rate(source, piece, decode, epoch=0)
    figures = {name: read_rate(source, piece, decode, epoch=1) for name, source in sources.items()}
    reference_wall, reference_cpu, _ = figures["parquet"]
    print(f"\n{title}")
    print(f"{'source':<12}{'rows':>7}{'rows/s':>10}{'rows/CPU-s':>12}{'vs parquet (wall)':>20}{'(CPU)':>8}")
    for name, (wall, cpu, rows) in figures.items():
        print(f"{name:<12}{rows:>7}{wall:>10.0f}{cpu:>12.0f}{wall / reference_wall:>20.2f}{cpu / reference_cpu:>8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000, help="CIFAR-10 JPEGs (32x32)")
    parser.add_argument("--large-rows", type=int, default=500, help="larger JPEGs of mixed ImageNet-like sizes")
    parser.add_argument("--piece", type=int, default=256, help="rows per piece (the actors' batch)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from augmix.datasets.table import decode_image_list, decode_images
    from workers.augment import decode_list, random_resized_crop

    images, labels, classes = cifar_rows(args.rows)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        sources = write_layouts(root / "cifar", images, labels, classes, group=1000)
        measure(f"CIFAR-10 JPEGs, 32x32: read + decode (torch threads 1, pieces of {args.piece})", sources, args.piece,
                lambda batch: decode_images(list(batch)))
        large = enlarge(images[:args.large_rows])
        sources = write_layouts(root / "large", large, labels[:args.large_rows], classes, group=100)
        piece = min(args.piece, 100)
        measure(f"JPEGs of mixed sizes {', '.join(f'{w}x{h}' for w, h in LARGE_SIZES)}: read + decode (pieces of "
                f"{piece})", sources, piece, lambda batch: decode_image_list(list(batch)))
        generator = torch.Generator().manual_seed(0)
        measure("the same, read + decode + RandomResizedCrop(224) + flip (what a training actor does before AugMix)",
                sources, piece,
                lambda batch: random_resized_crop(decode_list(batch), 224, (0.08, 1.0), (3 / 4, 4 / 3), True, generator))


if __name__ == "__main__":
    main()
