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
    bar = progress(total=len(known), desc="blocks") if progress else None
    for name in known:
        report.checked_blocks += 1
        if name in dirty:
            pass                                # waiting for upload: the cache has it
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
    data = vol.cache.stored_copy(name)
    try:
        if data is None:
            return                              # not cached: nothing to upload again
        vol.codec.decode(data, name)
    except errors.Corrupt:
        return                                  # no good copy anywhere: reported, not fixed
    try:
        vol.store.put(block_key(name), data)
        report.repaired.append(f"uploaded block {name.hex()[:16]} again from the cache")
    except store_mod.StoreError as exc:
        report.problems.append(f"could not upload block {name.hex()[:16]}: {exc}")
