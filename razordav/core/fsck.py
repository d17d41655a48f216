"""fsck: verify a volume against its store, and repair what can be repaired.

Trusts nothing: the tree's invariants (check.py), each block's reference count, every
counter (quota usage, figures, pending journal rows) against a full recount, that every
referenced block is in the store (one listing of ``blocks/``; with ``full``, each object is
downloaded and verified against its name), and that the store holds no block the metadata
does not know (orphans). ``repair`` recounts references and counters, uploads again a missing
or corrupt block when the local cache still has a good copy, and deletes orphans. Counters
alone may be repaired on a live volume (``counters``: one write transaction recounts them).

Runs on a volume opened for it alone (the lease keeps a gateway out meanwhile).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import store as store_mod
from . import errors
from . import packs as packs_mod
from .blocks import block_key
from .check import check_tree
from .journal import count_unshipped, unshipped


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    checked_blocks: int = 0

    @property
    def clean(self) -> bool:
        return not self.problems


def fsck(vol, full: bool = False, repair: bool = False, progress=None,
         counters: bool | None = None) -> Report:
    """Check ``vol``; ``progress`` is a tqdm-like factory ``progress(total=, desc=)``.
    ``counters`` (default: ``repair``) recounts wrong counters."""
    report = Report()
    steps = progress(total=3, desc="metadata") if progress else None
    vol.collect_garbage()                       # ship pending metadata first
    report.problems += check_tree(vol.tree)
    _step(steps)
    _check_refs(vol, report, repair)
    _step(steps)
    _check_counters(vol, report, repair if counters is None else counters)
    _step(steps)
    if steps:
        steps.close()
    known = {name: size for name, size in vol.tree.db.reader().execute(
        "SELECT hash, stored_size FROM blocks")}
    stored = {}
    for info in vol.store.list("blocks/"):
        try:
            stored[bytes.fromhex(info.key.rsplit("/", 1)[1])] = info
        except ValueError:
            report.problems.append(f"unexpected object {info.key}")
    dirty = set(vol.cache.dirty_names())
    located = _check_packs(vol, report, repair)
    bar = progress(total=len(known), desc="blocks") if progress else None
    for name in known:
        report.checked_blocks += 1
        loc = located.get(name)
        if name in dirty:
            pass                                # waiting for upload: the cache has it
        elif loc is not None:
            if loc is _LOST:
                _bad(vol, report, name, "is in a pack missing from the store", repair)
            elif full:
                try:
                    vol.codec.decode(vol.store.get(loc.key, loc.offset, loc.length), name)
                except (errors.Corrupt, store_mod.NotFound) as exc:
                    _bad(vol, report, name, f"is corrupt in pack {loc.pack} ({exc})", repair)
        elif name not in stored:
            _bad(vol, report, name, "is missing from the store", repair)
        elif full:
            try:
                vol.codec.decode(vol.store.get(block_key(name)), name)
            except errors.Corrupt as exc:
                _bad(vol, report, name, f"is corrupt in the store ({exc})", repair)
        if bar:
            bar.update(1)
    if bar:
        bar.close()
    orphans = [name for name in stored if name not in known]
    if orphans:
        report.problems.append(f"{len(orphans)} objects in the store belong to no file")
        if repair:
            vol.store.delete_many(block_key(n) for n in orphans)
            report.repaired.append(f"deleted {len(orphans)} orphaned objects")
    return report


def _check_refs(vol, report: Report, repair: bool) -> None:
    c = vol.tree.db.reader()
    wrong = c.execute("SELECT b.hash, b.refs, COUNT(e.hash) FROM blocks b "
                      "LEFT JOIN extents e ON e.hash = b.hash GROUP BY b.hash "
                      "HAVING b.refs != COUNT(e.hash)").fetchall()
    if not wrong:
        return
    report.problems.append(f"{len(wrong)} blocks have a wrong reference count")
    if repair:
        with vol.tree.db.write() as w:
            for name, _refs, count in wrong:
                w.execute("UPDATE blocks SET refs = ? WHERE hash = ?", (count, name))
        report.repaired.append(f"recounted references of {len(wrong)} blocks")


def _check_counters(vol, report: Report, repair: bool) -> None:
    kept, want = vol.tree.counters(), vol.tree.count()
    wrong = [f"{k} is {kept[k]}, a recount finds {want[k]}" for k in want if kept[k] != want[k]]
    for line in wrong:
        report.problems.append(f"counter {line}")
    pending, rows = unshipped(vol.tree), count_unshipped(vol.tree)
    if pending != rows:      # derived from the journal's numbering: reported, not repaired
        report.problems.append(f"journal: {pending} rows pending by number, {rows} rows found")
    if wrong and repair:
        vol.tree.recount()
        report.repaired.append(f"recounted {len(wrong)} counters")


def _step(bar) -> None:
    if bar:
        bar.update(1)


def _bad(vol, report: Report, name: bytes, what: str, repair: bool) -> None:
    files = []
    for (ino,) in vol.tree.db.reader().execute(
            "SELECT DISTINCT ino FROM extents WHERE hash = ? LIMIT 5", (name,)):
        try:
            files.append(vol.tree.path_of(ino))
        except errors.NotFound:
            pass                                # unlinked while open: no path to show
    report.problems.append(f"block {name.hex()[:16]} {what}; used by {', '.join(files) or '-'}")
    if not repair:
        return
    if vol.packs.locate(name) is not None and vol.store.exists(block_key(name)):
        with vol.tree.db.write() as c:         # a copy of its own exists: read that one
            vol.packs.forget(c, [name])
        report.repaired.append(f"block {name.hex()[:16]} is read from its own object")
        return
    data = vol.cache.stored_copy(name)
    try:
        if data is None:
            return                              # not cached: nothing to upload again
        vol.codec.decode(data, name)
    except errors.Corrupt:
        return                                  # no good copy anywhere: reported, not fixed
    try:
        vol.store.put(block_key(name), data)
        with vol.tree.db.write() as c:         # no longer read from its (bad) pack
            vol.packs.forget(c, [name])
        report.repaired.append(f"uploaded block {name.hex()[:16]} again from the cache")
    except store_mod.StoreError as exc:
        report.problems.append(f"could not upload block {name.hex()[:16]}: {exc}")


_LOST = object()     # the location of a block whose pack is missing from the store


def _check_packs(vol, report: Report, repair: bool) -> dict:
    """Check every pack against the metadata: the object exists, its index is readable and
    lists each block the metadata places in it at the same offset and length; no location
    row names an unknown block; no pack in the bucket is unknown. Repairs: an index rebuilt
    from the pack's bytes and the metadata; blocks without a place adopted from unknown
    packs' indexes; unknown packs deleted; stale location rows dropped. Returns the block
    -> ``Location`` map (``_LOST`` when the pack is gone)."""
    pmap, c = vol.packs, vol.tree.db.reader()
    stale = [r[0] for r in c.execute(
        "SELECT p.hash FROM packed p LEFT JOIN blocks b ON b.hash = p.hash WHERE b.hash IS NULL")]
    if stale:
        report.problems.append(f"{len(stale)} pack locations belong to no file (blocks "
                               "of writes that did not complete)")
        if repair:
            with vol.tree.db.write() as w:
                pmap.forget(w, stale)
            vol.cache.discard(stale)     # a clean cached copy says "the store has it"
            report.repaired.append(f"dropped {len(stale)} stale pack locations")
    unplaced = [r[0] for r in c.execute(
        "SELECT p.hash FROM packed p LEFT JOIN packs k ON k.id = p.pack WHERE k.id IS NULL")]
    if unplaced:
        report.problems.append(f"{len(unplaced)} blocks are placed in packs the metadata "
                               "does not know")
    orphans = packs_mod.orphans(vol.store, pmap)
    if orphans:
        report.problems.append(f"{len(orphans)} packs in the store belong to no file")
        if repair:
            adopted, useless = packs_mod.adopt(vol.store, pmap, orphans)
            if adopted:
                report.repaired.append(f"located {adopted} blocks in the indexes of "
                                       "unknown packs")
            vol.store.delete_many(packs_mod.pack_key(p) for p in useless)
            if useless:
                report.repaired.append(f"deleted {len(useless)} orphaned packs")
    located = {}
    for pack, size in pmap.packs().items():
        entries = pmap.entries(pack)
        key = packs_mod.pack_key(pack)
        if not entries:
            report.problems.append(f"pack {pack} holds no block any file uses")
            if repair:
                with vol.tree.db.write() as w:
                    w.execute("DELETE FROM packs WHERE id = ?", (pack,))
                vol.store.delete_many([key])
                report.repaired.append(f"deleted pack {pack}, which held no block")
            continue
        try:
            index = {e.name: e for e in packs_mod.index_of(vol.store, key)}
            damage = None if all(index.get(e.name) == e for e in entries) else \
                "disagrees with the metadata"
        except store_mod.NotFound:
            report.problems.append(f"pack {pack} is missing from the store")
            located.update((e.name, _LOST) for e in entries)
            continue
        except errors.Corrupt as exc:
            damage = f"is damaged ({exc})"
        located.update((e.name, packs_mod.Location(pack, e.offset, e.length))
                       for e in entries)
        if damage:
            report.problems.append(f"index of pack {pack} {damage}")
            if repair:
                _rebuild_index(vol, report, pack, size, entries)
    return located


def _rebuild_index(vol, report: Report, pack: str, size: int, entries) -> None:
    """Write the pack again with the index the metadata gives: the blocks' bytes stay
    where they are (readers are unaffected), each verified against its name first."""
    key = packs_mod.pack_key(pack)
    data = vol.store.get(key)
    if len(data) < size:
        report.problems.append(f"pack {pack} is shorter than its blocks; not rebuilt")
        return
    for e in entries:
        try:
            vol.codec.decode(data[e.offset:e.offset + e.length], e.name)
        except errors.Corrupt as exc:
            report.problems.append(f"pack {pack}: block {e.name.hex()[:16]} is damaged "
                                   f"({exc}); index not rebuilt")
            return
    vol.store.put(key, data[:size] + packs_mod.tail(entries, size))
    report.repaired.append(f"rebuilt the index of pack {pack} from the metadata")
