"""Where each output of a run lives under its storage URI: the one module that names them.

Training, evaluation, the report, the -P section and the sweep all read and write below one
`storage.uri` (a folder or s3:// prefix); naming every path here means a renamed file is changed
once, and a reader (`augmix evaluate` loading a model, `augmix report` loading results.json) finds
what a writer wrote. It imports only augmix.storage, so any orchestrator module can use it
without an import cycle. The README's "What a run writes" table lists the same paths.

    train/<name>/checkpoint_*     Ray Train checkpoints (RunConfig storage_path = train/)
    model/model.pt                the final weights `augmix evaluate` loads
    eval/spec.json, eval/p_spec.json    what the -C / -P cells were computed from
    eval/cells/<corruption>-<severity>.npz, eval/p_cells/<perturbation>-<difficulty>.npz
    results.json, results.parquet, report.md, <plots>.png
    sweep/, trials/<trial id>/, trials.parquet, trials.md, objective_vs_hyperparameters.png,
    best_config.yaml (whose storage.uri is best/)
"""
from __future__ import annotations

from augmix import storage

TRAIN = "train"
MODEL_FOLDER = "model"
MODEL_FILE = "model.pt"
EVAL = "eval"
CELLS = "cells"
P_CELLS = "p_cells"
SPEC = "spec.json"
P_SPEC = "p_spec.json"
RESULTS_JSON = "results.json"
RESULTS_PARQUET = "results.parquet"
REPORT = "report.md"
HEATMAP_PLOT = "error_heatmap.png"
FAMILY_PLOT = "error_by_family.png"
RELIABILITY_PLOT = "reliability.png"
STABILITY_PLOT = "stability.png"
REPORT_PLOTS = (HEATMAP_PLOT, FAMILY_PLOT, RELIABILITY_PLOT, STABILITY_PLOT)
COMPARISON = ("comparison.md", "comparison.png", "comparison.json")  # `augmix report A B --out DIR`
SWEEP = "sweep"  # the Tune experiment folder
TRIALS = "trials"
TRIALS_PARQUET = "trials.parquet"
TRIALS_MD = "trials.md"
SWEEP_PLOT = "objective_vs_hyperparameters.png"
BEST_CONFIG = "best_config.yaml"
BEST_RUN = "best"  # the storage.uri written into best_config.yaml


def at(root: str, name: str) -> str:
    """A file directly under the run (results.json, report.md, a plot, trials.md, ...)."""
    return storage.join(root, name)


def train_uri(root: str) -> str:
    """Ray Train's storage_path; each run name is a folder below it."""
    return storage.join(root, TRAIN)


def model_uri(root: str) -> str:
    return storage.join(root, MODEL_FOLDER, MODEL_FILE)


def resolve_model_uri(checkpoint: str) -> str:
    """The model file itself (`….pt`) or a run folder that holds model/model.pt."""
    return checkpoint if checkpoint.endswith(".pt") else model_uri(checkpoint)


def eval_uri(root: str) -> str:
    return storage.join(root, EVAL)


def cells_uri(root: str) -> str:
    """One -C result file per (corruption, severity) cell; listing it tells a rerun what is done."""
    return storage.join(root, EVAL, CELLS)


def p_cells_uri(root: str) -> str:
    """One -P result file per (perturbation, difficulty) cell."""
    return storage.join(root, EVAL, P_CELLS)


def spec_uri(root: str) -> str:
    return storage.join(root, EVAL, SPEC)


def p_spec_uri(root: str) -> str:
    return storage.join(root, EVAL, P_SPEC)


def results_uri(run: str) -> str:
    """results.json of a run folder, or `run` itself when it already names a JSON file."""
    return run if run.endswith(".json") else storage.join(run, RESULTS_JSON)


def sweep_uri(root: str) -> str:
    return storage.join(root, SWEEP)


def trial_uri(root: str, trial_id: str) -> str:
    """A sweep trial's own storage.uri: a whole run layout of its own."""
    return storage.join(root, TRIALS, trial_id)
