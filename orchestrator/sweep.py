"""`augmix sweep`: Ray Tune over λ, mixture width k, alpha and chain depth, with ASHA.

Every trial is a real training run of the same pipeline as `augmix train` (Ray Data AugMix actors
feeding a TorchTrainer), launched the Train V2 way: a Tune function trainable that builds and
fits a TorchTrainer and forwards its reports (TuneReportCallback). The objective is the error on
the held-out validation split under the 4 validation corruptions (speckle_noise, gaussian_blur,
spatter, saturate) — never the 15 test corruptions, which would tune on the test set.

ASHA compares trials by that error with ties broken by the validation NLL under the same
corruptions (`RANKING`). Early rungs need it: a briefly trained model predicts one class for most
images, trials then share the same error, and ASHA, which stops only strictly worse trials, would
stop none of them.
"""
from __future__ import annotations

import copy
import io
import math
from dataclasses import dataclass
from typing import Any

import yaml

from augmix import storage
from augmix.errors import InputError
from orchestrator import layout
from orchestrator.config import Config, TuneConfig, build_config
from orchestrator.plots import figure_png, pyplot
from orchestrator.resources import sweep_concurrency

OBJECTIVE = "val_corrupted_error"
TIE_BREAKER = "val_corrupted_nll"
RANKING = "val_corrupted_error_then_nll"
SECONDARY = "val_error"
# the NLL's weight in RANKING (the NLL capped at NLL_CAP): it moves the score by at most 1e-7, less
# than one image of error on any validation split under ten million images, so it only orders
# trials whose errors are equal
TIE_WEIGHT = 1e-9
NLL_CAP = 100.0
SWEEP_NAME = layout.SWEEP


@dataclass(frozen=True)
class SweepResult:
    table_uri: str
    best_config_uri: str
    best: dict[str, Any]


def search_space(tune_config: TuneConfig) -> dict[str, Any]:
    """Dotted config keys → Tune domains; a None entry keeps the base config's value."""
    from ray import tune

    space: dict[str, Any] = {}
    if tune_config.lam is not None:
        sample = tune.loguniform if tune_config.lam.log else tune.uniform
        space["augmix.lam"] = sample(tune_config.lam.low, tune_config.lam.high)
    if tune_config.width is not None:
        space["augmix.width"] = tune.choice(tune_config.width)
    if tune_config.alpha is not None:
        sample = tune.loguniform if tune_config.alpha.log else tune.uniform
        space["augmix.alpha"] = sample(tune_config.alpha.low, tune_config.alpha.high)
    if tune_config.depth is not None:
        space["augmix.depth"] = tune.choice(tune_config.depth)
    if tune_config.severity is not None:
        space["augmix.severity"] = tune.choice(tune_config.severity)
    return space


def trial_config(base: dict[str, Any], params: dict[str, Any], trial_id: str, sweep_uri: str) -> Config:
    """The base config with one trial's hyperparameters, its own name and storage under the sweep."""
    overrides = [f"{key}={value}" for key, value in params.items()]
    overrides += [f"name=trial-{trial_id}", f"storage.uri={layout.trial_uri(sweep_uri, trial_id)}",
                  "train.validate_corrupted=true"]
    return build_config(copy.deepcopy(base), overrides)


def ranking(metrics: dict[str, Any]) -> float:
    """The objective, ties broken by NLL (see the module docstring); NaN while either is missing."""
    error, nll = metrics.get(OBJECTIVE), metrics.get(TIE_BREAKER)
    if error is None or nll is None:
        return float("nan")
    return float(error) + TIE_WEIGHT * min(float(nll), NLL_CAP)


def _ranking_report_callback():
    """Train's per-epoch report → Tune, with RANKING added for the scheduler."""
    from ray.tune.integration.ray_train import TuneReportCallback

    class RankingReport(TuneReportCallback):
        def after_report(self, run_context, metrics, checkpoint):
            super().after_report(run_context, [{**m, RANKING: ranking(m)} for m in metrics], checkpoint)

    return RankingReport()


def _trial(params: dict[str, Any], base: dict[str, Any], sweep_uri: str) -> None:
    """One Tune trial = one TorchTrainer fit whose per-epoch reports reach Tune (and ASHA)."""
    from ray import tune

    from orchestrator.training import build_run_config, build_trainer

    trial_id = tune.get_context().get_trial_id()
    config = trial_config(base, params, trial_id, sweep_uri)
    run_config = build_run_config(config, callbacks=[_ranking_report_callback()])
    build_trainer(config, run_config).fit()


def _validated(config: Config) -> Config:
    """Fail before any trial starts: the sweep must have the objective's corruptions to score."""
    if config.tune.num_samples < 1 or not search_space(config.tune):
        raise InputError("tune: the search space is empty; set at least one of tune.lam, tune.width, tune.alpha, tune.depth")
    if not config.augmix.enabled:
        raise InputError("augmix.enabled=false: a sweep over AugMix hyperparameters needs AugMix on")
    if config.data.validation_fraction <= 0:
        raise InputError("data.validation_fraction=0: the sweep objective needs a held-out validation split")
    return config


def _tuner(config: Config, sweep_uri: str, resume: bool):
    from functools import partial

    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    trainable = tune.with_resources(partial(_trial, base=config.to_dict(), sweep_uri=sweep_uri),
                                    {"cpu": config.tune.cpus_per_trial, "memory": 1})
    storage_path = storage.absolute(config.storage.uri)
    experiment = layout.sweep_uri(storage_path)
    if resume and tune.Tuner.can_restore(experiment):
        print(f"resuming the sweep in {experiment} (finished trials are kept)")
        return tune.Tuner.restore(experiment, trainable=trainable, resume_errored=True, restart_errored=False)
    scheduler = (ASHAScheduler(time_attr="epoch", max_t=config.train.epochs, grace_period=config.tune.grace_period,
                               reduction_factor=config.tune.reduction_factor)
                 if config.tune.asha else FIFOScheduler())
    return tune.Tuner(
        trainable,
        param_space=search_space(config.tune),
        tune_config=tune.TuneConfig(metric=RANKING, mode="min", num_samples=config.tune.num_samples,
                                    scheduler=scheduler,
                                    # the seeded generator caps concurrency itself (Tune ignores
                                    # max_concurrent_trials beside a SearchGenerator)
                                    search_alg=tune.search.BasicVariantGenerator(
                                        random_state=config.tune.seed,
                                        max_concurrent=sweep_concurrency(config))),
        run_config=tune.RunConfig(name=SWEEP_NAME, storage_path=storage_path, verbose=1),
    )


def sweep(config: Config, address: str | None = None, resume: bool = True) -> SweepResult:
    """Run (or resume) the search, then write the trial table, plots and the best config as YAML."""
    from orchestrator.ray_session import ensure_ray

    _validated(config)
    storage.check_writable(config.storage.uri)
    ensure_ray(address, endpoint_url=config.storage.endpoint_url)
    sweep_uri = storage.absolute(config.storage.uri)
    grid = _tuner(config, sweep_uri, resume).fit()
    return write_sweep_report(config, grid)


def _number_or_none(value: Any) -> float | None:
    return None if value is None or math.isnan(float(value)) else float(value)


def _trial_rows(config: Config, grid) -> list[dict[str, Any]]:
    rows = []
    for result in grid:
        params = {key: value for key, value in (result.config or {}).items() if "." in key}
        history = result.metrics_dataframe
        best_objective = best_nll = None
        if history is not None and OBJECTIVE in history and RANKING in history and len(history):
            best = history.loc[history[RANKING].idxmin()] if history[RANKING].notna().any() else history.iloc[-1]
            best_objective, best_nll = float(best[OBJECTIVE]), float(best.get(TIE_BREAKER, float("nan")))
        metrics = result.metrics or {}
        if best_objective is None:
            best_objective, best_nll = metrics.get(OBJECTIVE), metrics.get(TIE_BREAKER)
        rows.append({
            "trial_id": metrics.get("trial_id", getattr(result, "path", "").rsplit("_", 2)[-2:][0] if result.path else ""),
            **params,
            OBJECTIVE: _number_or_none(best_objective),  # NaN (an empty validation shard) ranks last
            TIE_BREAKER: _number_or_none(best_nll),
            SECONDARY: metrics.get(SECONDARY),
            "epochs": metrics.get("epoch"),
            "status": "error" if result.error else ("stopped early" if (metrics.get("epoch") or 0) < config.train.epochs
                                                    else "finished"),
        })
    rows.sort(key=lambda row: (row[OBJECTIVE] is None, row[OBJECTIVE] or 0.0,
                               row[TIE_BREAKER] if row[TIE_BREAKER] is not None else float("inf")))
    return rows


def write_sweep_report(config: Config, grid) -> SweepResult:
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = config.storage.uri
    rows = _trial_rows(config, grid)
    if not rows or rows[0][OBJECTIVE] is None:
        raise RuntimeError(f"no trial reported {OBJECTIVE}; see the trial logs under {layout.sweep_uri(root)}")
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer)
    table_uri = layout.at(root, layout.TRIALS_PARQUET)
    storage.write_bytes(table_uri, buffer.getvalue())
    storage.write_bytes(layout.at(root, layout.TRIALS_MD), _markdown(rows).encode())
    storage.write_bytes(layout.at(root, layout.SWEEP_PLOT), _plot(rows))
    best = rows[0]
    best_config = build_config(config.to_dict(), [f"{k}={v}" for k, v in best.items() if "." in k]
                               + [f"name={config.name}-best", f"storage.uri={layout.at(root, layout.BEST_RUN)}"])
    best_uri = layout.at(root, layout.BEST_CONFIG)
    storage.write_bytes(best_uri, yaml.safe_dump(best_config.to_dict(), sort_keys=False).encode())
    print(_markdown(rows))
    print(f"best config: {best_uri}  (train and evaluate it: augmix run --config {best_uri})")
    return SweepResult(table_uri, best_uri, best)


def _markdown(rows: list[dict[str, Any]]) -> str:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()) + " |")
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict[str, Any]]) -> bytes:
    plt = pyplot()
    params = [key for key in rows[0] if "." in key]
    figure, axes = plt.subplots(1, max(1, len(params)), figsize=(3.4 * max(1, len(params)), 3.2), sharey=True)
    for axis, key in zip(list(getattr(axes, "flat", [axes])), params):
        points = [(row[key], row[OBJECTIVE]) for row in rows if row[OBJECTIVE] is not None]
        axis.scatter([p[0] for p in points], [100 * p[1] for p in points])
        axis.set_xlabel(key)
        if key == "augmix.lam":
            axis.set_xscale("log")
    list(getattr(axes, "flat", [axes]))[0].set_ylabel("validation-corruption error (%)")
    return figure_png(figure, dpi=110)
