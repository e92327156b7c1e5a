"""Aggregation and the human report: results.json, results.parquet, report.md and plots.

Everything here reads the per-cell results the evaluation wrote, so a report can be rebuilt at
any time from the cells alone, and `augmix report A B ...` compares finished runs side by side.
"""
from __future__ import annotations

import io
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from augmix import storage
from augmix.corruptions import CORRUPTION_FAMILIES, CORRUPTIONS, EXTRA_CORRUPTIONS
from augmix.errors import InputError, MissingInput
from augmix.metrics import corruption_summary, rms_calibration_error
from orchestrator import layout
from orchestrator.plots import figure_png, pyplot
from orchestrator.stability import comparison_rows, plot_stability, stability_markdown, stability_results
from workers.evaluate import CLEAN, EvaluationCell, decode_result
from workers.perturb import PerturbationCell

if TYPE_CHECKING:  # annotations only: aggregation and reports run without pydantic (benchmarks/reproduce_cifar10.py)
    from orchestrator.config import Config


def code_version() -> str:
    """Package version plus the git commit when running from a checkout."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        package = version("augmix-ray")
    except PackageNotFoundError:
        package = "unknown"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).resolve().parents[1]).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{package}+{commit}" if commit else package


def family_of(corruption: str) -> str:
    for family, names in CORRUPTION_FAMILIES.items():
        if corruption in names:
            return family
    return "clean" if corruption == CLEAN else "other"


def load_cells(config: Config, cells: Sequence[EvaluationCell]) -> dict[EvaluationCell, dict]:
    folder = layout.cells_uri(config.storage.uri)
    blobs = storage.read_many([storage.join(folder, cell.file_name) for cell in cells])
    return {cell: decode_result(blob) for cell, blob in zip(cells, blobs)}


def _error_table(results: dict[EvaluationCell, dict], names: Sequence[str], severities: Sequence[int]) -> dict:
    return {name: [results[EvaluationCell(name, s)]["error"] for s in severities]
            for name in names if all(EvaluationCell(name, s) in results for s in severities)}


def _calibration(results: dict[EvaluationCell, dict], name: str, severities: Sequence[int]) -> float:
    """RMS calibration error of one corruption over all its severities' images together."""
    confidence = np.concatenate([results[EvaluationCell(name, s)]["confidence"] for s in severities])
    correct = np.concatenate([results[EvaluationCell(name, s)]["correct"] for s in severities])
    return rms_calibration_error(confidence, correct)


def _summary(errors: dict, clean: dict | None, config: Config) -> dict[str, Any]:
    """CE / mCE / relative mCE once clean and every test corruption at all 5 severities are in."""
    keys = ("ce", "relative_ce", "mce", "relative_mce")
    if not (clean and errors and list(config.eval.severities) == [1, 2, 3, 4, 5]):
        return dict.fromkeys(keys)
    baseline = None if config.eval.baseline == "none" else "alexnet"
    summary = corruption_summary(errors, clean["error"], baseline=baseline)
    return {key: summary[key] for key in keys}


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _cell_row(cell: EvaluationCell, result: dict) -> dict[str, Any]:
    return {"suite": "c", "corruption": cell.corruption, "family": family_of(cell.corruption), "severity": cell.severity,
            "error": result["error"], "nll": float(result["nll"].mean()),
            "rms_calibration_error": rms_calibration_error(result["confidence"], result["correct"]),
            "images": int(len(result["correct"])), "seconds_produce": result["seconds_produce"],
            "seconds_infer": result["seconds_infer"], "device": result["device"]}


def aggregate(config: Config, cells: Sequence[EvaluationCell | PerturbationCell],
              model_name: str | None = None) -> dict[str, Any]:
    """All finished cells → the results dict (errors as fractions).

    A corruption enters the tables only with all its severities, so a partial evaluation still
    aggregates what is complete; mCE needs clean and the full 1-5 severity range. -P cells add the
    stability keys (orchestrator.stability) and their rows."""
    stability = stability_results(config, [cell for cell in cells if isinstance(cell, PerturbationCell)])
    results = load_cells(config, [cell for cell in cells if isinstance(cell, EvaluationCell)])
    severities = list(config.eval.severities)
    clean = results.get(EvaluationCell(CLEAN, 0))
    present = {cell.corruption for cell in results}
    errors = _error_table(results, [n for n in CORRUPTIONS if n in present], severities)
    extra = _error_table(results, [n for n in EXTRA_CORRUPTIONS if n in present], severities)
    corrupted = [results[EvaluationCell(n, s)] for n in errors for s in severities]
    per_corruption = {name: _calibration(results, name, severities) for name in [*errors, *extra]}
    timed = [*results.values(), *stability.get("p_cells", [])]  # both carry seconds_produce / seconds_infer
    return {
        "clean_error": clean["error"] if clean else None,
        "corruption_errors": errors,
        "extra_corruption_errors": extra,
        "severities": severities,
        "preset": config.eval.preset,
        "baseline": config.eval.baseline,
        "model": model_name or config.model.name,
        "n_images": int(len(clean["correct"])) if clean else None,
        **_summary(errors, clean, config),
        "mean_corruption_error": _mean([e for row in errors.values() for e in row]),
        "rms_calibration_error": {
            "clean": rms_calibration_error(clean["confidence"], clean["correct"]) if clean else None,
            "corrupted": _mean([per_corruption[name] for name in errors]),
            "per_corruption": per_corruption,
        },
        "nll": {"clean": float(clean["nll"].mean()) if clean else None,
                "corrupted": _mean([float(r["nll"].mean()) for r in corrupted])},
        "timing": {"seconds_produce_images": float(sum(r["seconds_produce"] for r in timed)),
                   "seconds_model": float(sum(r["seconds_infer"] for r in timed))},
        **{key: value for key, value in stability.items() if key != "p_cells"},
        "cells": [_cell_row(cell, result) for cell, result in sorted(results.items())] + stability.get("p_cells", []),
        "reliability": _reliability(results, list(errors), severities),
        "config": config.to_dict(),
        "code_version": code_version(),
    }


def _reliability(results: dict[EvaluationCell, dict], names: Sequence[str], severities: Sequence[int],
                 bins: int = 10) -> dict[str, list]:
    """Accuracy and mean confidence per confidence bin, clean vs all corrupted cells."""
    def curve(confidence: np.ndarray, correct: np.ndarray) -> dict[str, list]:
        index = np.clip((confidence * bins).astype(int), 0, bins - 1)
        count = np.bincount(index, minlength=bins)
        accuracy = np.bincount(index, weights=correct.astype(float), minlength=bins) / np.maximum(count, 1)
        mean_conf = np.bincount(index, weights=confidence, minlength=bins) / np.maximum(count, 1)
        return {"accuracy": accuracy.tolist(), "confidence": mean_conf.tolist(), "count": count.tolist()}

    curves = {}
    clean = results.get(EvaluationCell(CLEAN, 0))
    if clean:
        curves["clean"] = curve(clean["confidence"], clean["correct"])
    if names:
        keys = [EvaluationCell(n, s) for n in names for s in severities]
        curves["corrupted"] = curve(np.concatenate([results[k]["confidence"] for k in keys]),
                                    np.concatenate([results[k]["correct"] for k in keys]))
    return curves


# --- writing -----------------------------------------------------------------------------------------

def plot_heatmap(results: dict) -> bytes:
    plt = pyplot()
    table = {**results["corruption_errors"], **results.get("extra_corruption_errors", {})}
    names = list(table)
    values = np.array([table[n] for n in names]) * 100
    figure, axis = plt.subplots(figsize=(1.2 * len(results["severities"]) + 3, 0.35 * len(names) + 1.5))
    image = axis.imshow(values, cmap="magma_r", aspect="auto", vmin=0, vmax=100)
    axis.set_xticks(range(len(results["severities"])), [str(s) for s in results["severities"]])
    axis.set_yticks(range(len(names)), names)
    axis.set_xlabel("severity")
    for (row, col), value in np.ndenumerate(values):
        axis.text(col, row, f"{value:.1f}", ha="center", va="center", fontsize=7,
                  color="white" if value > values.max() * 0.6 else "black")
    figure.colorbar(image, ax=axis, label="top-1 error (%)")
    axis.set_title(f"error by corruption and severity (clean {100 * (results['clean_error'] or 0):.1f}%)")
    return figure_png(figure)


def plot_families(results: dict) -> bytes:
    plt = pyplot()
    families = [f for f in ("noise", "blur", "weather", "digital")
                if any(n in results["corruption_errors"] for n in CORRUPTION_FAMILIES.get(f, ()))]
    figure, axes = plt.subplots(1, max(1, len(families)), figsize=(4 * max(1, len(families)), 3.4), sharey=True)
    axes = np.atleast_1d(axes)
    for axis, family in zip(axes, families):
        for name in CORRUPTION_FAMILIES[family]:
            if name in results["corruption_errors"]:
                axis.plot(results["severities"], np.array(results["corruption_errors"][name]) * 100, marker="o", label=name)
        if results["clean_error"] is not None:
            axis.axhline(100 * results["clean_error"], color="gray", linestyle="--", linewidth=1, label="clean")
        axis.set_title(family)
        axis.set_xlabel("severity")
        axis.legend(fontsize=7)
    axes[0].set_ylabel("top-1 error (%)")
    return figure_png(figure)


def plot_reliability(results: dict) -> bytes:
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(4.2, 4.2))
    axis.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1, label="perfect calibration")
    for name, curve in results["reliability"].items():
        count = np.array(curve["count"])
        keep = count > 0
        axis.plot(np.array(curve["confidence"])[keep], np.array(curve["accuracy"])[keep], marker="o", label=name)
    axis.set_xlabel("confidence")
    axis.set_ylabel("accuracy")
    rms = results["rms_calibration_error"]
    axis.set_title(f"reliability (RMS cal. err. clean {_pct(rms['clean'])}, corrupted {_pct(rms['corrupted'])})", fontsize=8)
    axis.legend(fontsize=7)
    return figure_png(figure)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def markdown_report(results: dict) -> str:
    rms = results["rms_calibration_error"]
    ce_unit = "% of AlexNet" if results["baseline"] == "alexnet" else "uCE, % summed over severities"
    lines = [
        "# Corruption robustness report", "",
        f"- clean error: **{_pct(results['clean_error'])}** on {results['n_images']} images",
        f"- mean corruption error (the paper's CIFAR figure): **{_pct(results['mean_corruption_error'])}**",
        f"- mCE ({ce_unit}): **{_pct(results['mce'])}**; relative mCE: **{_pct(results['relative_mce'])}**",
        f"- RMS calibration error: clean {_pct(rms['clean'])}, corrupted {_pct(rms['corrupted'])}",
        f"- NLL: clean {_number(results['nll']['clean'])}, corrupted {_number(results['nll']['corrupted'])}",
        f"- model {results['model']}; preset {results['preset']}; code {results['code_version']}",
        "", "## Error (%) by corruption and severity", "",
        "| corruption | family | " + " | ".join(f"s{s}" for s in results["severities"]) + " | mean | CE | RMS cal. |",
        "|---|---|" + "---:|" * (len(results["severities"]) + 3),
    ]
    for table, extra in ((results["corruption_errors"], False), (results.get("extra_corruption_errors", {}), True)):
        for name, row in table.items():
            ce = "" if extra or not results["ce"] else f"{100 * results['ce'][name]:.1f}"
            calib = results["rms_calibration_error"]["per_corruption"].get(name)
            cal = "" if calib is None else f"{100 * calib:.1f}"
            label = f"{name} (validation)" if extra else name
            lines.append(f"| {label} | {family_of(name)} | " + " | ".join(f"{100 * e:.1f}" for e in row)
                         + f" | {100 * np.mean(row):.1f} | {ce} | {cal} |")
    lines += ["", *stability_markdown(results)]
    timing = results["timing"]
    lines += [f"Time in cells: {timing['seconds_produce_images']:.1f} s producing corrupted images or sequences, "
              f"{timing['seconds_model']:.1f} s in the model.", ""]
    if results["corruption_errors"] or results.get("extra_corruption_errors"):
        lines += [f"![error heatmap]({layout.HEATMAP_PLOT})", "", f"![error by family]({layout.FAMILY_PLOT})", ""]
    lines += [f"![reliability]({layout.RELIABILITY_PLOT})", ""]
    return "\n".join(lines)


def write_report(config: Config, results: dict) -> None:
    """results.json, results.parquet (one row per cell), report.md and the PNG plots under storage.uri."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = config.storage.uri
    storage.write_json(layout.at(root, layout.RESULTS_JSON), results)
    columns = list(dict.fromkeys(key for row in results["cells"] for key in row))  # -C and -P rows differ
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([{key: row.get(key) for key in columns} for row in results["cells"]]), buffer)
    storage.write_bytes(layout.at(root, layout.RESULTS_PARQUET), buffer.getvalue())
    if results["corruption_errors"] or results.get("extra_corruption_errors"):
        storage.write_bytes(layout.at(root, layout.HEATMAP_PLOT), plot_heatmap(results))
        storage.write_bytes(layout.at(root, layout.FAMILY_PLOT), plot_families(results))
    storage.write_bytes(layout.at(root, layout.RELIABILITY_PLOT), plot_reliability(results))
    if results.get("flip_probabilities"):
        storage.write_bytes(layout.at(root, layout.STABILITY_PLOT), plot_stability(results))
    storage.write_bytes(layout.at(root, layout.REPORT), markdown_report(results).encode())
    print(f"report: {layout.at(root, layout.REPORT)} (results.json, results.parquet, plots beside it)")


# --- comparing runs -----------------------------------------------------------------------------

def compare_runs(runs: Sequence[str], out: str, names: Sequence[str] | None = None) -> dict:
    """One table and one plot comparing finished runs (e.g. standard vs AugMix)."""
    plt = pyplot()
    if len(runs) < 2:
        raise InputError(f"augmix report needs two or more runs to compare, got {len(runs)}")
    labels = list(names) if names else [Path(r.rstrip("/")).name or r for r in runs]
    if len(labels) != len(runs):
        raise InputError(f"--names gives {len(labels)} labels for {len(runs)} runs")
    loaded = []
    for run in runs:
        uri = layout.results_uri(run)
        if not storage.exists(uri):
            raise MissingInput(f"{uri} not found: evaluate the run first (augmix evaluate / augmix run)")
        loaded.append(storage.read_json(uri))
    corruptions = [n for n in CORRUPTIONS if all(n in r["corruption_errors"] for r in loaded)]
    rows = [
        ("clean error", [r["clean_error"] for r in loaded]),
        ("mean corruption error", [r["mean_corruption_error"] for r in loaded]),
        ("mCE", [r["mce"] for r in loaded]),
        ("relative mCE", [r["relative_mce"] for r in loaded]),
        ("RMS calibration, clean", [r["rms_calibration_error"]["clean"] for r in loaded]),
        ("RMS calibration, corrupted", [r["rms_calibration_error"]["corrupted"] for r in loaded]),
    ] + [(name, [float(np.mean(r["corruption_errors"][name])) for r in loaded]) for name in corruptions]
    lines = ["# Comparison", "", "| metric (%) | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    lines += [f"| {metric} | " + " | ".join(_pct(v).rstrip("%") for v in values) + " |" for metric, values in rows]
    stability = comparison_rows(loaded)  # mFR, mT5D, flip probabilities: printed as they are
    lines += [f"| {metric} | " + " | ".join("–" if v is None else f"{v:.3f}" for v in values) + " |"
              for metric, values in stability]
    rows += stability
    figure, axis = plt.subplots(figsize=(max(6, 0.6 * (len(corruptions) + 2)), 3.6))
    groups = ["clean", *corruptions]
    width = 0.8 / len(loaded)
    for i, (label, result) in enumerate(zip(labels, loaded)):
        values = [result["clean_error"]] + [float(np.mean(result["corruption_errors"][n])) for n in corruptions]
        axis.bar(np.arange(len(groups)) + i * width, np.array(values) * 100, width, label=label)
    axis.set_xticks(np.arange(len(groups)) + width * (len(loaded) - 1) / 2, groups, rotation=60, ha="right", fontsize=7)
    axis.set_ylabel("error (%), mean over severities")
    axis.legend()
    markdown, png, json = layout.COMPARISON
    storage.write_bytes(layout.at(out, png), figure_png(figure))
    lines += ["", f"![comparison]({png})", ""]
    storage.write_bytes(layout.at(out, markdown), "\n".join(lines).encode())
    table = {"runs": list(runs), "names": labels, "rows": {metric: values for metric, values in rows}}
    storage.write_json(layout.at(out, json), table)
    print("\n".join(lines[:len(rows) + 4]))
    print(f"comparison written to {out}")
    return table
