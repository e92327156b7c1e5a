"""-P aggregation: per-video results of the (perturbation, difficulty) cells -> flip probabilities,
flip rates, top-5 distances, mFR / mT5D, the report's stability section and its plot.

Conventions (Hendrycks & Dietterich, ICLR 2019; ImageNet-P/test.py):
- the headline uses one difficulty for the noise sequences: the lowest requested (difficulty 1 by
  default, the level the reference's tables report); the other levels are listed beside it;
- mFR and mT5D average the test perturbations present, never the validation ones;
- without a baseline (CIFAR convention) FR = the flip probability and mT5D the mean top-5
  distance; with eval.p_baseline (e.g. an AlexNet run's results.json) both become ratios to it.
  AlexNet's ImageNet-P flip probabilities are published only in a spreadsheet linked from
  hendrycks/robustness issue #49, not in the repository or the paper, so none are built in.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from augmix import storage
from augmix.errors import InputError, MissingInput
from augmix.metrics import flip_rate_summary
from augmix.perturbations import NOISE_PERTURBATIONS, TEST_PERTURBATIONS, VALIDATION_PERTURBATIONS
from orchestrator import layout
from orchestrator.plots import figure_png, pyplot
from workers.perturb import PerturbationCell, decode_sequence_result

if TYPE_CHECKING:  # annotations only: aggregation and reports run without pydantic (benchmarks/reproduce_cifar10.py)
    from orchestrator.config import Config


def load_p_cells(config: Config, cells: Sequence[PerturbationCell]) -> dict[PerturbationCell, dict]:
    folder = layout.p_cells_uri(config.storage.uri)
    blobs = storage.read_many([storage.join(folder, cell.file_name) for cell in cells])
    return {cell: decode_sequence_result(blob) for cell, blob in zip(cells, blobs)}


def load_baseline(uri: str | None) -> dict[str, dict[str, float] | None]:
    """flip_probabilities (required) and top5_distances (optional) of a baseline, from a JSON file."""
    if uri is None:
        return {"flip_probabilities": None, "top5_distances": None}
    if not storage.exists(uri):
        raise MissingInput(f"eval.p_baseline {uri} not found; pass a results.json holding flip_probabilities")
    data = storage.read_json(uri)
    if not isinstance(data, dict) or not isinstance(data.get("flip_probabilities"), dict):
        raise InputError(f"eval.p_baseline {uri} has no 'flip_probabilities' mapping; "
                         "allowed: a JSON object like a -P run's results.json")
    return {"flip_probabilities": data["flip_probabilities"], "top5_distances": data.get("top5_distances")}


def _value(result: dict, key: str) -> float:
    return float(np.mean(result[key]))


def _cell_row(cell: PerturbationCell, result: dict) -> dict[str, Any]:
    distance = _value(result, "top5_distance")
    return {"suite": "p", "perturbation": cell.perturbation, "difficulty": cell.difficulty,
            "family": "validation" if cell.perturbation in VALIDATION_PERTURBATIONS else "perturbation",
            "flip_probability": _value(result, "flips"), "top5_distance": None if math.isnan(distance) else distance,
            "images": int(result["prediction"].shape[0]), "frames": int(result["prediction"].shape[1]),
            "seconds_produce": result["seconds_produce"], "seconds_infer": result["seconds_infer"],
            "device": result["device"]}


def _summary(rows: list[dict], baseline: dict) -> dict[str, Any]:
    """FR / mFR / mT5D over the test perturbations given (their headline-difficulty rows)."""
    keys = ("flip_rates", "mfr", "top5_distance_rates", "mt5d")
    if not rows:
        return dict.fromkeys(keys)
    probabilities = {row["perturbation"]: row["flip_probability"] for row in rows}
    distances = {row["perturbation"]: row["top5_distance"] for row in rows}
    has_distances = all(value is not None for value in distances.values())
    baseline_distances = baseline["top5_distances"] if has_distances else None
    summary = flip_rate_summary(probabilities, distances if has_distances else None,
                                baseline["flip_probabilities"], baseline_distances)
    return {"flip_rates": summary["flip_rate"], "mfr": summary["mfr"],
            "top5_distance_rates": summary.get("top5_distance_rate"), "mt5d": summary.get("mt5d")}


def stability_results(config: Config, cells: Sequence[PerturbationCell]) -> dict[str, Any]:
    """The -P keys of results.json (empty without the -P suite)."""
    if "p" not in config.eval.suites:
        return {}
    results = load_p_cells(config, cells)
    difficulty = min(config.eval.difficulties)
    rows = [_cell_row(cell, results[cell]) for cell in cells]  # the configured order: test, then validation
    headline = [row for row in rows if _headline(row, difficulty)]
    test = [row for row in headline if row["perturbation"] in TEST_PERTURBATIONS]
    validation = [row for row in headline if row["perturbation"] in VALIDATION_PERTURBATIONS]
    return {
        "flip_probabilities": {row["perturbation"]: row["flip_probability"] for row in test},
        "top5_distances": {row["perturbation"]: row["top5_distance"] for row in test},
        **_summary(test, load_baseline(config.eval.p_baseline)),
        "extra_flip_probabilities": {row["perturbation"]: row["flip_probability"] for row in validation},
        "extra_top5_distances": {row["perturbation"]: row["top5_distance"] for row in validation},
        "p_difficulty": difficulty,
        "p_baseline": config.eval.p_baseline,
        "p_cells": rows,
    }


def _headline(row: dict, difficulty: int) -> bool:
    """The row that stands for its perturbation: the noise ones at the headline difficulty."""
    return row["difficulty"] == (difficulty if row["perturbation"] in NOISE_PERTURBATIONS else 1)


# --- report -------------------------------------------------------------------------------------

def _number(value: float | None, scale: float = 1.0, digits: int = 2) -> str:
    return "–" if value is None else f"{scale * value:.{digits}f}"


def stability_markdown(results: dict) -> list[str]:
    """The report's stability section (nothing without the -P suite)."""
    if "mfr" not in results:
        return []
    normalised = results["p_baseline"] is not None
    unit = f"ratio to the baseline {results['p_baseline']}" if normalised else "flip probability, %"
    lines = ["## Perturbation stability (-P)", "",
             f"- mFR ({unit}): **{_number(results['mfr'], 1 if normalised else 100)}**; "
             f"mT5D: **{_number(results['mt5d'])}** (noise sequences at difficulty {results['p_difficulty']}; "
             "validation perturbations are not in either)", "",
             "| perturbation | difficulty | frames | flip probability (%) | FR | top-5 distance |",
             "|---|---:|---:|---:|---:|---:|"]
    rates = results.get("flip_rates") or {}
    for row in (row for row in results["cells"] if row.get("suite") == "p"):
        name = row["perturbation"]
        label = f"{name} (validation)" if row["family"] == "validation" else name
        rate = rates.get(name) if _headline(row, results["p_difficulty"]) else None
        lines.append(f"| {label} | {row['difficulty']} | {row['frames']} | {100 * row['flip_probability']:.2f} | "
                     f"{_number(rate, 1 if normalised else 100)} | {_number(row['top5_distance'], 1, 3)} |")
    return lines + ["", f"![stability]({layout.STABILITY_PLOT})", ""]


def plot_stability(results: dict) -> bytes:
    """Flip probability and top-5 distance per perturbation (headline difficulty), two panels."""
    plt = pyplot()
    names = [*results["flip_probabilities"], *results["extra_flip_probabilities"]]
    flips = [{**results["flip_probabilities"], **results["extra_flip_probabilities"]}[n] * 100 for n in names]
    distances = [{**results["top5_distances"], **results["extra_top5_distances"]}[n] or 0.0 for n in names]
    colors = ["tab:blue" if n in TEST_PERTURBATIONS else "tab:gray" for n in names]
    figure, axes = plt.subplots(1, 2, figsize=(max(7, 0.9 * len(names)), 3.4))
    for axis, values, label in ((axes[0], flips, "flip probability (%)"), (axes[1], distances, "top-5 distance")):
        axis.bar(range(len(names)), values, color=colors)
        axis.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
        axis.set_ylabel(label)
    axes[0].set_title(f"mFR {_number(results['mfr'], 1 if results['p_baseline'] else 100)} (grey: validation)", fontsize=8)
    axes[1].set_title(f"mT5D {_number(results['mt5d'])}", fontsize=8)
    return figure_png(figure)


def comparison_rows(loaded: Sequence[dict]) -> list[tuple[str, list[float | None]]]:
    """mFR, mT5D and each shared test perturbation's flip probability, for `augmix report A B`."""
    if not all("mfr" in result for result in loaded):
        return []
    shared = [n for n in TEST_PERTURBATIONS if all(n in r["flip_probabilities"] for r in loaded)]
    return ([("mFR", [r["mfr"] for r in loaded]), ("mT5D", [r["mt5d"] for r in loaded])]
            + [(f"flip probability {n} (%)", [100 * r["flip_probabilities"][n] for r in loaded]) for n in shared])
