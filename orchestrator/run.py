"""`augmix run`: the main job — train, evaluate on every corruption, write the report."""
from __future__ import annotations

from orchestrator import layout
from orchestrator.config import Config


def run(config: Config, address: str | None = None) -> dict:
    """Train (resuming when the run's storage already holds checkpoints), then evaluate and report.

    One storage URI holds the whole run (orchestrator.layout): train/ (Ray Train checkpoints),
    model/model.pt, eval/cells/ (one result per corruption x severity), results.json, report.md and plots.
    """
    from orchestrator.evaluation import evaluate
    from orchestrator.training import train

    trained = train(config, address=address)
    results = evaluate(config, checkpoint=trained.model_uri, address=address)
    print(f"run finished: results in {layout.at(config.storage.uri, layout.RESULTS_JSON)}")
    return results
