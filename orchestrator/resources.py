"""What a run, a trial or an evaluation cell needs from the cluster, and whether the cluster has it.

Ray waits forever for a resource request no node can satisfy (a GPU on a CPU-only cluster, more
CPUs than a node has, a custom resource no node type offers), and Ray Data's actors wait behind
trainers that took the last CPUs without a word. So before anything starts, the driver packs the
job's bundles onto the cluster's nodes (first fit, largest bundle first): what does not fit is
named in one line. On a cluster with an autoscaler, a missing node may still come: the driver says
what it waits for and lets Ray wait.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from augmix.errors import InputError

if TYPE_CHECKING:  # annotations only: aggregation and reports run without pydantic (benchmarks/reproduce_cifar10.py)
    from orchestrator.config import Config

AUTOSCALER_STATUS_KEY = b"__autoscaling_status"  # written by the autoscaler's monitor, when there is one


@dataclass(frozen=True)
class Demand:
    """`count` bundles of `bundle` resources, each on a single node, for `what`."""

    what: str
    bundle: dict[str, float]
    count: int = 1


def _positive(resources: dict[str, float]) -> dict[str, float]:
    return {name: float(amount) for name, amount in resources.items() if amount > 0}


def training_demands(config: Config) -> list[Demand]:
    """The trainers (none when the loop runs in the driver) and each trainer's AugMix actors."""
    scaling = config.scaling
    world = max(scaling.num_workers, 1)
    actors = max(1, -(-scaling.data_actors // world)) * world
    demands = [Demand("AugMix actor", _positive({"CPU": scaling.cpus_per_data_actor, **scaling.data_resources}),
                      actors)]
    if scaling.num_workers > 0:
        trainer = {"CPU": scaling.cpus_per_worker, "GPU": 1.0 if scaling.use_gpu else 0.0, **scaling.trainer_resources}
        demands.insert(0, Demand("trainer", _positive(trainer), scaling.num_workers))
    return demands


def trial_demands(config: Config) -> list[Demand]:
    """One sweep trial: its Tune function (tune.cpus_per_trial), the training run it starts, and a
    validation task (the validation rows are decoded or scored by Ray Data tasks each epoch)."""
    extra = [Demand("trial driver", _positive({"CPU": config.tune.cpus_per_trial})),
             Demand("validation task", _positive({"CPU": config.scaling.cpus_per_data_actor}))]
    return [demand for demand in extra if demand.bundle] + training_demands(config)


def cell_demand(config: Config, gpus_in_cluster: float) -> Demand:
    gpus = config.eval.gpus_per_cell if gpus_in_cluster > 0 else 0.0
    return Demand("evaluation cell", _positive({"CPU": config.eval.cpus_per_cell, "GPU": gpus}))


def node_resources() -> list[dict[str, float]]:
    """Total resources of each alive node (resources of one node cannot serve a bundle on another)."""
    import ray

    return [{name: float(amount) for name, amount in node["Resources"].items() if not name.startswith("node:")}
            for node in ray.nodes() if node.get("Alive")]


def has_autoscaler() -> bool:
    """True when an autoscaler with node types of its own watches this cluster (it may add the nodes
    a demand needs). Every Ray head runs the autoscaler's monitor; without a cluster config it is
    read-only and names each node's type after the node itself ("node_<id>")."""
    import json

    from ray.experimental.internal_kv import _internal_kv_get, _internal_kv_initialized

    status = _internal_kv_get(AUTOSCALER_STATUS_KEY) if _internal_kv_initialized() else None
    if not status:
        return False
    try:
        mapping = json.loads(status)["autoscaler_report"]["node_type_mapping"] or {}
    except (ValueError, KeyError, TypeError):
        mapping = {}  # not reported yet (a head that just started): nothing says nodes may come
    return any(node_type != f"node_{node}" for node, node_type in mapping.items())


def _place(bundles: list[tuple[str, dict[str, float]]], free: list[dict[str, float]]) -> tuple[str, dict] | None:
    """First-fit decreasing; returns (what, bundle) of the first bundle no node can take, else None.
    `free` is consumed."""
    for what, bundle in sorted(bundles, key=lambda item: -sum(item[1].values())):
        node = next((n for n in free if all(n.get(k, 0.0) >= v - 1e-9 for k, v in bundle.items())), None)
        if node is None:
            return what, bundle
        for key, value in bundle.items():
            node[key] -= value
    return None


def _bundles(demands: list[Demand]) -> list[tuple[str, dict[str, float]]]:
    return [(demand.what, demand.bundle) for demand in demands for _ in range(demand.count)]


def copies_that_fit(demands: list[Demand], nodes: list[dict[str, float]], limit: int) -> int:
    """How many copies of the whole demand (trials) the nodes hold at once, up to `limit`."""
    free = [dict(node) for node in nodes]
    for copies in range(limit):
        if _place(_bundles(demands), free) is not None:
            return copies
    return limit


def _describe(demands: list[Demand]) -> str:
    return " and ".join(f"{d.count} {d.what}(s) of {_format(d.bundle)}" for d in demands)


def _format(resources: dict[str, float]) -> str:
    return "{" + ", ".join(f"{name} {amount:g}" for name, amount in sorted(resources.items())) + "}"


def shortfall(demands: list[Demand], nodes: list[dict[str, float]], what: str) -> str | None:
    """One line naming what the nodes lack for `demands`, or None when they all fit at once."""
    unplaced = _place(_bundles(demands), [dict(node) for node in nodes])
    if unplaced is None:
        return None
    name, bundle = unplaced
    biggest = {key: max((node.get(key, 0.0) for node in nodes), default=0.0) for key in bundle}
    absent = [key for key, amount in biggest.items() if amount <= 0]
    if absent:
        reason = f"no node has {', '.join(absent)}"
    elif any(bundle[key] > biggest[key] + 1e-9 for key in bundle):
        reason = "the largest node has " + _format(biggest)
    else:
        reason = "they do not all fit at once on " + " + ".join(_format(node) for node in nodes)
    return f"{what} needs {_describe(demands)}; a {name} of {_format(bundle)} cannot be placed: {reason}"


def ensure_schedulable(demands: list[Demand], what: str, hint: str) -> None:
    """Raise one InputError line when the cluster cannot run `demands` and no autoscaler could help;
    with an autoscaler, print what the job waits for and return (Ray waits for the nodes)."""
    problem = shortfall(demands, node_resources(), what)
    if problem is None:
        return
    if has_autoscaler():
        print(f"waiting for the autoscaler: {problem}", flush=True)
        return
    raise InputError(f"{problem}; {hint}")


def sweep_concurrency(config: Config) -> int:
    """Trials that run at once: tune.max_concurrent_trials, lowered to what the cluster holds (trials
    that start beside others that took their CPUs wait forever); an InputError if not even one fits.
    An autoscaling cluster keeps the configured number (it adds nodes for them)."""
    demands = trial_demands(config)
    wanted = config.tune.max_concurrent_trials
    if has_autoscaler():
        return wanted
    nodes = node_resources()
    fits = copies_that_fit(demands, nodes, wanted)
    if fits == 0:
        raise InputError(f"{shortfall(demands, nodes, 'one sweep trial')}; lower scaling.* or use a larger cluster")
    if fits < wanted:
        print(f"sweep: {fits} trial(s) at a time (tune.max_concurrent_trials={wanted}, but one trial needs "
              f"{_describe(demands)} and the cluster holds {fits})", flush=True)
    return fits
