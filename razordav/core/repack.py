"""Garbage collection inside packs: dropping packs nothing uses, rewriting sparse ones.

A packed block that the garbage collector removes loses its ``packed`` row, and a trigger
puts its pack on the to-do list (``pack_check``). Each journal round the shipper calls
``Repacker.run``, which

- deletes from the bucket the packs that the metadata stopped naming (``pack_trash``), once
  the journal row that stopped naming them has been shipped: the same rule as for blocks, so
  a bucket restored at any moment names only packs that exist;
- drops the ``packs`` row of a pack with no block left (its object goes to the trash);
- rewrites packs whose live bytes fell below ``below`` of their size: their live blocks (from
  the local cache when it has them, else ranged GETs, each block verified against its name)
  are written into one new pack, uploaded; then one transaction points the blocks at it and
  moves the old packs to the trash.

Pacing: a rewrite that took t seconds is followed by t * (1/share - 1) seconds without
one, so repacking takes at most ``share`` of the time (the bandwidth issue later puts it in
the lowest priority class). Threading: the shipper's thread only.
"""

from __future__ import annotations

import logging
import time

from .. import store as store_mod
from . import errors
from .packs import PackBuilder, new_pack_id, pack_key

log = logging.getLogger(__name__)

MERGE_GAP = 256 << 10     # neighbouring blocks of one pack this close come in one GET


class Repacker:
    def __init__(self, vol, below: float, share: float, pack_size: int):
        self.vol = vol
        self.db = vol.tree.db
        self.below = below
        self.share = share
        self.pack_size = pack_size
        self._next = 0.0              # time.monotonic() before which no rewrite starts
        self.stats = {"packs_rewritten": 0, "packs_deleted": 0, "bytes_rewritten": 0,
                      "repack_seconds": 0.0, "repack_errors": 0}

    def run(self, shipped: int) -> None:
        """One round: empty the trash up to ``shipped``, settle the to-do list, and rewrite
        sparse packs when pacing allows."""
        self._empty_trash(shipped)
        sparse = self._settle()
        if sparse and time.monotonic() >= self._next and self.below > 0:
            start = time.monotonic()
            try:
                self._rewrite(sparse)
            finally:
                spent = time.monotonic() - start
                self.stats["repack_seconds"] += spent
                self._next = time.monotonic() + spent * (1 / max(self.share, 1e-3) - 1)

    def _empty_trash(self, shipped: int) -> None:
        gone = [r[0] for r in self.db.reader().execute(
            "SELECT id FROM pack_trash WHERE seq <= ?", (shipped,))]
        if not gone:
            return
        self.vol.store.delete_many(pack_key(p) for p in gone)
        with self.db.write() as c:
            c.executemany("DELETE FROM pack_trash WHERE id = ?", [(p,) for p in gone])
        self.stats["packs_deleted"] += len(gone)
        log.debug("deleted %d packs no metadata names", len(gone))

    def _settle(self) -> list[tuple[str, int, int]]:
        """Look at every pack on the to-do list: an empty one goes to the trash, a full
        enough one leaves the list; return the sparse ones as (id, size, live bytes)."""
        c = self.db.reader()
        todo = [r[0] for r in c.execute("SELECT id FROM pack_check")]
        if not todo:
            return []
        sparse, empty, settled = [], [], []
        for pack in todo:
            row = c.execute("SELECT size FROM packs WHERE id = ?", (pack,)).fetchone()
            # Live: rows of blocks the volume knows. A row without one is garbage (a block
            # an aborted write stored, uploaded meanwhile) that a rewrite drops.
            live, n = c.execute(
                "SELECT COALESCE(SUM(CASE WHEN b.hash IS NULL THEN 0 ELSE p.length END), 0), "
                "COUNT(*) FROM packed p LEFT JOIN blocks b ON b.hash = p.hash "
                "WHERE p.pack = ?", (pack,)).fetchone()
            if row is None:
                settled.append(pack)         # gone already (rewritten, or never recorded)
            elif n == 0:
                empty.append(pack)
            elif live < self.below * row[0] or live == 0:
                sparse.append((pack, row[0], live))
            else:
                settled.append(pack)
        if empty or settled:
            with self.db.write() as w:
                for pack in empty:
                    if w.execute("SELECT 1 FROM packed WHERE pack = ? LIMIT 1",
                                 (pack,)).fetchone():
                        continue             # a block came back meanwhile: look again later
                    w.execute("DELETE FROM packs WHERE id = ?", (pack,))
                    self._trash(w, [pack])
                w.executemany("DELETE FROM pack_check WHERE id = ?", [(p,) for p in settled])
        return sparse

    @staticmethod
    def _trash(c, packs: list[str]) -> None:
        """Off the to-do list and into the trash, due once this transaction's last journal
        row is shipped (inside the caller's write transaction)."""
        row = c.execute("SELECT seq FROM sqlite_sequence WHERE name = 'journal'").fetchone()
        seq = row[0] if row else 0
        c.executemany("DELETE FROM pack_check WHERE id = ?", [(p,) for p in packs])
        c.executemany("INSERT OR REPLACE INTO pack_trash VALUES (?, ?)",
                      [(p, seq) for p in packs])

    def _rewrite(self, sparse: list[tuple[str, int, int]]) -> None:
        """Copy the live blocks of the sparsest packs (up to one new pack's worth) into a new
        pack, upload it, and switch the metadata to it in one transaction."""
        sparse.sort(key=lambda p: p[2] / p[1])
        chosen, total = [], 0
        for pack, _size, live in sparse:
            if chosen and total + live > self.pack_size:
                break
            chosen.append(pack)
            total += live
        # Rows naming no known block are dropped, claimed from the pins as GC claims
        # unreferenced blocks: a writer storing that content now waits, then stores it
        # again. A pack with such a row some writer holds is left for a later round.
        pins, c = self.vol.publisher.pins, self.db.reader()
        stale = {}
        for pack in chosen:
            for (name,) in c.execute(
                    "SELECT p.hash FROM packed p LEFT JOIN blocks b ON b.hash = p.hash "
                    "WHERE p.pack = ? AND b.hash IS NULL", (pack,)):
                stale[name] = pack
        claimed = set(pins.claim(list(stale), lambda n: not self.vol.extents.block_refs_row(n)))
        try:
            chosen = [p for p in chosen if all(q != p or n in claimed for n, q in stale.items())]
            self._switch(chosen, {n: p for n, p in stale.items() if n in claimed})
        finally:
            pins.release(list(claimed))

    def _switch(self, chosen: list[str], dropped: dict[bytes, str]) -> None:
        """Copy the live blocks of ``chosen`` into one new pack and switch to it; the rows
        in ``dropped`` (claimed garbage) go."""
        origin, blocks = {}, {}
        for pack in list(chosen):
            try:
                got = list(self._live_blocks(pack, skip=dropped))
            except (errors.Corrupt, store_mod.NotFound) as exc:
                # Left as it is (fsck reports and repairs it); not retried every round.
                log.error("pack %s cannot be rewritten: %s", pack, exc)
                self.stats["repack_errors"] += 1
                with self.db.write() as w:
                    w.execute("DELETE FROM pack_check WHERE id = ?", (pack,))
                chosen.remove(pack)
                continue
            for name, data in got:
                if name not in origin:
                    origin[name], blocks[name] = pack, data
        if not chosen:
            return
        builder = PackBuilder()
        for name, data in blocks.items():
            builder.add(name, data)
        entries = builder.entries
        new = new_pack_id()
        if entries:
            self.vol.store.put(pack_key(new), builder.finish())
        with self.db.write() as c:
            if entries:
                c.execute("INSERT INTO packs VALUES (?, ?, ?)", (new, builder.size, len(builder)))
                c.executemany(
                    "UPDATE packed SET pack = ?, offset = ?, length = ? WHERE hash = ? AND pack = ?",
                    [(new, e.offset, e.length, e.name, origin[e.name]) for e in entries])
            c.executemany("DELETE FROM packed WHERE hash = ? AND pack = ?",
                          [(n, p) for n, p in dropped.items() if p in chosen])
            left = [p for p in chosen if c.execute(
                "SELECT 1 FROM packed WHERE pack = ? LIMIT 1", (p,)).fetchone()]
            if left:   # never drop a pack some block still points to
                raise errors.Corrupt(f"packs {left} still hold blocks after their rewrite")
            c.executemany("DELETE FROM packs WHERE id = ?", [(p,) for p in chosen])
            self._trash(c, chosen)
        # Still claimed: a clean cached copy of a dropped block goes too (a clean entry
        # means "the store has it", and a writer of that content would reuse it).
        self.vol.cache.discard([n for n, p in dropped.items() if p in chosen])
        self.stats["packs_rewritten"] += len(chosen)
        self.stats["bytes_rewritten"] += builder.size if entries else 0
        log.info("rewrote %d sparse packs into one of %d bytes", len(chosen),
                 builder.size if entries else 0)

    def _live_blocks(self, pack: str, skip=()):
        """(name, stored bytes) of the blocks the metadata places in ``pack``, each verified:
        from the local cache when it has a good copy, else ranged GETs merged over gaps up to
        ``MERGE_GAP``."""
        entries = [e for e in self.vol.packs.entries(pack) if e.name not in skip]
        missing = []
        for e in entries:
            data = self.vol.cache.stored_copy(e.name)
            if data is not None:
                try:
                    self.vol.codec.decode(data, e.name)
                    yield e.name, data
                    continue
                except errors.Corrupt:
                    pass
            missing.append(e)
        i = 0
        while i < len(missing):
            j = i + 1
            while j < len(missing) and \
                    missing[j].offset - (missing[j - 1].offset + missing[j - 1].length) <= MERGE_GAP:
                j += 1
            start = missing[i].offset
            end = missing[j - 1].offset + missing[j - 1].length
            data = self.vol.store.get(pack_key(pack), start, end - start)
            for e in missing[i:j]:
                block = data[e.offset - start:e.offset - start + e.length]
                self.vol.codec.decode(block, e.name)    # raises Corrupt
                yield e.name, block
            i = j
