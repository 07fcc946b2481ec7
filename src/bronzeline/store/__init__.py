"""Object store: the ObjectStore seam, its two implementations, batch files and manifests.

file:// URLs get a LocalStore (standard library only); s3:// URLs an S3Store, whose module (and
s3fs, the 's3' extra) is imported only then.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from bronzeline.config.models import BlobConfig
from bronzeline.errors import ConfigError
from bronzeline.extras import require
from bronzeline.store.base import ObjectStore
from bronzeline.store.local import LocalStore


def _local(blob: BlobConfig, base_dir: Path, project: str, env: Mapping[str, str] | None = None) -> ObjectStore:
    path = blob.url[len("file://"):]
    root = (base_dir / path).resolve() if not path.startswith("/") else Path(path)
    return LocalStore(root / project)


def _s3(blob: BlobConfig, base_dir: Path, project: str, env: Mapping[str, str] | None = None) -> ObjectStore:
    if not blob.url[len("s3://"):].split("/", 1)[0]:
        raise ConfigError(f"blob.url {blob.url!r} names no bucket; write s3://bucket/prefix")
    require("s3", "s3fs")
    from bronzeline.store.s3 import S3Store, s3_options

    return S3Store(f"{blob.url.rstrip('/')}/{project}", s3_options(blob, env))


STORES: dict[str, Callable[[BlobConfig, Path, str, Mapping[str, str] | None], ObjectStore]] = {
    "file": _local, "s3": _s3}


def open_store(blob: BlobConfig, base_dir: Path, project: str, env: Mapping[str, str] | None = None) -> ObjectStore:
    scheme = blob.url.split("://", 1)[0]
    factory = STORES.get(scheme)
    if factory is None:
        raise ConfigError(f"blob.url: unsupported scheme {scheme}://; use file:// or s3://")
    return factory(blob, base_dir, project, env)


__all__ = ["LocalStore", "ObjectStore", "open_store"]
