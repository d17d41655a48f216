"""Metadata in the bucket: the journal shipper, snapshots, and restore from the bucket alone.

Every committed change to the replicated tables (tree.TABLES) lands, by trigger, in the
``journal`` table in the same transaction. The shipper uploads the rows in order as
segments, ``meta/journal/<first>-<last>`` (zstd-compressed JSON lines), and periodically a
compacted snapshot, ``meta/snapshot/<seq>`` (the SQLite database as of ``seq``), after which
older segments go. ``restore`` loads the newest snapshot and replays the later segments.

Two ordering rules keep the bucket consistent on its own:
- a segment is uploaded only once every block it introduces is in the store (rows after a
  still-dirty block wait for the next round);
- a block is deleted from the store only when the change that left it unreferenced has been
  shipped: garbage is collected from a snapshot of unreferenced blocks taken together with
  the rows, and only when those rows reached the end of the journal.

Threading: one shipper thread per volume; it uses its own SQLite connection via Tree.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import tempfile
import threading
import time
from pathlib import Path

import zstandard

from .. import store as store_mod
from . import errors
from .tree import TABLES

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SEGMENT_PREFIX = "meta/journal/"
SNAPSHOT_PREFIX = "meta/snapshot/"
MAX_ROWS = 20_000


def segment_key(first: int, last: int) -> str:
    return f"{SEGMENT_PREFIX}{first:016d}-{last:016d}"


def snapshot_key(seq: int) -> str:
    return f"{SNAPSHOT_PREFIX}{seq:016d}"


class Shipper:
    """Ships journal rows and snapshots of one volume to its store."""

    def __init__(self, volume, interval: float = 2.0, snapshot_interval: float = 600.0,
                 snapshot_segments: int = 200):
        self.vol = volume
        self.tree = volume.tree
        self.store = volume.store
        self.interval = interval
        self.snapshot_interval = snapshot_interval
        self.snapshot_segments = snapshot_segments
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._lock = threading.Lock()          # one round at a time
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None
        self.last_ship: float | None = None
        self._last_snapshot = time.monotonic()
        self._segments_since_snapshot = 0
        self.on_tick = []                      # run every interval, round or rest (lease, stats)
        self._last_round = time.monotonic()
        self.collected = 0                     # blocks deleted so far

    # -- state --

    def shipped(self) -> int:
        row = self.tree._conn().execute("SELECT value FROM shipper WHERE key = 'shipped'")
        r = row.fetchone()
        return r[0] if r else 0

    def pending(self) -> int:
        return self.tree._conn().execute(
            "SELECT COUNT(*) FROM journal WHERE seq > ?", (self.shipped(),)).fetchone()[0]

    # -- the loop --

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="rzd-journal", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            kicked = self._kick.wait(self.interval)
            self._kick.clear()
            if kicked or not self._resting():
                try:
                    self.run_once()
                except Exception:
                    log.exception("journal round failed")
                self._last_round = time.monotonic()
            for fn in self.on_tick:
                try:
                    fn()
                except Exception:
                    log.exception("after-round task failed")

    def _resting(self) -> bool:
        """Whether this round waits for a pause in the faces' requests, as uploads do
        (``BlockCache.busy``): shipping and GC compete with them for the CPU, and the rows
        would wait for their blocks anyway. At most ``upload_delay_max``."""
        cache = self.vol.cache
        return cache.busy() and time.monotonic() - self._last_round < cache.upload_delay_max

    def stop(self, flush: bool = True, timeout: float = 10.0) -> None:
        """Stop the loop; with ``flush``, try for ``timeout`` seconds to ship what is left."""
        self._stop.set()
        self._kick.set()
        if self._thread:
            self._thread.join()
        if flush:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    if self.run_once() and self.pending() == 0:
                        return
                except Exception as exc:
                    log.warning("journal not fully shipped at shutdown: %s", exc)
                    return
                if not self.vol.cache.wait_uploaded(max(0.1, deadline - time.monotonic())):
                    break
            if self.pending():
                log.warning("%d journal rows not shipped yet; they go at the next start",
                            self.pending())

    def run_once(self) -> bool:
        """One round: ship what can be shipped, collect garbage, snapshot when due.
        Returns True when the store took everything attempted."""
        with self._lock:
            try:
                done = self._ship()
                if done and self._snapshot_due():
                    self.snapshot()
                self.last_error = None
                return done
            except Exception as exc:
                if not (isinstance(exc, store_mod.StoreError) or self.store.is_transient(exc)):
                    raise
                self.last_error = str(exc)
                log.warning("metadata not shipped, will retry: %s", exc)
                return False

    def _ship(self) -> bool:
        c = self.tree._conn()
        shipped = self.shipped()
        c.execute("BEGIN")
        try:
            rows = c.execute("SELECT seq, op FROM journal WHERE seq > ? ORDER BY seq LIMIT ?",
                             (shipped, MAX_ROWS)).fetchall()
            last_seq = c.execute("SELECT seq FROM sqlite_sequence WHERE name = 'journal'") \
                .fetchone()
            unreferenced = [r[0] for r in c.execute("SELECT hash FROM blocks WHERE refs = 0")]
        finally:
            c.execute("COMMIT")
        last_seq = last_seq[0] if last_seq else 0
        if not rows:
            self._collect(unreferenced)
            return True
        cut = self._uploaded_prefix(rows)
        if cut:
            self._upload_segment(rows[:cut])
        complete = cut == len(rows) and rows[-1][0] == last_seq
        if complete:
            self._collect(unreferenced)
        return cut == len(rows)

    def _uploaded_prefix(self, rows) -> int:
        """How many rows can go: stop before the first that brings a block not yet uploaded."""
        dirty = {n for n in self.vol.cache.dirty_names()}
        if not dirty:
            return len(rows)
        for i, (_seq, op) in enumerate(rows):
            if op.startswith('["blocks","U"'):
                name = bytes.fromhex(json.loads(op)[2][0])
                if name in dirty:
                    return i
        return len(rows)

    def _upload_segment(self, rows) -> None:
        first, last = rows[0][0], rows[-1][0]
        header = json.dumps({"format": FORMAT_VERSION, "first": first, "last": last})
        body = header + "\n" + "\n".join(f"{seq}\t{op}" for seq, op in rows) + "\n"
        data = zstandard.ZstdCompressor(level=3).compress(body.encode())
        self.store.put(segment_key(first, last), data)
        with self.tree.write() as c:
            c.execute("INSERT OR REPLACE INTO shipper VALUES ('shipped', ?)", (last,))
            c.execute("DELETE FROM journal WHERE seq <= ?", (last,))
        self.last_ship = time.time()
        self._segments_since_snapshot += 1
        log.debug("shipped journal rows %d-%d (%d bytes)", first, last, len(data))

    def _collect(self, unreferenced: list[bytes]) -> None:
        if unreferenced:
            n = self.vol._delete_blocks(unreferenced)
            self.collected += n
            if n:
                log.debug("deleted %d unreferenced blocks", n)

    def kick(self) -> None:
        self._kick.set()

    # -- snapshots --

    def _snapshot_due(self) -> bool:
        return (self._segments_since_snapshot >= self.snapshot_segments or
                (self._segments_since_snapshot and
                 time.monotonic() - self._last_snapshot >= self.snapshot_interval))

    def snapshot(self) -> int:
        """Upload the whole database as of the shipped sequence, then drop older segments."""
        with tempfile.TemporaryDirectory(dir=self.vol.data_dir) as tmp:
            copy = Path(tmp) / "snapshot.db"
            dst = sqlite3.connect(copy)
            with self.tree._lock:   # writers wait, so the copy is exactly 'shipped'
                if self.pending():
                    return 0
                src = sqlite3.connect(self.tree.path)
                try:
                    src.backup(dst)
                finally:
                    src.close()
            seq = dst.execute("SELECT value FROM shipper WHERE key = 'shipped'").fetchone()
            seq = seq[0] if seq else 0
            dst.execute("DELETE FROM journal")
            dst.commit()
            dst.execute("VACUUM")
            dst.close()
            raw = copy.read_bytes()
        data = _SNAP_MAGIC + zstandard.ZstdCompressor(level=3).compress(raw)
        self.store.put(snapshot_key(seq), data)
        self._prune(seq)
        self._last_snapshot = time.monotonic()
        self._segments_since_snapshot = 0
        log.info("metadata snapshot at journal %d (%d bytes)", seq, len(data))
        return seq

    def _prune(self, seq: int) -> None:
        old = [o.key for o in self.store.list(SEGMENT_PREFIX)
               if int(o.key[len(SEGMENT_PREFIX):].split("-")[1]) <= seq]
        snaps = sorted(o.key for o in self.store.list(SNAPSHOT_PREFIX))
        old += snaps[:-2]  # keep the two newest snapshots
        if old:
            self.store.delete_many(old)


_SNAP_MAGIC = b"RZSNAP1\n"


# -- restore --

def restore(store: store_mod.ObjectStore, db_path: Path, progress=None) -> int:
    """Rebuild the tree database at ``db_path`` from the bucket; return the last sequence.

    ``progress(done, total)`` is called as segments are applied.
    """
    from .tree import Tree
    snaps = sorted(o.key for o in store.list(SNAPSHOT_PREFIX))
    seq = 0
    if snaps:
        data = store.get(snaps[-1])
        if not data.startswith(_SNAP_MAGIC):
            raise errors.Corrupt(f"{snaps[-1]} is not a razordav snapshot")
        db_path.write_bytes(zstandard.ZstdDecompressor().decompress(
            data[len(_SNAP_MAGIC):], max_output_size=1 << 36))
        seq = int(snaps[-1][len(SNAPSHOT_PREFIX):])
    tree = Tree(db_path)
    try:
        segments = []
        for o in store.list(SEGMENT_PREFIX):
            first, last = (int(x) for x in o.key[len(SEGMENT_PREFIX):].split("-"))
            if last > seq:
                segments.append((first, last, o.key))
        segments.sort()
        c = tree._conn()
        for i, (first, last, key) in enumerate(segments):
            if first > seq + 1:
                raise errors.Corrupt(f"journal gap: rows {seq + 1}-{first - 1} are missing "
                                     "from the bucket")
            rows = _read_segment(store.get(key), key)
            with tree.write():
                for row_seq, op in rows:
                    if row_seq > seq:
                        _apply(c, json.loads(op))
                c.execute("DELETE FROM journal")  # what replay captured is already shipped
            seq = last
            if progress:
                progress(i + 1, len(segments))
        with tree.write() as c:
            c.execute("DELETE FROM journal")
            c.execute("INSERT OR REPLACE INTO shipper VALUES ('shipped', ?)", (seq,))
            c.execute("DELETE FROM sqlite_sequence WHERE name = 'journal'")
            c.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('journal', ?)", (seq,))
    finally:
        tree.close()
    return seq


def _read_segment(data: bytes, key: str) -> list[tuple[int, str]]:
    try:
        text = zstandard.ZstdDecompressor().decompress(data, max_output_size=1 << 32).decode()
    except zstandard.ZstdError as exc:
        raise errors.Corrupt(f"{key}: {exc}") from None
    lines = text.splitlines()
    header = json.loads(lines[0])
    if header.get("format", 0) > FORMAT_VERSION:
        raise errors.Corrupt(f"{key}: journal format {header['format']} is newer than this "
                             "razordav")
    rows = []
    for line in lines[1:]:
        seq, op = line.split("\t", 1)
        rows.append((int(seq), op))
    return rows


def _apply(c: sqlite3.Connection, op: list) -> None:
    table, kind, values = op
    cols, keys, blobs = TABLES[table]
    names = cols if kind == "U" else keys
    values = [bytes.fromhex(v) if n in blobs and v is not None else v
              for n, v in zip(names, values)]
    if kind == "U":
        c.execute(f"INSERT OR REPLACE INTO {table} ({', '.join(cols)}) VALUES "
                  f"({', '.join('?' * len(cols))})", values)
    else:
        c.execute(f"DELETE FROM {table} WHERE " + " AND ".join(f"{k} = ?" for k in keys), values)
