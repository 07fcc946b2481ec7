"""ObjectStore on an S3-compatible store, over s3fs (the 's3' extra; imported only for s3:// URLs).

An object exists only once its upload (one PUT, or a multipart upload's completion) succeeds; a
failed or interrupted write aborts the upload instead of completing it. A move is a copy in the
store, verified (size, then ETag or sha256), then the delete of the original. Failures of the store
raise StoreError with the client library's exception as the cause (pipeline.attempts.classify reads it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any, BinaryIO, NoReturn, cast
from urllib.parse import urlsplit

import s3fs

from bronzeline.config.models import BlobConfig
from bronzeline.connections import is_loopback
from bronzeline.errors import BronzelineError, ConfigError, StoreError
from bronzeline.store.base import sha256_of, store_failure


def s3_options(blob: BlobConfig, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """s3fs's options for blob. Endpoint, region and credentials come from blob: keys (written as
    ${VAR}) or else from the standard AWS environment variables, which botocore reads itself."""
    env = os.environ if env is None else env
    endpoint = blob.endpoint_url or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    region = blob.region or env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION")
    if endpoint and blob.require_tls:
        parts = urlsplit(endpoint)
        if parts.scheme == "http" and not is_loopback(parts.hostname):
            raise ConfigError(f"blob: the S3 endpoint {parts.scheme}://{parts.hostname} is not encrypted; use "
                              "https:// (or set blob.require_tls: false if the network is trusted)")
    # A short connect timeout and few retries inside botocore (AWS_MAX_ATTEMPTS and AWS_RETRY_MODE, when
    # set, decide instead); pipeline/attempts.py retries whole runs.
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
    return options


class S3Store:
    def __init__(self, url: str, options: dict[str, Any] | None = None) -> None:
        self.url = url.rstrip("/")
        self.root = self.url[len("s3://"):]
        self.bucket = self.root.split("/", 1)[0]
        if not self.bucket:
            raise ConfigError(f"blob.url {url!r} names no bucket; write s3://bucket/prefix")
        try:
            self.fs: Any = s3fs.S3FileSystem(**(options or {}))
        except (TypeError, ValueError) as exc:
            raise StoreError(f"object store {self.url}: {exc}") from None
        self.fs.retries = 3  # s3fs's own retries of dropped connections (default 5)

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}" if key else self.root

    def display(self, key: str) -> str:
        return f"{self.url}/{key}"

    def _fail(self, what: str, key: str, exc: BaseException) -> NoReturn:
        raise store_failure(what, self.display(key), exc) from exc

    @contextmanager
    def _errors(self, what: str, key: str) -> Iterator[None]:
        try:
            yield
        except BronzelineError:
            raise
        except Exception as exc:
            self._fail(what, key, exc)

    @contextmanager
    def open_write(self, key: str) -> Iterator[BinaryIO]:
        """A writer whose object appears under `key` only when the block exits cleanly. Failures of the
        store raise StoreError; the caller's own exceptions pass through (and nothing appears)."""
        with self._errors("starting the upload of", key):
            handle = self.fs.open(self._path(key), "wb")
        # Until the block ends cleanly, nothing may complete the upload: not even the file object's
        # __del__ (which closes, and so completes, whatever it holds) if it is collected unfinished.
        handle.autocommit = False
        try:
            yield cast(BinaryIO, _Writer(self, key, handle))
        except BaseException:
            self._abort(handle)
            raise
        try:
            handle.autocommit = True
            handle.close()  # one PUT, or the multipart upload's completion: the object appears now, whole
        except Exception as exc:
            self._abort(handle)
            self._fail("uploading", key, exc)

    @staticmethod
    def _abort(handle: Any) -> None:
        """Abort a multipart upload and make sure nothing (not even garbage collection) completes it."""
        with suppress(Exception):
            handle.discard()
        with suppress(Exception):
            handle.closed = True

    @contextmanager
    def open_read(self, key: str) -> Iterator[BinaryIO]:
        try:
            handle = self.fs.open(self._path(key), "rb")
        except FileNotFoundError:
            raise StoreError(f"{self.display(key)} does not exist") from None
        except Exception as exc:
            self._fail("opening", key, exc)
        with handle, self._errors("reading", key):
            yield handle

    def list(self, prefix: str) -> list[str]:
        try:
            entries = self.fs.ls(self._path(prefix), detail=True, refresh=True)
        except FileNotFoundError:
            self._check_bucket(prefix)
            return []
        except Exception as exc:
            self._fail("listing", prefix, exc)
        names = [e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e.get("type") != "directory"]
        return sorted(f"{prefix}/{name}" if prefix else name for name in names)

    def _check_bucket(self, prefix: str) -> None:
        with self._errors("checking the bucket of", prefix):
            found = self.fs.exists(self.bucket)
        if not found:
            raise StoreError(f"object store: bucket {self.bucket!r} of {self.url} does not exist; create it "
                             "(bronzeline does not create buckets) or fix blob.url")

    def exists(self, key: str) -> bool:
        with self._errors("checking", key):
            return bool(self.fs.exists(self._path(key)))

    def size(self, key: str) -> int:
        with self._errors("reading the size of", key):
            return int(self.fs.size(self._path(key)))

    def modified_at(self, key: str) -> float:
        with self._errors("reading the time of", key):
            info = self.fs.info(self._path(key))
        mtime = info.get("LastModified") or info.get("mtime") or info.get("created")
        return float(mtime.timestamp() if hasattr(mtime, "timestamp") else mtime or 0.0)

    def checksum(self, key: str) -> str:
        """sha256 of the stored bytes."""
        return sha256_of(self, key)

    def delete(self, key: str) -> None:
        with self._errors("deleting", key), suppress(FileNotFoundError):
            self.fs.rm(self._path(key))

    def copy(self, src: str, dst: str) -> None:
        """Copy in the store, then verify the copy's size and checksum against the original; a bad
        copy is removed."""
        with self._errors("copying to", dst):
            self.fs.copy(self._path(src), self._path(dst))
            same, why = self._same(src, dst)
        if not same:
            self.delete(dst)
            raise StoreError(f"copying {self.display(src)} to {self.display(dst)} gave a different {why}; the original "
                             "is kept, check the object store")

    def move(self, src: str, dst: str) -> None:
        """S3 has no rename: a verified copy, then the delete of the original."""
        self.copy(src, dst)
        self.delete(src)

    def _same(self, src: str, dst: str) -> tuple[bool, str]:
        a, b = self.fs.info(self._path(src)), self.fs.info(self._path(dst))
        if int(a.get("size") or 0) != int(b.get("size") or 0):
            return False, "size"
        tag_a, tag_b = str(a.get("ETag") or ""), str(b.get("ETag") or "")
        if tag_a and tag_a == tag_b:
            return True, ""  # the server's MD5 (or multipart digest) of both: the same bytes
        if tag_a and tag_b and "-" not in tag_a + tag_b:
            return False, "checksum (ETag)"
        return (self.checksum(src) == self.checksum(dst)), "checksum (sha256)"


class _Writer:
    """The handle open_write yields: the store's failures become StoreError, everything else passes."""

    def __init__(self, store: S3Store, key: str, handle: Any) -> None:
        self._store, self._key, self._handle = store, key, handle

    def write(self, data: bytes) -> int:
        try:
            return int(self._handle.write(data) or 0)
        except Exception as exc:
            self._store._fail("writing", self._key, exc)
