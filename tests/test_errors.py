"""Never hang, never bury the cause: what the cluster cannot schedule is named before anything starts,
and a user's error raised inside a Ray worker reaches the terminal as one line (exit 2) naming the
dataset row and the image's path."""
from __future__ import annotations


import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from augmix.errors import BadRow, InputError, find_input_error
from orchestrator.cli import main
from orchestrator.config import build_config
from orchestrator.resources import Demand, copies_that_fit, shortfall, training_demands, trial_demands

TWO_CPUS = [{"CPU": 2.0, "memory": 1e9}]


def test_a_gpu_no_node_has_is_named():
    config = build_config({"scaling": {"use_gpu": True}})
    line = shortfall(training_demands(config), TWO_CPUS, "the training run")
    assert "no node has GPU" in line and "trainer" in line and "\n" not in line


def test_more_cpus_than_a_node_has_and_a_custom_resource_are_named():
    big = build_config({"scaling": {"cpus_per_worker": 3}})
    assert "the largest node has {CPU 2" in shortfall(training_demands(big), TWO_CPUS, "run")
    custom = build_config({"scaling": {"data_resources": {"augment_node": 0.01}}})
    assert "no node has augment_node" in shortfall(training_demands(custom), TWO_CPUS, "run")
    crowded = build_config({"scaling": {"cpus_per_worker": 1.5, "cpus_per_data_actor": 1}})
    assert "do not all fit at once" in shortfall(training_demands(crowded), TWO_CPUS, "run")
    assert shortfall(training_demands(build_config({"scaling": {"cpus_per_data_actor": 0.5}})), TWO_CPUS, "run") is None


def test_sweep_trials_are_counted_by_what_fits():
    """The quickstart's trial (trainer 1 CPU, actor 0.5, validation 0.5) fits once on 2 CPUs: two
    at once would leave the second trial's actors pending forever."""
    from orchestrator.config import load_config

    quickstart = load_config("quickstart.yaml")
    assert copies_that_fit(trial_demands(quickstart), TWO_CPUS, 4) == 1
    assert copies_that_fit(trial_demands(quickstart), [{"CPU": 4.0}, {"CPU": 2.0}], 4) == 3
    assert copies_that_fit([Demand("x", {"GPU": 1.0})], TWO_CPUS, 4) == 0


def test_the_cause_is_found_however_deep_ray_wrapped_it():
    bad = BadRow("training rows", 3, "cannot decode image (truncated)").at("train.parquet", 1207, "train/cat/7.jpg")
    assert str(bad) == "train.parquet: row 1207 (train/cat/7.jpg): cannot decode image (truncated)"

    class WorkerGroupError(Exception):  # the shape of ray.train's: failures per rank
        def __init__(self, failures):
            super().__init__("worker group failed")
            self.worker_failures = failures

    try:
        try:
            raise bad
        except InputError as error:
            raise RuntimeError("task failed") from error
    except RuntimeError as wrapped:
        outer = WorkerGroupError({0: wrapped})
    assert find_input_error(outer) is bad
    assert find_input_error(WorkerGroupError({0: ZeroDivisionError()})) is None


def test_a_bug_keeps_its_traceback(monkeypatch):
    import orchestrator.training as training

    def broken(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(training, "train", broken)
    with pytest.raises(KeyError):
        main(["train", "--config", "quickstart.yaml"])


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_an_impossible_gpu_request_ends_in_one_line(ray_cluster, tmp_path, capsys):
    code = main(["train", "--config", "quickstart.yaml", "--out", str(tmp_path / "run"), "--set", "scaling.use_gpu=true"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert "no node has GPU" in err and "scaling.use_gpu=false" in err


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_a_sweep_trial_that_cannot_fit_stops_before_starting(ray_cluster, tmp_path, capsys):
    code = main(["sweep", "--config", "quickstart.yaml", "--out", str(tmp_path / "sweep"),
                 "--set", "scaling.cpus_per_worker=64"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "one sweep trial needs" in err and "largest node" in err


def _corrupt_copy(cifar10_dir, folder, rows: int = 300, bad: dict[int, bytes] | None = None):
    """The first `rows` of the shared CIFAR-10 train set with some images replaced, as 3 Parquet files."""
    source = pq.read_table(cifar10_dir / "train.parquet").slice(0, rows)
    images = source.column("image").to_pylist()
    for row, data in (bad or {}).items():
        images[row] = data
    table = source.set_column(source.schema.get_field_index("image"), "image", pa.array(images, pa.binary()))
    folder.mkdir()
    for index in range(3):
        pq.write_table(table.slice(100 * index, 100), folder / f"part-{index}.parquet", row_group_size=50)
    return table.column("path").to_pylist()


def _run_args(folder, tmp_path, *extra: str) -> list[str]:
    return ["train", "--out", str(tmp_path / "run"), "--set", "data.name=parquet", "--set", f"data.path={folder}",
            "--set", "data.validation_fraction=0", "--set", "model.name=wrn10_1", "--set", "train.epochs=1",
            "--set", "train.batch_size=32", "--set", "train.max_steps_per_epoch=2", "--set", "scaling.num_workers=0",
            "--set", "scaling.cpus_per_data_actor=0.5", "--set", "scaling.data_batch_size=50", *extra]


def _truncated(cifar10_dir) -> bytes:
    first = pq.read_table(cifar10_dir / "train.parquet", columns=["image"]).slice(0, 1).column("image")[0].as_py()
    return first[: len(first) // 3]


@pytest.mark.ray
@pytest.mark.timeout(240)
def test_a_bad_image_is_named_by_its_dataset_row_and_path(ray_cluster, cifar10_dir, tmp_path, capsys, monkeypatch):
    """In-memory source: decoded once on the driver, before any training. Streamed source: decoded
    by the AugMix actors, the error travels back through Ray Data and the loop. Both end in the same
    line; with data.on_bad_image=skip the run trains around the rows and counts them."""
    import torch

    from orchestrator import pipeline

    folder = tmp_path / "data"
    paths = _corrupt_copy(cifar10_dir, folder, bad={207: _truncated(cifar10_dir), 261: b"not an image"})
    code = main(_run_args(folder, tmp_path))
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0, err
    assert f"row 207 ({paths[207]}): cannot decode image" in err

    code = main(_run_args(folder, tmp_path / "skipped", "--set", "train.max_steps_per_epoch=0",
                          "--set", "data.on_bad_image=skip"))
    assert code == 0
    history = torch.load(tmp_path / "skipped" / "run" / "model" / "model.pt", weights_only=False)["history"]
    assert history[0]["skipped_rows"] == 2 and history[0]["steps"] == 9  # 298 rows, 9 batches of 32

    monkeypatch.setattr(pipeline, "STREAM_PARQUET_BYTES", 0)  # the actors read the files themselves
    code = main(_run_args(folder, tmp_path / "streamed", "--set", "train.max_steps_per_epoch=0"))
    last = capsys.readouterr().err.strip().splitlines()[-1]  # Ray's own logs come before it
    assert code == 2 and last.startswith("augmix: error: "), last
    assert any(f"row {row} ({paths[row]}): " in last for row in (207, 261)) and "traceback:" in last, last
