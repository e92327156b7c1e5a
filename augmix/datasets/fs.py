"""Local paths and URIs (s3://, gs://, file://) behind one pyarrow filesystem interface.

pyarrow's S3 filesystem honours AWS_ENDPOINT_URL_S3 (and the usual AWS_* credentials), so custom
endpoints such as a local SeaweedFS/MinIO need no code here; pass a configured filesystem to
override.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import pyarrow.fs as pafs

from augmix import storage
from augmix.errors import InputError, MissingInput


@dataclass(frozen=True)
class Location:
    """A path inside a filesystem, and how to name it in messages."""

    filesystem: pafs.FileSystem
    path: str
    display: str

    def join(self, *parts: str) -> "Location":
        path = "/".join([self.path.rstrip("/"), *parts])
        display = "/".join([self.display.rstrip("/"), *parts])
        return Location(self.filesystem, path, display)

    def info(self) -> pafs.FileInfo:
        try:
            return self.filesystem.get_file_info(self.path)
        except OSError as error:
            raise unreadable(self, error) from None

    def open_input_file(self):
        """A seekable reader; unreachable or unreadable sources raise one ValueError naming them."""
        try:
            return self.filesystem.open_input_file(self.path)
        except FileNotFoundError:
            raise MissingInput(f"{self.display} not found") from None
        except OSError as error:
            raise unreadable(self, error) from None

    def exists(self) -> bool:
        return self.info().type != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        return self.info().type == pafs.FileType.Directory

    def is_file(self) -> bool:
        return self.info().type == pafs.FileType.File


def is_uri(path: str) -> bool:
    return "://" in str(path)


def locate(path: str | os.PathLike, filesystem: pafs.FileSystem | None = None) -> Location:
    """Resolve `path` (local path or URI) to a filesystem and the path inside it."""
    text = os.fspath(path)
    if filesystem is not None:
        inner = text.split("://", 1)[1] if is_uri(text) else text
        return Location(filesystem, inner, text)
    if is_uri(text):
        try:
            filesystem, inner = storage.filesystem(text)  # the project's one URI resolver
        except (ValueError, OSError) as error:  # pyarrow's ArrowInvalid is a ValueError
            raise InputError(f"cannot open {text}: {str(error).splitlines()[0]}") from None
        return Location(filesystem, inner, text)
    absolute = os.path.abspath(os.path.expanduser(text))
    return Location(pafs.LocalFileSystem(), absolute, text)


def unreadable(location: Location, error: OSError) -> InputError:
    """One line naming the source (and, for S3, the bucket and what to check)."""
    return InputError(str(storage.explain(error, location.display, "read")))
