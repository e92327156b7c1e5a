"""The project's error for input a user can fix, as opposed to a bug.

An `InputError` (a bad config value, an unreadable dataset, an undecodable image, a label out of
range, a missing or forbidden object) is printed by the CLI as its one-line message with exit code
2, also when it was raised inside a Ray worker. Anything else is a bug: it keeps its traceback.
"""
from __future__ import annotations


class InputError(ValueError):
    """Bad input, named in one line with what is allowed instead."""


class BadRow(InputError):
    """A row of a dataset that cannot be used: where it is (source, row, path) and what is wrong.

    `row` is relative to what the raiser saw (a batch, a file); `at` re-states it in the
    dataset's own numbering once the caller knows that (a Ray worker knows the global row)."""

    def __init__(self, source: str, row: int, problem: str, path: str | None = None) -> None:
        self.source, self.row, self.problem, self.path = source, int(row), problem, path
        where = f"{source}: row {self.row}" + (f" ({path})" if path else "")
        super().__init__(f"{where}: {problem}")

    def __reduce__(self):  # pickles across Ray processes with its fields
        return BadRow, (self.source, self.row, self.problem, self.path)

    def at(self, source: str, row: int, path: str | None = None) -> "BadRow":
        return BadRow(source, row, self.problem, path if path is not None else self.path)


def find_input_error(error: BaseException) -> InputError | None:
    """The InputError behind `error`, however deep Ray wrapped it (task errors, worker-group errors,
    Ray Data's wrappers, exception chains), or None when the cause is something else (a bug)."""
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, InputError) and not isinstance(getattr(current, "cause", None), InputError):
            return current  # (Ray's task errors subclass their cause's type: look through to the cause)
        pending.extend(_wrapped(current))
    return None


def _wrapped(error: BaseException) -> list[BaseException]:
    """What an exception wraps: its cause and context, Ray's `cause` and per-worker failures."""
    inner: list = [error.__cause__, error.__context__, getattr(error, "cause", None)]
    for attribute in ("worker_failures", "errors"):
        value = getattr(error, attribute, None)
        if isinstance(value, dict):
            inner.extend(value.values())
        elif isinstance(value, (list, tuple)):
            inner.extend(value)
    return [item for item in inner if isinstance(item, BaseException)]


class MissingInput(InputError, FileNotFoundError):
    """A file, folder or object the input names does not exist."""
