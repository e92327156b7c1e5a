"""`augmix run`: the main job — train, evaluate on every corruption, write the report."""
from __future__ import annotations

from augmix.storage import join
from orchestrator.config import Config


def run(config: Config, address: str | None = None) -> dict:
    """Train (resuming when the run's storage already holds checkpoints), then evaluate and report.

    One storage URI holds the whole run: train/ (Ray Train checkpoints), model/model.pt,
    eval/cells/ (one result per corruption x severity), results.json, report.md and plots.
    """
    from orchestrator.evaluation import evaluate
    from orchestrator.training import train

    trained = train(config, address=address)
    results = evaluate(config, checkpoint=trained.model_uri, address=address)
    print(f"run finished: results in {join(config.storage.uri, 'results.json')}")
    return results
