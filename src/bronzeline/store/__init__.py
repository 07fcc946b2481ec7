"""Object store: the ObjectStore seam, its implementations, batch files and manifests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bronzeline.config.models import BlobConfig
from bronzeline.errors import ConfigError
from bronzeline.store.base import ObjectStore
from bronzeline.store.fsstore import FsspecStore


def _local(blob: BlobConfig, base_dir: Path, project: str) -> ObjectStore:
    path = blob.url[len("file://"):]
    root = (base_dir / path).resolve() if not path.startswith("/") else Path(path)
    return FsspecStore(f"file://{root}/{project}")


def _s3(blob: BlobConfig, base_dir: Path, project: str) -> ObjectStore:
    options: dict[str, Any] = {}
    if blob.endpoint_url:
        options["endpoint_url"] = blob.endpoint_url
    if blob.region:
        options["client_kwargs"] = {"region_name": blob.region}
    if blob.access_key_id:
        options["key"] = blob.access_key_id
    if blob.secret_access_key:
        options["secret"] = blob.secret_access_key
    return FsspecStore(f"{blob.url.rstrip('/')}/{project}", options)


STORES = {"file": _local, "s3": _s3}


def open_store(blob: BlobConfig, base_dir: Path, project: str) -> ObjectStore:
    scheme = blob.url.split("://", 1)[0]
    factory = STORES.get(scheme)
    if factory is None:
        raise ConfigError(f"blob.url: unsupported scheme {scheme}://; use file:// or s3://")
    return factory(blob, base_dir, project)


__all__ = ["FsspecStore", "ObjectStore", "open_store"]
