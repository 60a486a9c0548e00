"""Reading a Dataset source: the exact bytes (for the content version) and a DataFrame.

`file://`, `http(s)://` and `s3://` sources are read through fsspec. S3 needs the optional
`s3fs` package; credentials come from the standard AWS_* environment variables that the
operator injects from the Dataset's Secret.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from .common import EXIT_BAD_INPUT, RuntimeFailure

if TYPE_CHECKING:
    import pandas as pd

FORMATS = ("csv", "parquet", "jsonl")
SCHEMES = ("file", "http", "https", "s3")
CHUNK = 1 << 20

# Compression inferred from the URI suffix (csv/jsonl only; parquet compresses internally).
_COMPRESSION = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zst": "zstd", ".zip": "zip"}


class SourceUnreachable(RuntimeFailure):
    def __init__(self, message: str) -> None:
        super().__init__("SourceUnreachable", message, EXIT_BAD_INPUT)


class UnreadableData(RuntimeFailure):
    def __init__(self, message: str) -> None:
        super().__init__("UnreadableData", message, EXIT_BAD_INPUT)


@dataclass(frozen=True)
class LoadedData:
    frame: pd.DataFrame
    version: str
    size: int


def content_version(data: bytes) -> str:
    """The Dataset content version: `sha256:<hex>` of the exact bytes read."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def scheme_of(uri: str) -> str:
    scheme = urlparse(uri).scheme.lower()
    if scheme not in SCHEMES:
        raise SourceUnreachable(
            f"unsupported URI scheme {scheme or '(none)'!r}; use file://, http(s):// or s3://"
        )
    return scheme


def s3_storage_options(environ: Mapping[str, str]) -> dict[str, Any]:
    """s3fs options from the standard AWS_* variables (empty values are ignored, so s3fs
    falls back to its own credential chain, e.g. an IAM role)."""
    opts: dict[str, Any] = {}
    key = environ.get("AWS_ACCESS_KEY_ID") or ""
    secret = environ.get("AWS_SECRET_ACCESS_KEY") or ""
    token = environ.get("AWS_SESSION_TOKEN") or ""
    endpoint = environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL") or ""
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or ""
    if key:
        opts["key"] = key
    if secret:
        opts["secret"] = secret
    if token:
        opts["token"] = token
    client_kwargs: dict[str, Any] = {}
    if endpoint:
        client_kwargs["endpoint_url"] = endpoint
    if region:
        client_kwargs["region_name"] = region
    if client_kwargs:
        opts["client_kwargs"] = client_kwargs
    if not key and not secret and environ.get("DOCKYARD_S3_ANONYMOUS", "").lower() in ("1", "true"):
        opts["anon"] = True
    return opts


def storage_options(uri: str, environ: Mapping[str, str]) -> dict[str, Any]:
    """fsspec storage options for `uri`; raises SourceUnreachable if s3fs is missing."""
    scheme = scheme_of(uri)
    if scheme == "s3":
        if importlib.util.find_spec("s3fs") is None:
            raise SourceUnreachable("s3:// sources need the s3fs package: install s3fs in the runtime image")
        return s3_storage_options(environ)
    return {}


def _open_fs(uri: str, environ: Mapping[str, str]) -> tuple[Any, str]:
    import fsspec

    scheme = scheme_of(uri)
    opts = storage_options(uri, environ)
    if scheme == "file":
        parsed = urlparse(uri)
        if parsed.netloc not in ("", "localhost"):
            raise SourceUnreachable(f"file:// URI must not name a host: {uri}")
        return fsspec.filesystem("file"), unquote(parsed.path)
    fs, path = fsspec.core.url_to_fs(uri, **opts)
    return fs, path


def read_source_bytes(
    uri: str,
    environ: Mapping[str, str] | None = None,
    *,
    attempts: int = 3,
    backoff: float = 1.0,
    max_bytes: int | None = None,
) -> bytes:
    """Read all bytes of `uri`. Network errors are retried `attempts` times with backoff;
    a missing file is not retried. Raises SourceUnreachable."""
    environ = os.environ if environ is None else environ
    fs, path = _open_fs(uri, environ)
    last: BaseException | None = None
    for attempt in range(max(1, attempts)):
        try:
            buf = bytearray()
            with fs.open(path, "rb") as fh:
                while True:
                    chunk = fh.read(CHUNK)
                    if not chunk:
                        break
                    buf.extend(chunk)
                    if max_bytes is not None and len(buf) > max_bytes:
                        raise SourceUnreachable(f"source is larger than the limit of {max_bytes} bytes")
            return bytes(buf)
        except SourceUnreachable:
            raise
        except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
            raise SourceUnreachable(f"cannot read {uri}: {type(exc).__name__}: {exc}") from exc
        except ImportError as exc:
            raise SourceUnreachable(f"cannot read {uri}: missing package: {exc}") from exc
        except Exception as exc:  # network errors come in many types (aiohttp, botocore, OSError)
            last = exc
            if attempt + 1 < attempts:
                time.sleep(backoff * (2**attempt))
    raise SourceUnreachable(f"cannot read {uri}: {type(last).__name__}: {last}")


def compression_for(uri: str) -> str | None:
    path = urlparse(uri).path.lower()
    for suffix, name in _COMPRESSION.items():
        if path.endswith(suffix):
            return name
    return None


def parse_frame(data: bytes, fmt: str, uri: str = "") -> pd.DataFrame:
    """Parse bytes in `fmt` (csv|parquet|jsonl) into a DataFrame; raises UnreadableData."""
    import pandas as pd

    if fmt not in FORMATS:
        raise UnreadableData(f"unsupported format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if not data:
        raise UnreadableData("the source is empty (0 bytes)")
    compression = compression_for(uri)
    try:
        if fmt == "csv":
            return pd.read_csv(io.BytesIO(data), compression=compression)
        if fmt == "jsonl":
            return pd.read_json(io.BytesIO(data), lines=True, compression=compression)
        return pd.read_parquet(io.BytesIO(data))
    except Exception as exc:  # pandas/pyarrow raise many parser error types
        raise UnreadableData(f"cannot parse the source as {fmt}: {type(exc).__name__}: {exc}") from exc


def load_dataset(uri: str, fmt: str, environ: Mapping[str, str] | None = None) -> LoadedData:
    data = read_source_bytes(uri, environ)
    frame = parse_frame(data, fmt, uri)
    return LoadedData(frame=frame, version=content_version(data), size=len(data))
