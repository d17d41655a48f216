"""Object stores: where blocks and metadata segments live. ``open_store`` picks a backend."""

from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit

from .base import (ConfigError, GuardedStore, NotFound, StoreWrapper, ObjectInfo, ObjectStore, PreconditionFailed,
                   RetryingStore, StoreError, Unavailable)

__all__ = ["open_store", "ObjectStore", "ObjectInfo", "StoreError", "NotFound",
           "PreconditionFailed", "Unavailable", "ConfigError", "RetryingStore", "GuardedStore", "StoreWrapper"]


def open_store(url: str, endpoint: str | None = None, retry: bool = True, **options) -> ObjectStore:
    """Open ``file:///path`` or ``s3://bucket/prefix`` (endpoint from ``endpoint`` or
    ``AWS_ENDPOINT_URL``), wrapped in ``RetryingStore`` unless ``retry`` is false."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"file store URL must be file:///absolute/path, not {url!r}")
        from .local import LocalStore
        store: ObjectStore = LocalStore(unquote(parts.path), **options)
    elif parts.scheme == "s3":
        from .s3 import S3Store
        endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL") or None
        store = S3Store(parts.netloc, unquote(parts.path), endpoint=endpoint, **options)
    else:
        raise ConfigError(f"unknown store URL {url!r}: use file:///path or s3://bucket/prefix")
    return RetryingStore(store) if retry else store
