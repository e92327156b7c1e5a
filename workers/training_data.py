"""What one trainer reads: every remaining epoch of its rows as one Ray Data stream.

Ray Data runs a pipeline once per iteration: a Dataset iterated again for the next epoch starts its
map actors (and a split coordinator) again, and the trainer idles until the first batch comes back.
Here each trainer builds, after it has restored its checkpoint, one Dataset that covers epochs
`first..last`, so its AugMix actors start once per run and keep working through epoch boundaries,
validation and checkpoints (Ray Data's backpressure bounds how far ahead they run).

The stream's rows are *pieces*: (epoch, fragment, start, stop) ranges of rows, a few hundred to a
few thousand each. The AugMix actors turn a piece into its views. Which rows a piece holds is a pure
function of (seed, epoch, rank), so:
- every epoch is a fresh permutation of the rows, and each row comes once per epoch (across ranks);
- every rank gets exactly `rows_per_epoch` rows per epoch (a multiple of the batch size), so all
  trainers take the same number of steps and no batch straddles two epochs;
- a run resumed at epoch e reads the same epoch e+1 as an uninterrupted run;
- augmentation randomness is seeded by the piece, not by which actor runs it or when.
The epoch and the global row index travel with every row (columns `epoch`, `row`).

Sources whose rows can be read one at a time are dealt out as positions in an epoch's permutation
of all rows: rows that fit the driver (synthetic, CIFAR, smaller Parquet) held once in the object
store (TableRows), and ImageFolder trees (FolderRows: the listing in the object store, each image
file read by the actor that needs it). Sources read in fragments are dealt out fragment by fragment,
the fragments visited in a new order each epoch and each shuffled within: large Parquet sources
(ParquetRows: row groups) and WebDataset shards (WebDatasetRows: a tar shard, of which the actor
reads only its piece's samples through the shard's index).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Iterator, NamedTuple

import numpy as np

from augmix.datasets.table import PATH_COLUMN
from augmix.errors import InputError

PIECE_COLUMNS = ("epoch", "fragment", "start", "stop")
TAG_COLUMNS = ("epoch", "row")  # travel with every view row to the trainer
PIECE_BATCHES = 4  # actor batches per piece of an in-memory source
FETCH_GROUP = 4  # trainer batches fetched from Ray Data at once (its per-call cost is paid once per group)


@functools.lru_cache(maxsize=4)
def permutation(size: int, seed: int, epoch: int, fragment: int = -1) -> np.ndarray:
    """The order of `size` rows in `epoch` (of one row group when `fragment` >= 0): the same in every
    process that asks, so no process has to send it to another."""
    key = [int(seed) & 0xFFFFFFFF, int(epoch), int(fragment) + 1, 0xE90C]
    return np.random.default_rng(np.random.SeedSequence(key)).permutation(size)


def piece_seed(seed: int, epoch: int, fragment: int, start: int) -> int:
    """A 63-bit seed for the augmentation of the rows of one piece (one generator per output batch)."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(fragment) + 1, int(start), 0xA06])
    return int(state.generate_state(1, np.uint64)[0] >> np.uint64(1))


@dataclass(frozen=True)
class TableRows:
    """Rows held in Ray's object store: `rows` is an ObjectRef to {"image", "label"} numpy arrays
    (uint8 [N,H,W,3] or an object array of encoded bytes), or those arrays themselves (no Ray)."""

    rows: Any
    size: int
    source: str


@dataclass(frozen=True)
class ParquetFragment:
    """One row group of one Parquet file; `offset` is the global index of its first row."""

    path: str
    row_group: int
    rows: int
    offset: int


@dataclass(frozen=True)
class ParquetRows:
    """Rows that stay in storage, read a row group at a time by the actors."""

    fragments: tuple[ParquetFragment, ...]
    filesystem: Any  # pyarrow FileSystem (picklable)
    image_column: str
    label_column: str

    @property
    def size(self) -> int:
        return sum(fragment.rows for fragment in self.fragments)


@dataclass(frozen=True)
class FolderRows:
    """Image files under `root` (an ImageFolder tree): `files` is an ObjectRef to {"path": bytes [N]
    relative to root, "label": int64 [N]} (listed once by the driver), or those arrays (no Ray)."""

    files: Any
    size: int
    root: str  # inside `filesystem`
    filesystem: Any  # pyarrow FileSystem (picklable)
    source: str  # how to name the tree in messages


@dataclass(frozen=True)
class TarShard:
    """One WebDataset shard: `rows` samples, the first of which has global index `offset`."""

    path: str
    rows: int
    offset: int


@dataclass(frozen=True)
class WebDatasetRows:
    """Tar shards read by the actors through their index: `index` is an ObjectRef to {"offset",
    "size", "label"} int64 arrays over all samples in global row order (or those arrays)."""

    shards: tuple[TarShard, ...]
    index: Any
    filesystem: Any

    @property
    def fragments(self) -> tuple[TarShard, ...]:
        return self.shards

    @property
    def size(self) -> int:
        return sum(shard.rows for shard in self.shards)


RANDOM_ACCESS = (TableRows, FolderRows)  # dealt as positions in a permutation of all rows


def resolved(value: Any) -> Any:
    """An ObjectRef's value (zero-copy for numpy arrays), or the value itself."""
    if isinstance(value, dict):
        return value
    import ray

    return ray.get(value)


@dataclass(frozen=True)
class TrainingStream:
    """How one run's training rows are dealt out: to `world` trainers, `rows_per_epoch` each."""

    source: TableRows | FolderRows | ParquetRows | WebDatasetRows
    seed: int
    world: int
    rows_per_epoch: int  # per trainer, a multiple of the batch size
    piece_rows: int  # rows per piece of an in-memory source (the actors' batch size)

    def pieces(self, rank: int, first_epoch: int, last_epoch: int):
        """Every piece of `rank` for epochs first..last, in the order the trainer consumes them (a
        pyarrow Table of PIECE_COLUMNS)."""
        import pyarrow as pa

        if not 0 <= rank < self.world:
            raise ValueError(f"rank {rank} outside 0..{self.world - 1}")
        rows = [piece for epoch in range(first_epoch, last_epoch + 1) for piece in self._epoch_pieces(rank, epoch)]
        columns = np.asarray(rows, dtype=np.int64).reshape(-1, len(PIECE_COLUMNS))
        return pa.table({name: columns[:, i] for i, name in enumerate(PIECE_COLUMNS)})

    def _epoch_pieces(self, rank: int, epoch: int) -> list[tuple[int, int, int, int]]:
        begin, end = rank * self.rows_per_epoch, (rank + 1) * self.rows_per_epoch
        if isinstance(self.source, RANDOM_ACCESS):  # positions in the epoch's permutation of all rows
            return [(epoch, -1, start, min(start + self.piece_rows, end)) for start in range(begin, end, self.piece_rows)]
        sizes = np.array([fragment.rows for fragment in self.source.fragments], dtype=np.int64)
        order = permutation(len(sizes), self.seed, epoch)  # row groups in a new order each epoch
        stops = np.cumsum(sizes[order])
        pieces, start = [], 0
        for fragment, stop in zip(order.tolist(), stops.tolist()):
            low, high = max(begin, start), min(end, stop)
            if low < high:  # the part of this row group that falls in the rank's range
                pieces.append((epoch, fragment, low - start, high - start))
            start = stop
        return pieces


def rows_per_trainer(size: int, world: int, batch_size: int, max_steps: int = 0) -> int:
    """Rows each trainer takes per epoch: whole batches of its share, capped by max_steps batches."""
    steps = (size // max(world, 1)) // batch_size
    if steps < 1:
        raise InputError(f"{size} training rows cannot fill one batch of {batch_size} on each of {world} trainer(s); "
                         "use more rows, a smaller train.batch_size or fewer scaling.num_workers")
    return batch_size * (min(steps, max_steps) if max_steps > 0 else steps)


class PieceRows(NamedTuple):
    """The rows of one piece, in the piece's order."""

    images: np.ndarray  # uint8 [N,H,W,3] or encoded bytes
    labels: np.ndarray
    rows: np.ndarray  # global row indices
    paths: np.ndarray | None  # each row's file name or key, where the source records one
    source: str  # where the rows come from, for error messages


def plain_pieces(source, piece_rows: int):
    """Every row of `source` once, in stored order, as pieces (epoch 0) of at most `piece_rows` rows:
    what a validation split is read as (PieceReader with shuffle=False)."""
    import pyarrow as pa

    if isinstance(source, RANDOM_ACCESS):
        rows = [(0, -1, start, min(start + piece_rows, source.size)) for start in range(0, source.size, piece_rows)]
    else:
        rows = [(0, index, start, min(start + piece_rows, fragment.rows))
                for index, fragment in enumerate(source.fragments) for start in range(0, fragment.rows, piece_rows)]
    columns = np.asarray(rows, dtype=np.int64).reshape(-1, len(PIECE_COLUMNS))
    return pa.table({name: columns[:, i] for i, name in enumerate(PIECE_COLUMNS)})


class PieceReader:
    """Reads the rows of a piece: (raw images, labels, global row indices), in the piece's order.
    With shuffle=False rows come in stored order (validation), else in the epoch's permutation."""

    def __init__(self, source: TableRows | FolderRows | ParquetRows | WebDatasetRows, seed: int,
                 shuffle: bool = True) -> None:
        self.source, self.seed, self.shuffle = source, int(seed), shuffle
        self._table: dict[str, np.ndarray] | None = None

    def _order(self, size: int, epoch: int, fragment: int = -1) -> np.ndarray:
        return permutation(size, self.seed, epoch, fragment) if self.shuffle else np.arange(size)

    def read(self, epoch: int, fragment: int, start: int, stop: int) -> PieceRows:
        source = self.source
        if isinstance(source, RANDOM_ACCESS):
            rows = self._order(source.size, epoch)[start:stop]
            table = self._rows()
            paths = table.get("path")
            paths = None if paths is None else paths[rows]
            if isinstance(source, FolderRows):
                from augmix.datasets.folder import read_files
                from augmix.storage import locate

                images = np.empty(len(rows), dtype=object)
                images[:] = read_files(locate(source.root, source.filesystem), table["path"][rows])
                return PieceRows(images, table["label"][rows], rows.astype(np.int64), paths, source.source)
            return PieceRows(table["image"][rows], table["label"][rows], rows.astype(np.int64), paths, source.source)
        if isinstance(source, WebDatasetRows):
            return self._read_shard(epoch, fragment, start, stop)
        return self._read_fragment(epoch, fragment, start, stop)

    def _rows(self) -> dict[str, np.ndarray]:
        if self._table is None:
            source = self.source
            self._table = resolved(source.files if isinstance(source, FolderRows) else
                                   source.index if isinstance(source, WebDatasetRows) else source.rows)
        return self._table

    def _read_shard(self, epoch: int, index: int, start: int, stop: int):
        from augmix.datasets.webdataset import read_samples

        shard = self.source.shards[index]
        rows = shard.offset + self._order(shard.rows, epoch, index)[start:stop].astype(np.int64)
        table = self._rows()
        images = np.empty(len(rows), dtype=object)
        images[:] = read_samples(self.source.filesystem, shard.path, table["offset"][rows], table["size"][rows])
        return PieceRows(images, table["label"][rows], rows, None, shard.path)

    def _read_fragment(self, epoch: int, index: int, start: int, stop: int):
        import pyarrow as pa
        import pyarrow.parquet as pq

        source = self.source
        fragment = source.fragments[index]
        try:
            with source.filesystem.open_input_file(fragment.path) as handle:
                parquet = pq.ParquetFile(handle)
                columns = [source.image_column, source.label_column]
                columns += [PATH_COLUMN] if PATH_COLUMN in parquet.schema_arrow.names else []
                group = parquet.read_row_group(fragment.row_group, columns=columns)
        except OSError as error:
            raise InputError(f"{fragment.path}: cannot read row group {fragment.row_group} ({error})") from None
        # shuffled within the row group, the same way for every piece of it in this epoch
        local = pa.array(self._order(fragment.rows, epoch, index)[start:stop])
        images = group.column(source.image_column).take(local).to_numpy(zero_copy_only=False)
        labels = group.column(source.label_column).take(local).to_numpy().astype(np.int64)
        paths = group.column(PATH_COLUMN).take(local).to_numpy(zero_copy_only=False) if PATH_COLUMN in columns else None
        return PieceRows(images, labels, fragment.offset + local.to_numpy().astype(np.int64), paths, fragment.path)


def training_dataset(stream: TrainingStream, rank: int, first_epoch: int, last_epoch: int, stage: type,
                     stage_kwargs: dict[str, Any], actors: int, cpus_per_actor: float,
                     resources: dict[str, float] | None = None):
    """The Ray Dataset of views for `rank`, epochs first..last, on its own pool of AugMix actors.

    One block per piece so that the actors share the work piece by piece (a block costs Ray Data
    a few milliseconds, so pieces hold several actor batches); order preserved so the trainer's
    batches follow the plan exactly (same seed → same batches)."""
    import ray.data

    pieces = stream.pieces(rank, first_epoch, last_epoch)
    # from_blocks: built here without Ray tasks (from_arrow runs one per block and needs a free CPU)
    dataset = ray.data.from_blocks([pieces.slice(i, 1) for i in range(pieces.num_rows)])
    dataset.context.execution_options.preserve_order = True
    dataset.context.target_max_block_size = 8 * 1024 * 1024  # small blocks: map and trainer overlap
    dataset.context.enable_progress_bars = False  # a run-long bar in a worker's log; the epoch lines say more
    options = {"resources": dict(resources)} if resources else {}
    return dataset.map_batches(stage, fn_constructor_kwargs={"source": stream.source, **stage_kwargs},
                               compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=cpus_per_actor,
                               batch_size=1, **options)


def stream_batches(dataset, batch_size: int) -> Iterator[dict]:
    """The trainer's batches of a training dataset. Fetched FETCH_GROUP at a time and sliced (views,
    no copy): each fetch from Ray Data costs about a millisecond of the trainer's time whatever its
    size, which at GPU speed is a few percent of a CIFAR step. Every epoch holds whole batches, so
    the slices never straddle two epochs."""
    for group in dataset.iter_torch_batches(batch_size=batch_size * FETCH_GROUP, prefetch_batches=2):
        rows = len(group["label"])
        if rows % batch_size:
            raise RuntimeError(f"training stream: a fetch of {rows} rows is not whole batches of {batch_size}")
        for start in range(0, rows, batch_size):
            yield {name: column[start:start + batch_size] for name, column in group.items()}


def epoch_batches(batches: Iterator[dict], epoch: int, steps: int) -> Iterator[dict]:
    """The next `steps` batches of a multi-epoch stream, checked to belong to `epoch`."""
    for step in range(steps):
        batch = next(batches, None)
        if batch is None:
            raise RuntimeError(f"training stream ended in epoch {epoch} after {step} of {steps} steps")
        tags = batch["epoch"]
        if int(tags.min()) != epoch or int(tags.max()) != epoch:
            raise RuntimeError(f"training stream out of step: epoch {epoch} got rows of epochs "
                               f"{int(tags.min())}..{int(tags.max())}")
        yield batch
