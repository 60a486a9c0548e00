"""Readers, hashing and source options (no servers but a loopback HTTP one)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from dockyard.runtime import data
from dockyard.runtime.data import (
    SourceUnreachable,
    UnreadableData,
    content_version,
    load_dataset,
    parse_frame,
    read_source_bytes,
    s3_storage_options,
    storage_options,
)

from .helpers import IRIS_COLUMNS, write_iris_csv


@pytest.fixture
def small_frame() -> pd.DataFrame:
    return pd.DataFrame({"a": [1, 2, 3], "b": [0.5, None, 1.5], "c": ["x", "y", None]})


def test_content_version_is_sha256_of_exact_bytes() -> None:
    assert content_version(b"abc") == "sha256:" + hashlib.sha256(b"abc").hexdigest()
    assert content_version(b"abc") != content_version(b"abc\n")


def test_write_iris_csv_returns_its_version(tmp_path: Path) -> None:
    path = tmp_path / "iris.csv"
    version = write_iris_csv(path)
    assert version == content_version(path.read_bytes())
    loaded = load_dataset(path.as_uri(), "csv")
    assert loaded.version == version
    assert list(loaded.frame.columns) == IRIS_COLUMNS
    assert len(loaded.frame) == 150
    assert sorted(loaded.frame["species"].unique()) == ["setosa", "versicolor", "virginica"]


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_formats_roundtrip(tmp_path: Path, small_frame: pd.DataFrame, fmt: str) -> None:
    path = tmp_path / f"d.{fmt}"
    if fmt == "csv":
        small_frame.to_csv(path, index=False)
    elif fmt == "parquet":
        small_frame.to_parquet(path)
    else:
        small_frame.to_json(path, orient="records", lines=True)
    loaded = load_dataset(path.as_uri(), fmt)
    assert loaded.version == content_version(path.read_bytes())
    assert loaded.size == path.stat().st_size
    assert list(loaded.frame.columns) == ["a", "b", "c"]
    assert loaded.frame["a"].tolist() == [1, 2, 3]
    assert loaded.frame["b"].isna().sum() == 1
    assert loaded.frame["c"].isna().sum() == 1


def test_gzip_csv_by_suffix(tmp_path: Path, small_frame: pd.DataFrame) -> None:
    path = tmp_path / "d.csv.gz"
    small_frame.to_csv(path, index=False, compression="gzip")
    loaded = load_dataset(path.as_uri(), "csv")
    assert len(loaded.frame) == 3
    assert loaded.version == content_version(path.read_bytes())  # hash of the compressed bytes


def test_missing_file_is_source_unreachable(tmp_path: Path) -> None:
    with pytest.raises(SourceUnreachable) as exc:
        read_source_bytes((tmp_path / "nope.csv").as_uri())
    assert exc.value.reason == "SourceUnreachable"
    assert exc.value.exit_code == 2


def test_unsupported_scheme() -> None:
    with pytest.raises(SourceUnreachable, match="unsupported URI scheme"):
        read_source_bytes("ftp://example/x.csv")


@pytest.mark.parametrize(
    ("payload", "fmt"),
    [
        (b"", "csv"),
        (b"not parquet at all", "parquet"),
        (b'{"a": 1}\n{broken\n', "jsonl"),
        (b"a,b\n\xff\xfe,1\n", "csv"),
    ],
)
def test_unreadable_data(payload: bytes, fmt: str) -> None:
    with pytest.raises(UnreadableData) as exc:
        parse_frame(payload, fmt)
    assert exc.value.reason == "UnreadableData"


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))

    class Quiet(handler.func):  # type: ignore[name-defined]
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", tmp_path
    finally:
        server.shutdown()
        server.server_close()


def test_http_source(http_dir: tuple[str, Path]) -> None:
    base, root = http_dir
    version = write_iris_csv(root / "iris.csv")
    loaded = load_dataset(f"{base}/iris.csv", "csv", environ={})
    assert loaded.version == version
    assert len(loaded.frame) == 150


def test_http_404_is_source_unreachable(http_dir: tuple[str, Path]) -> None:
    base, _ = http_dir
    with pytest.raises(SourceUnreachable):
        read_source_bytes(f"{base}/missing.csv", {}, attempts=1)


def test_s3_options_from_aws_env() -> None:
    env = {
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "s3cr3t",
        "AWS_SESSION_TOKEN": "tok",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AWS_REGION": "eu-west-1",
    }
    assert s3_storage_options(env) == {
        "key": "AKIAEXAMPLE",
        "secret": "s3cr3t",
        "token": "tok",
        "client_kwargs": {"endpoint_url": "http://127.0.0.1:9000", "region_name": "eu-west-1"},
    }
    # Empty values (an optional Secret key that is absent) fall back to s3fs's own chain.
    assert s3_storage_options({"AWS_ACCESS_KEY_ID": "", "AWS_ENDPOINT_URL_S3": "http://h:1"}) == {
        "client_kwargs": {"endpoint_url": "http://h:1"}
    }


def test_s3_without_s3fs_says_install_s3fs(monkeypatch: pytest.MonkeyPatch) -> None:
    real = data.importlib.util.find_spec
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: None if name == "s3fs" else real(name))
    with pytest.raises(SourceUnreachable, match="install s3fs"):
        storage_options("s3://bucket/key.csv", {})


def test_s3_filesystem_wiring() -> None:
    """With s3fs installed, the filesystem gets the endpoint and credentials (no request made)."""
    pytest.importorskip("s3fs")
    env = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_ENDPOINT_URL": "http://127.0.0.1:1"}
    fs, path = data._open_fs("s3://bucket/dir/data.csv", env)
    assert path == "bucket/dir/data.csv"
    assert fs.key == "k" and fs.secret == "s"
    assert fs.client_kwargs["endpoint_url"] == "http://127.0.0.1:1"


def test_s3_against_moto(tmp_path: Path) -> None:
    """A real S3-compatible endpoint on loopback, when moto and s3fs are installed."""
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    import boto3

    from .helpers import free_port

    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="k",
            aws_secret_access_key="s",
            region_name="us-east-1",
        )
        s3.create_bucket(Bucket="data")
        version = write_iris_csv(tmp_path / "iris.csv")
        s3.put_object(Bucket="data", Key="iris.csv", Body=(tmp_path / "iris.csv").read_bytes())
        env = {
            "AWS_ACCESS_KEY_ID": "k",
            "AWS_SECRET_ACCESS_KEY": "s",
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_REGION": "us-east-1",
        }
        loaded = load_dataset("s3://data/iris.csv", "csv", env)
        assert loaded.version == version
    finally:
        server.stop()


def test_file_uri_with_host_is_refused() -> None:
    with pytest.raises(SourceUnreachable, match="must not name a host"):
        read_source_bytes("file://evil.example/etc/passwd")


def test_json_dump_of_version_is_stable(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"a": 1}) + "\n")
    assert load_dataset(path.as_uri(), "jsonl").version == content_version(path.read_bytes())
