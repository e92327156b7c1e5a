"""What every Ray worker process of a job runs once, on its main thread, before its first task.

A task's arguments are unpickled on the worker, and unpickling them imports the modules they come
from (ours import torch). When another thread of the worker imports part of torch at that moment,
Python's import-deadlock avoidance hands one of them a half-initialised `torch`
("partially initialized module 'torch' has no attribute '_logging'"), and the module stays broken in
that process: every retry scheduled there fails the same way. Seen on a multi-node cluster, where
every cell task starts a fresh worker. Importing torch here, before the worker takes any task, leaves
nothing for two threads to race on; if it fails anyway, Ray replaces the worker. It costs every
worker of a job the torch import (~2 s of one core here) up front, which ours pay anyway; Ray's own
small actors (Train's controller, Data's stats actor) pay it once.
"""
from __future__ import annotations


def import_torch() -> None:
    import torch  # noqa: F401
