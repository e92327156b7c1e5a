"""The training stream: which rows each trainer sees in each epoch, and what the AugMix actors make
of them. Plan and actor code run here without Ray; one test runs the real Ray Data stream."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import torch

from workers.augment import AugmentStage
from workers.training_data import (
    PIECE_COLUMNS,
    ParquetFragment,
    ParquetRows,
    PieceReader,
    TableRows,
    TrainingStream,
    epoch_batches,
    rows_per_trainer,
    stream_batches,
)

torch.set_num_threads(1)


def _table_rows(count: int = 103, size: int = 8) -> TableRows:
    rng = np.random.default_rng(0)
    rows = {"image": rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8),
            "label": np.arange(count, dtype=np.int64) % 10}
    return TableRows(rows, count, "test rows")


def _rows_seen(stream: TrainingStream, rank: int, first: int, last: int) -> dict[int, list[int]]:
    """epoch → the global row indices rank reads, in order."""
    reader = PieceReader(stream.source, stream.seed)
    seen: dict[int, list[int]] = {}
    pieces = stream.pieces(rank, first, last).to_pydict()
    for epoch, fragment, start, stop in zip(*(pieces[name] for name in PIECE_COLUMNS)):
        seen.setdefault(epoch, []).extend(reader.read(epoch, fragment, start, stop)[2].tolist())
    return seen


def test_every_row_once_per_epoch_in_a_new_order_and_equal_shares():
    source = _table_rows(103)
    stream = TrainingStream(source, seed=1, world=2, rows_per_epoch=rows_per_trainer(103, 2, 16), piece_rows=10)
    assert stream.rows_per_epoch == 48  # 51 rows per trainer: 3 whole batches of 16
    ranks = [_rows_seen(stream, rank, 1, 3) for rank in range(2)]
    for epoch in (1, 2, 3):
        shares = [ranks[0][epoch], ranks[1][epoch]]
        assert [len(share) for share in shares] == [48, 48]
        together = shares[0] + shares[1]
        assert len(set(together)) == 96 and set(together) <= set(range(103))  # no row twice in an epoch
    assert ranks[0][1] != ranks[0][2] and ranks[0][2] != ranks[0][3]  # a new order every epoch
    # over epochs the 7 rows left out each epoch change, so every row is trained on
    assert set().union(*(ranks[r][e] for r in range(2) for e in (1, 2, 3))) == set(range(103))


def test_a_resumed_run_reads_the_same_next_epoch():
    stream = TrainingStream(_table_rows(), seed=4, world=1, rows_per_epoch=96, piece_rows=32)
    assert _rows_seen(stream, 0, 3, 4)[3] == _rows_seen(stream, 0, 1, 4)[3]
    assert stream.pieces(0, 3, 4).to_pylist() == [p for p in stream.pieces(0, 1, 4).to_pylist() if p["epoch"] >= 3]


def test_max_steps_caps_the_rows_per_epoch_and_too_few_rows_is_one_line():
    assert rows_per_trainer(1000, 2, 64) == 448 and rows_per_trainer(1000, 2, 64, max_steps=3) == 192
    with pytest.raises(ValueError, match="cannot fill one batch of 64 on each of 2 trainer"):
        rows_per_trainer(100, 2, 64)


def _parquet_rows(tmp_path, group_sizes: list[list[int]]) -> ParquetRows:
    """Files whose row groups have the given sizes; the image column holds each row's global index."""
    offset = 0
    for index, sizes in enumerate(group_sizes):
        total = sum(sizes)
        table = pa.table({"image": pa.array([str(offset + i).encode() for i in range(total)], pa.binary()),
                          "label": pa.array(np.arange(offset, offset + total) % 10, pa.int64())})
        writer = pq.ParquetWriter(tmp_path / f"part-{index}.parquet", table.schema)
        start = 0
        for size in sizes:
            writer.write_table(table.slice(start, size))
            start += size
        writer.close()
        offset += total
    fragments, offset = [], 0
    for index, sizes in enumerate(group_sizes):
        for group, size in enumerate(sizes):
            fragments.append(ParquetFragment(str(tmp_path / f"part-{index}.parquet"), group, size, offset))
            offset += size
    return ParquetRows(tuple(fragments), pafs.LocalFileSystem(), "image", "label")


def test_parquet_row_groups_are_dealt_out_whole_epochs_at_a_time(tmp_path):
    source = _parquet_rows(tmp_path, [[30, 7], [25], [11, 40]])
    assert source.size == 113
    stream = TrainingStream(source, seed=2, world=3, rows_per_epoch=rows_per_trainer(113, 3, 8), piece_rows=1)
    assert stream.rows_per_epoch == 32
    reader = PieceReader(source, 2)
    for epoch in (1, 2):
        seen = []
        for rank in range(3):
            pieces = stream.pieces(rank, epoch, epoch).to_pydict()
            rows = []
            for e, fragment, start, stop in zip(*(pieces[name] for name in PIECE_COLUMNS)):
                images, labels, indices, _, _ = reader.read(e, fragment, start, stop)
                assert [int(b) for b in images] == indices.tolist()  # the row index names the row read
                assert (labels == indices % 10).all()
                rows.extend(indices.tolist())
            assert len(rows) == 32  # equal shares: every trainer takes the same steps
            seen.extend(rows)
        assert len(set(seen)) == 96


def test_augmentation_is_reproducible_for_a_seed_and_fresh_each_epoch():
    source = _table_rows(64, size=32)
    stream = TrainingStream(source, seed=0, world=1, rows_per_epoch=64, piece_rows=32)
    pieces = stream.pieces(0, 1, 2).to_pydict()

    def outputs(seed: int) -> list[dict[str, np.ndarray]]:
        stage = AugmentStage(source=source, seed=seed, batch_rows=16)
        return [out for i in range(len(pieces["epoch"]))
                for out in stage({name: np.asarray(values[i:i + 1]) for name, values in pieces.items()})]

    first, again, other = outputs(3), outputs(3), outputs(4)
    assert len(first) == 8 and all(len(out["label"]) == 16 for out in first)
    for a, b in zip(first, again):
        assert set(a) == {"clean", "aug1", "aug2", "label", "epoch", "row", "skipped"}
        for column in a:
            np.testing.assert_array_equal(a[column], b[column])
    assert not np.array_equal(first[0]["aug1"], other[0]["aug1"])
    epoch_one = {int(r): i for i, r in enumerate(np.concatenate([o["row"] for o in first[:4]]))}
    epoch_two = np.concatenate([o["row"] for o in first[4:]])
    assert sorted(epoch_one) == sorted(epoch_two.tolist()) == list(range(64))
    # the same image in two epochs gets different augmentations
    row = int(first[0]["row"][0])
    later = np.concatenate([o["aug1"] for o in first[4:]])[list(epoch_two).index(row)]
    assert not np.array_equal(first[0]["aug1"][0], later)


def test_epoch_batches_refuses_rows_of_another_epoch_and_a_short_stream():
    batches = iter([{"epoch": torch.tensor([1, 1])}, {"epoch": torch.tensor([1, 2])}])
    with pytest.raises(RuntimeError, match="epoch 1 got rows of epochs 1..2"):
        list(epoch_batches(batches, 1, 2))
    with pytest.raises(RuntimeError, match="ended in epoch 3 after 0 of 1 steps"):
        list(epoch_batches(iter([]), 3, 1))


@pytest.mark.ray
@pytest.mark.timeout(240)
def test_the_ray_stream_delivers_the_plan_in_order_and_resumes_on_the_same_batches(ray_cluster):
    """One Ray Data execution over three epochs: batches in plan order, whole epochs; a stream that
    starts at epoch 3 (a resumed run) gives epoch 3 exactly as the full one did."""
    from orchestrator.pipeline import table_rows
    from augmix.datasets.table import ImageTable

    rows = _table_rows(96, size=32)
    table = ImageTable(rows.rows["image"], rows.rows["label"], [str(i) for i in range(10)], "test rows")
    stream = TrainingStream(table_rows(table), seed=5, world=1, rows_per_epoch=64, piece_rows=32)
    kwargs = {"mode": "triple", "seed": 5, "batch_rows": 16}

    def batches(first: int) -> list[dict]:
        from workers.training_data import training_dataset

        dataset = training_dataset(stream, 0, first, 3, AugmentStage, kwargs, actors=2, cpus_per_actor=0.5)
        return [{k: v.clone() for k, v in b.items()} for b in stream_batches(dataset, 16)]

    full = batches(1)
    assert len(full) == 12 and [int(b["epoch"][0]) for b in full] == [1] * 4 + [2] * 4 + [3] * 4
    expected = _rows_seen(stream, 0, 1, 3)
    for epoch in (1, 2, 3):
        got = torch.cat([b["row"] for b in full if int(b["epoch"][0]) == epoch]).tolist()
        assert got == expected[epoch]  # plan order, though two actors share the work
    resumed = batches(3)
    assert len(resumed) == 4
    for a, b in zip(resumed, full[8:]):
        for column in ("row", "clean", "aug1", "aug2"):
            assert torch.equal(a[column], b[column])
