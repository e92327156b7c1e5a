"""Ray Tune sweep: real training trials, ASHA, the results table and best config, resumption."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.config import build_config, load_config
from orchestrator.sweep import OBJECTIVE, TIE_BREAKER, ranking, search_space

TINY = [
    "data.name=synthetic", "data.synthetic_train_size=600", "data.synthetic_test_size=100",
    "data.validation_fraction=0.2", "model.name=wrn10_1", "train.epochs=2", "train.batch_size=32",
    "train.max_steps_per_epoch=3", "scaling.num_workers=1", "scaling.cpus_per_worker=0.5",
    "scaling.data_actors=1", "scaling.cpus_per_data_actor=0.5", "scaling.data_batch_size=64",
    # ASHA at its most aggressive: with reduction factor 100 a trial continues past the epoch-1 rung
    # only if it beats every trial recorded there before it. The rung starts empty after the
    # interruption (Tune does not keep scheduler state) and sees the 5 trials still to run, one at a
    # time; all 5 continue only if each is better than all before it, 1 order in 5! = 120 for
    # trials this alike (their errors tie at chance level; the NLL orders them).
    "tune.num_samples=6", "tune.max_concurrent_trials=1", "tune.grace_period=1", "tune.reduction_factor=100",
]


@pytest.mark.parametrize(("override", "fragment"), [
    ("tune.lam={low: -1, high: 5}", "negative"),
    ("tune.width=[0, 3]", "mixture width k must be >= 1"),
    ("tune.depth=[0]", "each must be -1 or >= 1"),
])
def test_bad_search_space_fails_before_any_trial(override, fragment, capsys, tmp_path):
    assert main(["sweep", "--out", str(tmp_path), "--set", override]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and "\n" not in err
    assert not any(tmp_path.iterdir()), "nothing may start before the search space is valid"


def test_default_space_holds_the_paper_values():
    from ray.tune.search.sample import Categorical, Float

    config = build_config({})
    space = search_space(config.tune)
    assert isinstance(space["augmix.lam"], Float) and space["augmix.lam"].lower <= 12 <= space["augmix.lam"].upper
    assert isinstance(space["augmix.width"], Categorical) and 3 in space["augmix.width"].categories
    assert space["augmix.alpha"].lower <= 1.0 <= space["augmix.alpha"].upper
    assert -1 in space["augmix.depth"].categories


def test_ranking_breaks_error_ties_by_nll_and_nothing_else():
    tied = [ranking({OBJECTIVE: 0.9, TIE_BREAKER: nll}) for nll in (2.31, 2.29, 2.30)]
    assert sorted(range(3), key=tied.__getitem__) == [1, 2, 0]
    # one image of error on a million-image split outweighs any NLL difference
    assert ranking({OBJECTIVE: 0.5, TIE_BREAKER: 1e6}) < ranking({OBJECTIVE: 0.5 + 1e-6, TIE_BREAKER: 0.0})
    assert ranking({OBJECTIVE: 0.5}) != ranking({OBJECTIVE: 0.5})  # NaN until both are reported


def test_trial_table_is_best_first_with_ties_by_nll_and_nan_last():
    from types import SimpleNamespace

    import pandas as pd

    from orchestrator.sweep import RANKING, _trial_rows

    def trial(name: str, history: list[tuple[float, float]], error: Exception | None = None):
        frame = pd.DataFrame([{"epoch": epoch + 1, OBJECTIVE: e, TIE_BREAKER: n,
                               RANKING: ranking({OBJECTIVE: e, TIE_BREAKER: n})} for epoch, (e, n) in enumerate(history)])
        last = frame.iloc[-1].to_dict()
        return SimpleNamespace(config={"augmix.lam": 1.0}, metrics={**last, "trial_id": name},
                               metrics_dataframe=frame, error=error, path=f"/x/_trial_{name}_0")

    grid = [trial("a", [(0.9, 2.30), (0.8, 2.2)]), trial("b", [(0.8, 2.1)]), trial("c", [(float("nan"), float("nan"))]),
            trial("d", [(0.7, 2.5), (0.95, 2.0)])]
    rows = _trial_rows(build_config({"train": {"epochs": 2}}), grid)
    assert [row["trial_id"] for row in rows] == ["d", "b", "a", "c"]  # d's best epoch is its first
    assert rows[0][OBJECTIVE] == 0.7 and rows[0][TIE_BREAKER] == 2.5
    assert rows[-1][OBJECTIVE] is None  # an empty validation shard reports NaN: ranked last, not first
    assert [row["status"] for row in rows] == ["finished", "stopped early", "finished", "stopped early"]


@pytest.mark.ray
def test_tuner_wires_asha_ranking_and_concurrency_from_the_config(ray_cluster, tmp_path):
    """Concurrency is the config's cap where the cluster (4 logical CPUs here) holds that many trials,
    and what it holds where it does not."""
    from orchestrator.sweep import RANKING, _tuner

    small = ["scaling.cpus_per_worker=0.5", "scaling.cpus_per_data_actor=0.25"]  # 1 CPU per trial
    config = load_config(None, ["tune.max_concurrent_trials=3", "tune.grace_period=2", "tune.reduction_factor=3",
                                "train.epochs=9", f"storage.uri={tmp_path}", *small])
    tune_config = _tuner(config, str(tmp_path), resume=False)._local_tuner._tune_config
    scheduler = tune_config.scheduler
    assert (tune_config.metric, tune_config.mode) == (RANKING, "min")
    assert (scheduler._time_attr, scheduler._max_t, scheduler._reduction_factor) == ("epoch", 9, 3.0)
    assert [milestone for milestone, _ in scheduler._brackets[0]._rungs] == [6.0, 2.0]  # grace 2, then x3
    assert tune_config.search_alg.max_concurrent == 3  # trials run side by side up to the config's cap
    larger = build_config(config.to_dict(), ["scaling.cpus_per_worker=1", "scaling.cpus_per_data_actor=0.5"])
    assert _tuner(larger, str(tmp_path), resume=False)._local_tuner._tune_config.search_alg.max_concurrent == 2


def _trial_results(out: Path) -> dict[str, int]:
    """Tune's per-trial result.json: number of reported epochs per trial directory."""
    return {path.parent.name: len(path.read_text().splitlines()) for path in (out / "sweep").glob("*/result.json")}


@pytest.mark.ray
@pytest.mark.timeout(900)
def test_sweep_runs_stops_early_resumes_and_writes_best_config(ray_cluster, tmp_path):
    import ray

    from orchestrator.sweep import sweep

    out = tmp_path / "sweep-run"
    repo = Path(__file__).resolve().parents[1]
    command = [sys.executable, "-m", "orchestrator.cli", "sweep", "--out", str(out),
               "--address", ray.get_runtime_context().gcs_address, *[a for o in TINY for a in ("--set", o)]]
    process = subprocess.Popen(command, cwd=repo, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 420
    while time.monotonic() < deadline and process.poll() is None:
        if any(epochs >= 2 for epochs in _trial_results(out).values()):  # the first trial has finished
            break
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    before = _trial_results(out)
    assert any(epochs >= 2 for epochs in before.values()), "no trial finished before the interruption"

    config = load_config(None, TINY + [f"storage.uri={out}"])
    result = sweep(config)
    after = _trial_results(out)
    assert len(after) == 6
    for name, epochs in before.items():
        if epochs >= config.train.epochs:  # a trial that had finished must not run again
            assert after[name] == epochs

    import pyarrow.parquet as pq

    rows = pq.read_table(out / "trials.parquet").to_pylist()
    assert len(rows) == 6
    objectives = [row[OBJECTIVE] for row in rows]
    assert objectives == sorted(objectives), "the table is best first"
    assert any(row["status"] == "stopped early" for row in rows), f"ASHA stopped no trial: {rows}"
    assert (out / "trials.md").read_text().count("\n") >= 6
    assert (out / "objective_vs_hyperparameters.png").stat().st_size > 0
    best = load_config(result.best_config_uri)
    assert best.augmix.lam == pytest.approx(rows[0]["augmix.lam"])
    assert best.augmix.width == rows[0]["augmix.width"]
