"""Where a tenant's volume lives: its own data dir below the gateway's, and its own prefix
below the gateway's store URL, so no tree, cache or dedup state is shared across tenants
and a tenant is exported or deleted by prefix."""

from __future__ import annotations

import re
import secrets
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


_DIR = re.compile(r"([a-z0-9][a-z0-9_-]{0,62})(\.[0-9a-f]{16})?")


def new_tenant_dir(name: str) -> str:
    """The directory and prefix component of a tenant made now: ``<name>.<16 hex>``, new
    for each tenant of that name, so a tenant made again after a delete never finds the
    old one's data, even if deleting it was cut short. Tenants made before this have
    the bare name (no registry row says otherwise). Names hold no '.', so no component
    of one tenant is another's."""
    return f"{check_tenant_name(name)}.{secrets.token_hex(8)}"


def check_tenant_dir(component: str) -> str:
    if not isinstance(component, str) or not _DIR.fullmatch(component):
        raise errors.InvalidArgument(f"invalid tenant directory {component!r}")
    return component


def tenant_data_dir(data_dir: str | Path, component: str) -> Path:
    """``<data_dir>/tenants/<component>``; ``component`` is ``Registry.tenant_dir(name)``."""
    return Path(data_dir) / "tenants" / check_tenant_dir(component)


def tenant_store_url(store_url: str, component: str) -> str:
    """``<store>/tenants/<component>``: file:///srv/store -> file:///srv/store/tenants/acme,
    s3://bucket/prefix -> s3://bucket/prefix/tenants/acme.f00dfeed12345678."""
    return f"{store_url.rstrip('/')}/tenants/{check_tenant_dir(component)}"
