"""Where a tenant's volume lives: its own data dir below the gateway's, and its own prefix
below the gateway's store URL, so no tree, cache or dedup state is shared across tenants
and a tenant is exported or deleted by prefix."""

from __future__ import annotations

import re
from pathlib import Path

from ..core import errors

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


def check_tenant_name(name: str) -> str:
    """Tenant names are path and prefix components: lower-case letters, digits, _ and -."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise errors.InvalidArgument(
            f"invalid tenant name {name!r}: use 1 to 63 lower-case letters, digits, _ or -, "
            "starting with a letter or digit")
    return name


def tenant_data_dir(data_dir: str | Path, name: str) -> Path:
    return Path(data_dir) / "tenants" / check_tenant_name(name)


def tenant_store_url(store_url: str, name: str) -> str:
    """``<store>/tenants/<name>``: file:///srv/store -> file:///srv/store/tenants/acme,
    s3://bucket/prefix -> s3://bucket/prefix/tenants/acme."""
    return f"{store_url.rstrip('/')}/tenants/{check_tenant_name(name)}"
