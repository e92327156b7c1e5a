"""Storage URIs: a local path or s3://bucket/prefix, read and written the same way.

Everything a run writes (checkpoints, evaluation cells, results) goes through these functions so
that no code assumes a disk shared between nodes. S3 goes through pyarrow.fs (what Ray itself
uses); `FileSystem.from_uri` honours the standard AWS environment (AWS_ENDPOINT_URL_S3,
AWS_REGION, credentials), so endpoints and keys never appear in configs or results.
"""
from __future__ import annotations

import json
import os
import posixpath
import uuid
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from augmix.errors import InputError, MissingInput


class StorageError(InputError, OSError):
    """A storage failure explained in one line (bucket, what failed, what to check)."""


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def join(uri: str, *parts: str) -> str:
    if is_remote(uri):
        return posixpath.join(uri.rstrip("/"), *parts)
    return str(Path(uri.removeprefix("file://")).joinpath(*parts))


def absolute(uri: str) -> str:
    """Local paths made absolute (Ray workers run in other directories); URIs unchanged."""
    return uri if is_remote(uri) else str(Path(uri.removeprefix("file://")).expanduser().resolve())


def bucket_of(uri: str) -> str:
    return uri.split("://", 1)[1].split("/", 1)[0]


def explain(error: Exception, uri: str, action: str) -> StorageError:
    """Turn pyarrow/boto errors into one actionable line naming the bucket."""
    text = str(error)
    if not is_remote(uri):
        return StorageError(f"cannot {action} {uri}: {text.splitlines()[0] if text else type(error).__name__}")
    bucket = bucket_of(uri)
    upper = text.upper()
    if "NO_SUCH_BUCKET" in upper or "NOSUCHBUCKET" in upper or "BUCKET DOES NOT EXIST" in upper:
        reason = f"bucket {bucket!r} does not exist (create it or fix the URI)"
    elif any(k in upper for k in ("ACCESS_DENIED", "ACCESSDENIED", "SIGNATURE", "INVALIDACCESSKEYID", "FORBIDDEN", "403")):
        reason = f"access to bucket {bucket!r} denied (check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the instance profile)"
    elif any(k in upper for k in ("CONNECT", "NETWORK", "TIMEOUT", "TIMED OUT", "RESOLVE")):
        reason = f"cannot reach the S3 endpoint for bucket {bucket!r} (check AWS_ENDPOINT_URL_S3 / network)"
    else:
        reason = f"bucket {bucket!r}: {text.splitlines()[0] if text else type(error).__name__}"
    return StorageError(f"cannot {action} {uri}: {reason}")


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or an s3:// URI."""
    if not is_remote(uri):
        return pafs.LocalFileSystem(), absolute(uri)
    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except Exception as error:  # noqa: BLE001 - pyarrow raises several types here
        raise explain(error, uri, "open") from None
    return fs, path


def _parent_dirs(fs: pafs.FileSystem, path: str) -> None:
    if isinstance(fs, pafs.LocalFileSystem):
        fs.create_dir(posixpath.dirname(path), recursive=True)


def write_bytes(uri: str, data: bytes) -> None:
    """Write atomically: a reader never sees half a file (local: temp + rename; S3 PUT is atomic)."""
    fs, path = filesystem(uri)
    try:
        _parent_dirs(fs, path)
        if isinstance(fs, pafs.LocalFileSystem):
            tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
            with fs.open_output_stream(tmp) as out:
                out.write(data)
            os.replace(tmp, path)
        else:
            with fs.open_output_stream(path) as out:
                out.write(data)
    except StorageError:
        raise
    except Exception as error:  # noqa: BLE001
        raise explain(error, uri, "write") from None


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    try:
        with fs.open_input_stream(path) as stream:
            return stream.read()
    except FileNotFoundError:
        if uri.startswith("s3://"):
            check_bucket(uri)  # S3 reports a missing bucket as a missing key: say which one it is
        raise MissingInput(f"{uri} does not exist") from None
    except Exception as error:  # noqa: BLE001
        raise explain(error, uri, "read") from None


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    try:
        return fs.get_file_info(path).type != pafs.FileType.NotFound
    except Exception as error:  # noqa: BLE001
        raise explain(error, uri, "inspect") from None


def list_names(uri: str) -> list[str]:
    """Names (not paths) of the entries directly under a folder; [] when it does not exist."""
    fs, path = filesystem(uri)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except Exception as error:  # noqa: BLE001
        raise explain(error, uri, "list") from None
    return sorted(posixpath.basename(info.path) for info in infos)


def write_json(uri: str, value: Any) -> None:
    write_bytes(uri, json.dumps(value, indent=2, sort_keys=False).encode())


def read_json(uri: str) -> Any:
    return json.loads(read_bytes(uri))


def delete_dir(uri: str) -> None:
    fs, path = filesystem(uri)
    try:
        if fs.get_file_info(path).type != pafs.FileType.NotFound:
            fs.delete_dir(path)
    except Exception as error:  # noqa: BLE001
        raise explain(error, uri, "delete") from None


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
    if is_remote(uri) and uri.startswith("s3://"):
        check_bucket(uri)
    probe = join(uri, f".write-probe-{uuid.uuid4().hex[:8]}")
    write_bytes(probe, b"ok")
    fs, path = filesystem(probe)
    try:
        fs.delete_file(path)
    except Exception as error:  # noqa: BLE001
        raise explain(error, uri, "delete") from None


def apply_endpoint(endpoint_url: str | None) -> None:
    """A config's endpoint for a non-AWS S3 becomes the standard variable every library reads."""
    if endpoint_url:
        os.environ["AWS_ENDPOINT_URL_S3"] = endpoint_url
