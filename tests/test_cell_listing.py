"""How many filesystem calls resuming and aggregating an evaluation makes: on S3 each is a request,
so the cells folder must be listed once per folder, never checked cell by cell."""
from __future__ import annotations

import collections

import numpy as np
import pyarrow.fs as pafs
import pytest

from augmix import storage
from orchestrator.config import build_config
from orchestrator.evaluation import cells_for, cells_uri, finished_cells
from orchestrator.report import aggregate
from workers.evaluate import EvaluationCell, encode_result


class CountingHandler(pafs.FileSystemHandler):
    """The local filesystem, counting every call by kind (what would be a LIST, HEAD or GET on S3)."""

    def __init__(self) -> None:
        self.local = pafs.LocalFileSystem()
        self.calls: collections.Counter[str] = collections.Counter()

    def get_type_name(self) -> str:
        return "counting-local"

    def equals(self, other) -> bool:
        return other is self

    def normalize_path(self, path: str) -> str:
        return path

    def get_file_info(self, paths):
        self.calls["stat"] += len(paths)
        return self.local.get_file_info(paths)

    def get_file_info_selector(self, selector):
        self.calls["list"] += 1
        return self.local.get_file_info(selector)

    def open_input_stream(self, path):
        self.calls["open"] += 1
        return self.local.open_input_stream(path)

    def open_input_file(self, path):
        self.calls["open"] += 1
        return self.local.open_input_file(path)

    def _unused(self, *args, **kwargs):
        raise AssertionError("reading an evaluation must not write or move anything")

    create_dir = delete_dir = delete_dir_contents = delete_root_dir_contents = delete_file = _unused
    move = copy_file = open_output_stream = open_append_stream = _unused


@pytest.fixture
def finished_run(tmp_path):
    """A run folder whose 76 -C cells (clean + 15 corruptions x 5 severities) are all written."""
    config = build_config({}, [f"storage.uri={tmp_path / 'run'}", "data.name=synthetic"])
    cells = cells_for(config)
    correct = np.array([True, False, True, True])
    arrays = {"confidence": np.full(4, 0.7, np.float32), "prediction": np.zeros(4, np.int32),
              "correct": correct, "nll": np.ones(4, np.float32)}
    for cell in cells:
        storage.write_bytes(storage.join(cells_uri(config), cell.file_name), encode_result(cell, arrays, 0.0, 0.0, "cpu"))
    return config, cells


@pytest.fixture
def counted(finished_run, monkeypatch) -> collections.Counter:
    """From here on every storage path resolves to the counting filesystem; returns the live counts."""
    handler = CountingHandler()
    counting = pafs.PyFileSystem(handler)
    monkeypatch.setattr(storage, "locate", lambda uri, filesystem=None: storage.Location(
        counting, storage.absolute(uri), str(uri)))
    return handler.calls


def test_finished_cells_lists_each_cells_folder_once(finished_run, counted):
    config, cells = finished_run
    assert len(cells) == 76 and EvaluationCell("fog", 3) in cells
    assert finished_cells(config) == set(cells)
    assert counted == {"list": 2}, counted  # eval/cells and eval/p_cells: one listing each, no per-cell stat


def test_aggregating_reads_each_cell_once_without_checking_it_first(finished_run, counted):
    config, cells = finished_run
    results = aggregate(config, cells, "wrn10_1")
    assert results["clean_error"] == pytest.approx(0.25) and len(results["corruption_errors"]) == 15
    assert counted == {"open": len(cells)}, counted
