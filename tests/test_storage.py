"""Storage URIs against a local folder and a real S3 server (SeaweedFS), with one-line errors."""
from __future__ import annotations


import pytest

from augmix import storage


def test_local_round_trip(tmp_path):
    uri = storage.join(str(tmp_path), "a", "b.json")
    storage.write_json(uri, {"x": 1})
    assert storage.read_json(uri) == {"x": 1}
    assert storage.exists(uri) and not storage.exists(storage.join(str(tmp_path), "nope"))
    assert storage.list_names(storage.join(str(tmp_path), "a")) == ["b.json"]
    assert storage.list_names(storage.join(str(tmp_path), "missing")) == []
    with pytest.raises(FileNotFoundError, match="missing.bin not found"):
        storage.read_bytes(storage.join(str(tmp_path), "missing.bin"))


def test_s3_round_trip(s3_bucket):
    base = f"s3://{s3_bucket}/run"
    storage.check_writable(base)
    storage.write_bytes(storage.join(base, "cells", "fog-3.json"), b"{}")
    storage.write_json(storage.join(base, "results.json"), {"mce": 0.1})
    assert storage.read_json(storage.join(base, "results.json")) == {"mce": 0.1}
    assert storage.exists(storage.join(base, "cells", "fog-3.json"))
    assert storage.list_names(storage.join(base, "cells")) == ["fog-3.json"]
    storage.delete_dir(storage.join(base, "cells"))
    assert storage.list_names(storage.join(base, "cells")) == []


def test_s3_wrong_credentials_name_the_bucket(s3_bucket, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    with pytest.raises(storage.StorageError) as error:
        storage.check_writable(f"s3://{s3_bucket}/run")
    message = str(error.value)
    assert s3_bucket in message and "denied" in message and "\n" not in message


def test_s3_missing_bucket_is_named(s3_server):
    with pytest.raises(storage.StorageError) as error:
        storage.check_writable("s3://no-such-bucket-augmix/run")
    message = str(error.value)
    assert "no-such-bucket-augmix" in message and "does not exist" in message and "\n" not in message
