"""Where bytes live: a local path or a URI (s3://bucket/prefix, file://), read and written the same way.

This is the project's one path abstraction. `locate` resolves a path or URI once into a `Location`
(a pyarrow filesystem and the path inside it, plus the name to show in messages); datasets walk
and read through Locations, and the run's own outputs (checkpoints, evaluation cells, results) go
through the URI-string functions below, which are Locations underneath. No code assumes a disk
shared between nodes.

S3 goes through pyarrow.fs (what Ray itself uses); `FileSystem.from_uri` honours the standard AWS
environment (AWS_ENDPOINT_URL_S3, AWS_REGION, credentials), so endpoints and keys never appear in
configs or results. Every failure comes out as one line naming the path (and, on S3, the bucket
and what to check): a `StorageError`, or `MissingInput` for something that is not there.
"""
from __future__ import annotations

import json
import os
import posixpath
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from augmix.errors import InputError, MissingInput


class StorageError(InputError, OSError):
    """A storage failure explained in one line (bucket, what failed, what to check)."""


# --- URI strings ------------------------------------------------------------------------------------

def is_remote(uri: str | os.PathLike) -> bool:
    """An object-store URI (s3://...); local paths and file:// URIs are not."""
    text = os.fspath(uri)
    return "://" in text and not text.startswith("file://")


def join(uri: str, *parts: str) -> str:
    if is_remote(uri):
        return posixpath.join(uri.rstrip("/"), *parts)
    return str(Path(uri.removeprefix("file://")).joinpath(*parts))


def absolute(uri: str | os.PathLike) -> str:
    """Local paths made absolute (Ray workers run in other directories); URIs unchanged."""
    text = os.fspath(uri)
    return text if is_remote(text) else str(Path(text.removeprefix("file://")).expanduser().resolve())


def bucket_of(uri: str) -> str:
    return uri.split("://", 1)[1].split("/", 1)[0]


def explain(error: Exception, uri: str, action: str) -> StorageError:
    """Turn pyarrow/boto errors into one actionable line naming the bucket (a StorageError stays as it is)."""
    if isinstance(error, StorageError):
        return error
    text = str(error)
    first_line = text.splitlines()[0] if text else type(error).__name__
    if not is_remote(uri):
        return StorageError(f"cannot {action} {uri}: {first_line}")
    bucket = bucket_of(uri)
    upper = text.upper()
    if "NO_SUCH_BUCKET" in upper or "NOSUCHBUCKET" in upper or "BUCKET DOES NOT EXIST" in upper:
        reason = f"bucket {bucket!r} does not exist (create it or fix the URI)"
    elif any(k in upper for k in ("ACCESS_DENIED", "ACCESSDENIED", "SIGNATURE", "INVALIDACCESSKEYID", "FORBIDDEN", "403")):
        reason = f"access to bucket {bucket!r} denied (check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the instance profile)"
    elif any(k in upper for k in ("CONNECT", "NETWORK", "TIMEOUT", "TIMED OUT", "RESOLVE")):
        reason = f"cannot reach the S3 endpoint for bucket {bucket!r} (check AWS_ENDPOINT_URL_S3 / network)"
    else:
        reason = f"bucket {bucket!r}: {first_line}"
    return StorageError(f"cannot {action} {uri}: {reason}")


# --- Location: a resolved path ----------------------------------------------------------------------

@dataclass(frozen=True)
class Location:
    """A path inside a filesystem, and how to name it in messages (the path or URI as the user gave it)."""

    filesystem: pafs.FileSystem
    path: str
    display: str

    @property
    def is_local(self) -> bool:
        return isinstance(self.filesystem, pafs.LocalFileSystem)

    def join(self, *parts: str) -> Location:
        path = "/".join([self.path.rstrip("/"), *parts])
        display = "/".join([self.display.rstrip("/"), *parts])
        return Location(self.filesystem, path, display)

    def info(self) -> pafs.FileInfo:
        try:
            return self.filesystem.get_file_info(self.path)
        except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
            raise explain(error, self.display, "read") from None

    def exists(self) -> bool:
        return self.info().type != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        return self.info().type == pafs.FileType.Directory

    def is_file(self) -> bool:
        return self.info().type == pafs.FileType.File

    def entries(self, recursive: bool = False, missing_ok: bool = False) -> list[pafs.FileInfo]:
        """What lies under this folder, in one listing (one LIST request per page on S3)."""
        try:
            return self.filesystem.get_file_info(pafs.FileSelector(self.path, recursive=recursive,
                                                                   allow_not_found=missing_ok))
        except FileNotFoundError:
            raise MissingInput(f"{self.display} not found") from None
        except (OSError, ValueError) as error:
            raise explain(error, self.display, "list") from None

    def matching_files(self, suffixes: tuple[str, ...], source: str, items: str) -> list[Location]:
        """This file, or every file under this folder whose name ends in one of `suffixes`, sorted by
        path: a dataset given as one file or a folder of them. `source`/`items` name them in errors
        ("Parquet source", "Parquet files")."""
        info = self.info()
        if info.type == pafs.FileType.NotFound:
            raise MissingInput(f"{source} not found: {self.display}")
        if info.type == pafs.FileType.File:
            return [self]
        found = sorted(entry.path for entry in self.entries(recursive=True)
                       if entry.type == pafs.FileType.File and entry.path.endswith(suffixes))
        if not found:
            raise MissingInput(f"no {items} ({', '.join(suffixes)}) under {self.display}")
        prefix = self.path.rstrip("/") + "/"
        return [self.join(path[len(prefix):]) if path.startswith(prefix) else Location(self.filesystem, path, path)
                for path in found]

    def open_input_file(self) -> Any:
        """A seekable reader (ranged reads on object stores)."""
        return self._open(self.filesystem.open_input_file)

    def open_input_stream(self) -> Any:
        """A sequential reader (one streaming GET on object stores)."""
        return self._open(lambda path: self.filesystem.open_input_stream(path, compression=None))

    def _open(self, opener) -> Any:
        try:
            return opener(self.path)
        except FileNotFoundError:
            if self.display.startswith("s3://"):
                check_bucket(self.display)  # S3 reports a missing bucket as a missing key: say which one it is
            raise MissingInput(f"{self.display} not found") from None
        except (OSError, ValueError) as error:
            raise explain(error, self.display, "read") from None

    def read_bytes(self) -> bytes:
        with self.open_input_stream() as stream:
            try:
                return stream.read()
            except OSError as error:
                raise explain(error, self.display, "read") from None

    def write_bytes(self, data: bytes) -> None:
        """Write atomically: a reader never sees half a file (local: temp + rename; an S3 PUT is atomic)."""
        try:
            if self.is_local:
                self.filesystem.create_dir(posixpath.dirname(self.path), recursive=True)
                partial = f"{self.path}.tmp-{uuid.uuid4().hex[:8]}"
                with self.filesystem.open_output_stream(partial) as out:
                    out.write(data)
                os.replace(partial, self.path)
            else:
                with self.filesystem.open_output_stream(self.path) as out:
                    out.write(data)
        except (OSError, ValueError) as error:
            raise explain(error, self.display, "write") from None

    def delete_file(self) -> None:
        try:
            self.filesystem.delete_file(self.path)
        except (OSError, ValueError) as error:
            raise explain(error, self.display, "delete") from None

    def delete_dir(self) -> None:
        """Remove the folder and everything in it; nothing to do when it is absent."""
        try:
            if self.exists():
                self.filesystem.delete_dir(self.path)
        except (OSError, ValueError) as error:
            raise explain(error, self.display, "delete") from None


def locate(uri: str | os.PathLike, filesystem: pafs.FileSystem | None = None) -> Location:
    """Resolve a local path or URI to its filesystem and the path inside it, once.

    With `filesystem` given (tests, a preconfigured S3), `uri` is taken as a path inside it."""
    text = os.fspath(uri)
    if filesystem is not None:
        return Location(filesystem, text.split("://", 1)[1] if "://" in text else text, text)
    if not is_remote(text):
        return Location(pafs.LocalFileSystem(), absolute(text), text)
    try:
        resolved, path = pafs.FileSystem.from_uri(text)
    except (OSError, ValueError) as error:  # an unknown scheme is an ArrowInvalid (a ValueError)
        raise explain(error, text, "open") from None
    return Location(resolved, path, text)


# --- the URI-string API for a run's own files ------------------------------------------------------

def read_bytes(uri: str) -> bytes:
    return locate(uri).read_bytes()


READ_THREADS = 16


def read_many(uris: list[str]) -> list[bytes]:
    """Many small objects (an evaluation's cells) at once, in order: on S3 each read is two round
    trips (pyarrow's HEAD, then the GET), so they overlap instead of adding up."""
    from concurrent.futures import ThreadPoolExecutor

    if len(uris) <= 1:
        return [read_bytes(uri) for uri in uris]
    with ThreadPoolExecutor(min(READ_THREADS, len(uris))) as pool:
        return list(pool.map(read_bytes, uris))


def write_bytes(uri: str, data: bytes) -> None:
    locate(uri).write_bytes(data)


def exists(uri: str) -> bool:
    return locate(uri).exists()


def list_names(uri: str) -> list[str]:
    """Names (not paths) of the entries directly under a folder, from one listing; [] when it does not exist."""
    return sorted(info.base_name for info in locate(uri).entries(missing_ok=True))


def write_json(uri: str, value: Any) -> None:
    write_bytes(uri, json.dumps(value, indent=2, sort_keys=False).encode())


def read_json(uri: str) -> Any:
    return json.loads(read_bytes(uri))


def delete_dir(uri: str) -> None:
    locate(uri).delete_dir()


def check_bucket(uri: str) -> None:
    """The bucket exists and our credentials reach it (some S3 servers create buckets on a PUT)."""
    import boto3
    from botocore.config import Config as BotoConfig
    from botocore.exceptions import BotoCoreError, ClientError

    bucket = bucket_of(uri)
    client = boto3.client("s3", config=BotoConfig(retries={"max_attempts": 2}, connect_timeout=10))
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise StorageError(f"cannot use {uri}: bucket {bucket!r} does not exist (create it or fix the URI)") from None
        raise explain(Exception(f"{code} {error}"), uri, "use") from None
    except BotoCoreError as error:
        raise explain(Exception(f"connect: {error}"), uri, "use") from None


def check_writable(uri: str) -> None:
    """Fail fast, before any work starts, when the run's storage cannot be written."""
    if uri.startswith("s3://"):
        check_bucket(uri)
    probe = locate(join(uri, f".write-probe-{uuid.uuid4().hex[:8]}"))
    probe.write_bytes(b"ok")
    probe.delete_file()


def apply_endpoint(endpoint_url: str | None) -> None:
    """A config's endpoint for a non-AWS S3 becomes the standard variable every library reads."""
    if endpoint_url:
        os.environ["AWS_ENDPOINT_URL_S3"] = endpoint_url
