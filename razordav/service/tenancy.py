"""Tenants as volumes: the one place that knows where a tenant's volume lives and what
is done to tenants as a whole.

``Tenancy`` owns, for one gateway's data dir and store URL: each tenant's ``Place`` (data
dir ``<data_dir>/tenants/<component>``, store URL ``<store>/tenants/<component>``, and that
prefix in the gateway's store, from ``tenants.py``'s rules and the registry's component),
opening a tenant's volume with its quota, applying new limits to an open volume,
restoring every tenant's volume from the bucket, and deleting a tenant's data. It leaves
the rows (names, limits, components) to ``registry.py``, and which volumes are open, and
closing them, to the caller (``gate.Service``, the CLI).

Threading: no state of its own beyond the registry, which is safe from many threads.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..core import errors
from .tenants import check_tenant_dir, tenant_data_dir, tenant_store_url


@dataclass(frozen=True)
class Place:
    """Where one tenant's volume lives."""
    component: str       # "<name>.<16 hex>" (or the bare name of an old tenant)
    data_dir: Path       # <data_dir>/tenants/<component>
    store_url: str       # <store>/tenants/<component>: the tenant volume's own store
    prefix: str          # "tenants/<component>/": the same objects in the gateway's store


def apply_limits(vol, tenant) -> None:
    """Give an open volume its tenant's quota and file limit (None: no limit)."""
    vol.set_quota(tenant.quota_bytes, tenant.max_files)


class Tenancy:
    def __init__(self, registry, data_dir, store_url: str):
        self.registry = registry
        self.data_dir = Path(data_dir)
        self.store_url = store_url

    def place_of(self, component: str) -> Place:
        return Place(component, tenant_data_dir(self.data_dir, component),
                     tenant_store_url(self.store_url, component),
                     f"tenants/{check_tenant_dir(component)}/")

    def place(self, name: str) -> Place:
        """The registered tenant's place (``errors.NotFound`` for an unknown tenant)."""
        return self.place_of(self.registry.tenant_dir(name))

    def places(self, name: str) -> list[Place]:
        """Every place that may hold data of a tenant called ``name``: the registered
        tenant's, if there is one, and the data dirs deleted tenants of that name left
        (a delete that was cut short)."""
        found = set(self._leftovers(name))
        try:
            found.add(self.registry.tenant_dir(name))
        except errors.NotFound:
            pass
        return [self.place_of(c) for c in sorted(found)]

    def _leftovers(self, name: str) -> list[str]:
        try:
            found = os.listdir(self.data_dir / "tenants")
        except FileNotFoundError:
            return []
        return [c for c in found if c.split(".", 1)[0] == name and _is_component(c)]

    def open(self, tenant, open_volume, cache_size: int):
        """Open ``tenant``'s volume (a registry row) with ``open_volume(data_dir, store_url,
        cache_size)``, its limits applied."""
        place = self.place(tenant.name)
        vol = open_volume(place.data_dir, place.store_url, cache_size)
        apply_limits(vol, tenant)
        return vol

    def delete_data(self, place: Place, store) -> int:
        """Delete a tenant's data: its data dir and every object under its prefix in
        ``store``, the gateway's store. Its volume MUST be closed everywhere first.
        Returns how many objects went."""
        shutil.rmtree(place.data_dir, ignore_errors=True)
        return store.delete_prefix(place.prefix)

    def restore_all(self, progress=None, endpoint: str | None = None) -> list[str]:
        """Restore every registered tenant's volume from its prefix into its data dir (the
        registry itself restored first); a tenant that never stored anything is skipped.
        Returns the tenants' names."""
        from ..core import journal
        from ..store import NotFound, open_store
        names = [t.name for t in self.registry.tenants()]
        for name in names:
            place = self.place(name)
            store = open_store(place.store_url, endpoint=endpoint)
            try:
                store.get("volume.json")
                place.data_dir.mkdir(parents=True, exist_ok=True)
                journal.restore(store, place.data_dir / "meta.db", progress)
            except NotFound:
                continue
            finally:
                store.close()
        return names


def _is_component(component: str) -> bool:
    try:
        check_tenant_dir(component)
        return True
    except errors.InvalidArgument:
        return False
