"""Options: defaults, the YAML config file, and command-line flags, in that order of strength.

Every option here is listed with a one-line comment in conf/razordav.yaml; a test keeps the
two in step. A user error (unknown key, bad size) raises ``ConfigError`` with one clear line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import Path

import yaml


class ConfigError(Exception):
    """A bad option value or config file."""


@dataclass
class Options:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: str = "./razordav-data"
    store: str | None = None            # default: file://<data_dir>/store
    s3_endpoint: str | None = None      # default: $AWS_ENDPOINT_URL
    cache_size: int = 10 << 30
    dirty_limit: int | None = None      # default: 80 % of cache_size
    block_size: int = 4 << 20
    uploaders: int = 8
    upload_delay: float = 2.0           # seconds writes must pause before their blocks upload
    upload_delay_max: float = 30.0      # the longest a block waits for that pause
    journal_interval: float = 2.0       # seconds between metadata shipments to the store
    pack_threshold: int = 512 << 10     # blocks stored this small travel in packs (0: never)
    pack_size: int = 8 << 20            # the size a pack is uploaded at
    repack_below: float = 0.5           # rewrite a pack once less than this share of it is used
    repack_share: float = 0.1           # the most of the uploads' time repacking may take
    lease_ttl: float = 30.0             # lease lifetime (see docs/design.md, "Fencing")
    threads: int = 32
    header_timeout: float = 10.0        # seconds a client may take to send a request head
    max_connections: int = 1000         # open HTTP connections in all
    max_connections_per_address: int = 64   # open HTTP connections from one client address
    cors_origins: list | None = None    # origins besides the gateway's own that may change state
    lock_timeout_max: int = 3600        # the longest a WebDAV lock lasts without a refresh
    insecure: bool = False
    log_level: str = "info"
    auth: str = "none"                  # none, basic, jwt or basic,jwt
    tls_cert: str | None = None
    tls_key: str | None = None
    jwks_url: str | None = None
    oidc_issuer: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_user_claim: str = "sub"
    jwt_tenant_claim: str = "tenant"
    metrics_token: str | None = None


_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*", re.I)
_SIZE_FIELDS = {"cache_size", "dirty_limit", "block_size", "pack_threshold", "pack_size"}


def parse_size(value) -> int:
    """'10G', '512MiB', '4m' or a plain number of bytes."""
    if isinstance(value, int):
        return value
    m = _SIZE.fullmatch(str(value))
    if not m:
        raise ConfigError(f"invalid size {value!r}: use a number with an optional K, M, G or T")
    return int(float(m.group(1)) * 1024 ** "bkmgt".index((m.group(2) or "b").lower()))


def load(config_file: str | None, overrides: dict) -> Options:
    """Defaults, then the YAML file, then the flags that were given (not None)."""
    values: dict = {}
    if config_file:
        path = Path(config_file)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must be a mapping of option: value")
        values.update({k.replace("-", "_"): v for k, v in data.items()})
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name: f for f in fields(Options)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown option(s): {', '.join(unknown)}")
    opts = Options()
    for key, value in values.items():
        if key in _SIZE_FIELDS and value is not None:
            value = parse_size(value)
        elif key in ("port", "uploaders", "threads", "max_connections",
                     "max_connections_per_address", "lock_timeout_max"):
            try:
                value = int(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{key} must be a whole number, not {value!r}") from None
        elif key in ("journal_interval", "lease_ttl", "upload_delay", "upload_delay_max",
                     "header_timeout"):
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{key} must be a number of seconds, not {value!r}") from None
        elif key in ("repack_below", "repack_share"):
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{key} must be a fraction between 0 and 1, not {value!r}") \
                    from None
        setattr(opts, key, value)
    if not 0 <= opts.port <= 65535:
        raise ConfigError(f"port {opts.port} is out of range")
    if opts.block_size < 64 * 1024 or opts.block_size > 64 << 20:
        raise ConfigError("block_size must be between 64K and 64M")
    if not 0.1 <= opts.journal_interval <= 60:
        raise ConfigError("journal_interval must be between 0.1 and 60 seconds")
    if not 0 <= opts.upload_delay <= 600:
        raise ConfigError("upload_delay must be between 0 and 600 seconds")
    if not opts.upload_delay <= opts.upload_delay_max <= 3600:
        raise ConfigError("upload_delay_max must be between upload_delay and 3600 seconds")
    if not 0 <= opts.pack_threshold <= 16 << 20:
        raise ConfigError("pack_threshold must be between 0 (no packs) and 16M")
    if not max(1 << 20, 2 * opts.pack_threshold) <= opts.pack_size <= 256 << 20:
        raise ConfigError("pack_size must be between 1M (and twice pack_threshold) and 256M")
    if not 0 <= opts.repack_below < 1:
        raise ConfigError("repack_below must be at least 0 (never rewrite) and below 1")
    if not 0 < opts.repack_share <= 1:
        raise ConfigError("repack_share must be above 0 and at most 1")
    if not 1 <= opts.header_timeout <= 600:
        raise ConfigError("header_timeout must be between 1 and 600 seconds")
    if opts.max_connections < 1 or opts.max_connections_per_address < 1:
        raise ConfigError("max_connections and max_connections_per_address must be >= 1")
    if opts.lock_timeout_max < 1:
        raise ConfigError("lock_timeout_max must be at least 1 second")
    if opts.cors_origins is not None and (not isinstance(opts.cors_origins, list) or not all(
            isinstance(o, str) and o.startswith(("http://", "https://"))
            for o in opts.cors_origins)):
        raise ConfigError("cors_origins must be a list of origins like https://app.example")
    if opts.lease_ttl < 5:
        raise ConfigError("lease_ttl must be at least 5 seconds")
    auth = [a.strip() for a in str(opts.auth).lower().split(",")]
    if auth != ["none"] and not set(auth) <= {"basic", "jwt"}:
        raise ConfigError(f"auth must be none, basic, jwt or basic,jwt, not {opts.auth!r}")
    opts.auth = ",".join(auth)
    if "jwt" in auth and not (opts.jwks_url or opts.oidc_issuer):
        raise ConfigError("auth jwt needs jwks_url or oidc_issuer")
    if bool(opts.tls_cert) != bool(opts.tls_key):
        raise ConfigError("tls_cert and tls_key go together")
    if opts.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError("log_level must be debug, info, warning or error")
    return opts
