"""Faults the tests inject into the training loop from outside, through its hooks
(`train(..., hooks=...)`, workers.train_loop.LoopRuntime): picklable callables that run inside the
Ray Train workers at named points. `by_value()` ships this module's code to the workers (they
cannot import the tests folder)."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path


def by_value() -> None:
    """Pickle this module's hooks by value, so a Ray worker needs no `tests` on its path."""
    import sys

    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@dataclass(frozen=True)
class KillOnce:
    """End the worker process of `rank` once, after the training steps of `epoch` and before its
    report (a marker file makes it once).

    Ray Train's controller collects reports asynchronously: a worker that dies a moment after a
    report can take that report (and its checkpoint) with it. The test wants a known last
    checkpoint, so the kill waits until the controller has registered one (its snapshot file in
    the run folder names a checkpoint), up to a minute."""

    epoch: int
    rank: int
    marker: str
    run_folder: str

    def __call__(self, event: str, epoch: int, rank: int) -> None:
        if event != "epoch_trained" or (epoch, rank) != (self.epoch, self.rank) or Path(self.marker).exists():
            return
        snapshot = Path(self.run_folder) / "checkpoint_manager_snapshot.json"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (snapshot.exists() and "checkpoint_" in snapshot.read_text()):
            time.sleep(0.2)
        Path(self.marker).write_text(f"killed rank {rank} at the end of epoch {epoch}\n")
        os._exit(1)


@dataclass(frozen=True)
class HoldBeforeReport:
    """Once, with `epoch`'s checkpoint written and about to be reported by `rank`, write this
    process's pid to `<folder>/holding` and wait (up to `limit_s`) for `<folder>/release`: a test
    takes the storage down in between, so the upload of exactly this checkpoint meets the outage."""

    epoch: int
    rank: int
    folder: str
    limit_s: float = 600.0

    def __call__(self, event: str, epoch: int, rank: int) -> None:
        folder = Path(self.folder)
        if event != "checkpoint_saved" or (epoch, rank) != (self.epoch, self.rank) or (folder / "holding").exists():
            return
        (folder / "holding").write_text(f"{os.getpid()}\n")
        deadline = time.monotonic() + self.limit_s
        while not (folder / "release").exists() and time.monotonic() < deadline:
            time.sleep(0.2)


@dataclass(frozen=True)
class RecordEpochs:
    """Append "<event> <epoch> <time>" lines to a file: when each epoch finished its steps."""

    path: str

    def __call__(self, event: str, epoch: int, rank: int) -> None:
        if event == "epoch_trained":
            with open(self.path, "a") as handle:
                handle.write(f"{event} {epoch} {time.time()}\n")
