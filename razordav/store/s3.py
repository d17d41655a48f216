"""S3 object store through boto3: AWS, SeaweedFS, MinIO, or any compatible endpoint.

Keys live below ``prefix/`` in ``bucket``. Conditional puts use ``If-None-Match: *`` and
``If-Match: <etag>`` (S3 since 2024; SeaweedFS and MinIO support them). Which errors are
transient is decided here (``is_transient``) and retried by ``RetryingStore``; botocore's
own retries are kept small so the wrapper's deadline holds.

Threading: one boto3 client is shared; boto3 clients are thread-safe.
"""

from __future__ import annotations

import io
import logging
import socket
import struct
import time
from typing import Iterable, Iterator

import boto3
import botocore.exceptions
from botocore.config import Config

from .base import ConfigError, NotFound, ObjectInfo, ObjectStore, PreconditionFailed

log = logging.getLogger(__name__)

_TRANSIENT_CODES = {
    "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
    "InternalError", "ServiceUnavailable", "503", "500", "502", "504",
}


class S3Store(ObjectStore):
    def __init__(self, bucket: str, prefix: str = "", endpoint: str | None = None,
                 region: str | None = None, path_style: bool = True,
                 connect_timeout: float = 3.0, read_timeout: float = 30.0,
                 max_pool: int = 32, check_bucket: bool = True):
        if not bucket:
            raise ConfigError("S3 store URL needs a bucket: s3://bucket/prefix")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.prefix}"
        config = Config(
            s3={"addressing_style": "path" if path_style else "auto"},
            retries={"max_attempts": 1, "mode": "standard"},
            connect_timeout=connect_timeout, read_timeout=read_timeout,
            max_pool_connections=max_pool,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self.client = boto3.client("s3", endpoint_url=endpoint, region_name=region or "us-east-1",
                                   config=config)
        self._send_limit: float | None = None   # seconds a request body may take to send
        if check_bucket:
            self._check_bucket()

    def _check_bucket(self):
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchBucket", "NotFound"):
                raise ConfigError(f"bucket {self.bucket!r} does not exist") from None
            if code in ("403", "AccessDenied"):
                # HEAD has no body, so some servers say 403 for a missing bucket: ask again
                # with a request whose error names the cause.
                try:
                    self.client.list_objects_v2(Bucket=self.bucket, MaxKeys=1)
                except botocore.exceptions.ClientError as exc2:
                    if _code(exc2) == "NoSuchBucket":
                        raise ConfigError(f"bucket {self.bucket!r} does not exist") from None
                    why = exc2.response.get("Error", {}).get("Message") or _code(exc2)
                    raise ConfigError(f"access to bucket {self.bucket!r} denied: {why}") from None
                raise ConfigError(f"access to bucket {self.bucket!r} denied") from None
            raise
        except botocore.exceptions.NoCredentialsError:
            raise ConfigError("no S3 credentials: set AWS_ACCESS_KEY_ID and "
                              "AWS_SECRET_ACCESS_KEY") from None
        except (botocore.exceptions.EndpointConnectionError,
                botocore.exceptions.ConnectTimeoutError) as exc:
            raise ConfigError(f"cannot reach the S3 endpoint: {exc}") from None

    def _key(self, key: str) -> str:
        return self.prefix + key

    def limit_write_time(self, seconds: float) -> None:
        """Bound how late a write can reach the server: connecting takes at most a fifth of
        ``seconds``; the body must be handed to the kernel within half of it (``_Deadline``
        aborts the request otherwise, so the server never sees a whole body); data the
        kernel could not get acknowledged within the last fifth aborts the connection
        (``TCP_USER_TIMEOUT``); and every close is abortive (``SO_LINGER`` 0), so a request
        given up on is never delivered later by the kernel's retransmissions."""
        self._send_limit = seconds / 2
        options = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
                   (socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))]
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            options.append((socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT,
                            max(1, int(seconds / 5 * 1000))))
        try:   # botocore takes socket options only through its http session
            session = self.client._endpoint.http_session
            session._socket_options = options
            session._timeout = type(session._timeout)(
                connect=min(session._timeout.connect_timeout, seconds / 5),
                read=session._timeout.read_timeout)
            from urllib3 import PoolManager
            session._manager = PoolManager(**session._get_pool_manager_kwargs())
            session._manager.pool_classes_by_scheme = session._pool_classes_by_scheme
        except AttributeError as exc:   # a botocore whose session changed shape
            log.warning("cannot bound S3 request times (%s): fencing relies on the lease's "
                        "margin alone", exc)

    def write_socket_options(self) -> list:
        """The socket options in force (for tests)."""
        return list(self.client._endpoint.http_session._socket_options)

    def put(self, key, data, *, if_absent=False, if_match=None, storage_class=None):
        body = data if self._send_limit is None else \
            _Deadline(data, time.monotonic() + self._send_limit)
        args = {"Bucket": self.bucket, "Key": self._key(key), "Body": body}
        if if_absent:
            args["IfNoneMatch"] = "*"
        if if_match is not None:
            args["IfMatch"] = if_match
        if storage_class:
            args["StorageClass"] = storage_class
        try:
            return self.client.put_object(**args)["ETag"].strip('"')
        except botocore.exceptions.ClientError as exc:
            if _code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                raise PreconditionFailed(f"{key}: {_code(exc)}") from None
            if if_match is not None and _code(exc) in ("NoSuchKey", "404"):
                raise PreconditionFailed(f"{key} is missing") from None
            raise

    def get(self, key, offset=0, length=None):
        args = {"Bucket": self.bucket, "Key": self._key(key)}
        if length is not None:
            if length <= 0:
                return b""
            args["Range"] = f"bytes={offset}-{offset + length - 1}"
        elif offset:
            args["Range"] = f"bytes={offset}-"
        try:
            resp = self.client.get_object(**args)
        except botocore.exceptions.ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404", "NotFound"):
                raise NotFound(key) from None
            if _code(exc) == "InvalidRange":
                return b""
            raise
        with resp["Body"] as body:
            return body.read()

    def head(self, key):
        try:
            resp = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except botocore.exceptions.ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404", "NotFound"):
                raise NotFound(key) from None
            raise
        return ObjectInfo(key, resp["ContentLength"], resp["ETag"].strip('"'),
                          resp["LastModified"].timestamp(), resp.get("StorageClass"))

    def delete_many(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        for i in range(0, len(keys), 1000):
            batch = [{"Key": self._key(k)} for k in keys[i:i + 1000]]
            resp = self.client.delete_objects(Bucket=self.bucket,
                                              Delete={"Objects": batch, "Quiet": True})
            errors = [e for e in resp.get("Errors", []) if e.get("Code") != "NoSuchKey"]
            if errors:
                raise botocore.exceptions.ClientError(
                    {"Error": {"Code": errors[0]["Code"], "Message": errors[0].get("Message", "")}},
                    "DeleteObjects")

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        strip = len(self.prefix)
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
            for obj in page.get("Contents", []):
                yield ObjectInfo(obj["Key"][strip:], obj["Size"], obj["ETag"].strip('"'),
                                 obj["LastModified"].timestamp(), obj.get("StorageClass"))

    def copy(self, src, dst, storage_class=None):
        args = {"Bucket": self.bucket, "Key": self._key(dst),
                "CopySource": {"Bucket": self.bucket, "Key": self._key(src)}}
        if storage_class:
            args["StorageClass"] = storage_class
        try:
            self.client.copy_object(**args)
        except botocore.exceptions.ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404"):
                raise NotFound(src) from None
            raise

    def is_transient(self, exc):
        if isinstance(exc, (botocore.exceptions.ConnectionError,
                            botocore.exceptions.HTTPClientError,
                            botocore.exceptions.ReadTimeoutError,
                            ConnectionError, TimeoutError)):
            return True
        if isinstance(exc, botocore.exceptions.ClientError):
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            return _code(exc) in _TRANSIENT_CODES or status >= 500 or status == 429
        return super().is_transient(exc)

    def close(self):
        self.client.close()


class _Deadline(io.BytesIO):
    """A request body that refuses to be read past ``deadline``: the HTTP client then aborts
    the request, and the server, short of the announced length, stores nothing."""

    def __init__(self, data: bytes, deadline: float):
        super().__init__(data)
        self.deadline = deadline

    def read(self, size=-1):
        if time.monotonic() > self.deadline and self.tell() < len(self.getbuffer()):
            raise TimeoutError("request body not sent in time; aborted so it cannot land late")
        return super().read(size)


def _code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
