"""Object store: the ObjectStore seam, its implementations, batch files and manifests."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bronzeline.config.models import BlobConfig
from bronzeline.connections import is_loopback
from bronzeline.errors import ConfigError
from bronzeline.store.base import ObjectStore
from bronzeline.store.fsstore import FsspecStore


def _local(blob: BlobConfig, base_dir: Path, project: str) -> ObjectStore:
    path = blob.url[len("file://"):]
    root = (base_dir / path).resolve() if not path.startswith("/") else Path(path)
    return FsspecStore(f"file://{root}/{project}")


def _s3(blob: BlobConfig, base_dir: Path, project: str, env: Mapping[str, str] | None = None) -> ObjectStore:
    """s3://bucket/prefix through s3fs. Endpoint, region and credentials come from blob: keys (written as
    ${VAR}) or else from the standard AWS environment variables, which botocore reads itself."""
    env = os.environ if env is None else env
    bucket = blob.url[len("s3://"):].split("/", 1)[0]
    if not bucket:
        raise ConfigError(f"blob.url {blob.url!r} names no bucket; write s3://bucket/prefix")
    endpoint = blob.endpoint_url or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    region = blob.region or env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION")
    if endpoint and blob.require_tls:
        parts = urlsplit(endpoint)
        if parts.scheme == "http" and not is_loopback(parts.hostname):
            raise ConfigError(f"blob: the S3 endpoint {parts.scheme}://{parts.hostname} is not encrypted; use "
                              "https:// (or set blob.require_tls: false if the network is trusted)")
    # A short connect timeout and few retries inside botocore (AWS_MAX_ATTEMPTS and AWS_RETRY_MODE, when
    # set, decide instead); retry.py retries whole runs.
    config: dict[str, Any] = {"connect_timeout": 10, "read_timeout": 120}
    if not env.get("AWS_MAX_ATTEMPTS") and not env.get("AWS_RETRY_MODE"):
        config["retries"] = {"max_attempts": 3, "mode": "standard"}
    # Other processes write too: always list afresh.
    options: dict[str, Any] = {"use_listings_cache": False, "config_kwargs": config}
    if endpoint:
        options["endpoint_url"] = endpoint
    if region:
        options["client_kwargs"] = {"region_name": region}
    if blob.access_key_id:
        options["key"] = blob.access_key_id
    if blob.secret_access_key:
        options["secret"] = blob.secret_access_key
    store = FsspecStore(f"{blob.url.rstrip('/')}/{project}", options)
    store.fs.retries = 3  # s3fs's own retries of dropped connections (default 5)
    return store


STORES = {"file": _local, "s3": _s3}


def open_store(blob: BlobConfig, base_dir: Path, project: str) -> ObjectStore:
    scheme = blob.url.split("://", 1)[0]
    factory = STORES.get(scheme)
    if factory is None:
        raise ConfigError(f"blob.url: unsupported scheme {scheme}://; use file:// or s3://")
    return factory(blob, base_dir, project)


__all__ = ["FsspecStore", "ObjectStore", "open_store"]
