"""Metadata in the bucket: the journal shipper, snapshots, and restore from the bucket alone.

Every committed change to the replicated tables (``db.table(..., replicated=True)``) lands, by trigger, in the
``journal`` table in the same transaction. The shipper uploads the rows in order as
segments, ``meta/journal/<first>-<last>-<term>`` (zstd-compressed JSON lines), and
periodically a compacted snapshot, ``meta/snapshot/<seq>-<term>`` (the SQLite database as of
``seq``), after which older segments go. ``restore`` loads the newest valid snapshot and
replays the later segments.

Terms (core/lease.py): every lease holder writes ``meta/term/<term>`` first, saying at which
row its chain begins. A segment or snapshot of term ``t`` is valid only below the start of
the next term that has a marker, so a holder that lost its lease and wrote late can never
mix its rows into the new holder's chain; the new holder's GC removes such leftovers. Names
written before terms existed (``<first>-<last>``, ``<seq>``) are term 0.

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
from . import errors, packs
from .lease import LeaseLapsed, LeaseLost
from . import db as db_mod

log = logging.getLogger(__name__)

FORMAT_VERSION = 3    # 2: names carry the lease term; term markers. 3: packs, packed
SEGMENT_PREFIX = "meta/journal/"
SNAPSHOT_PREFIX = "meta/snapshot/"
TERM_PREFIX = "meta/term/"
MAX_ROWS = 20_000


def segment_key(first: int, last: int, term: int) -> str:
    return f"{SEGMENT_PREFIX}{first:016d}-{last:016d}-{term:016d}"


def snapshot_key(seq: int, term: int) -> str:
    return f"{SNAPSHOT_PREFIX}{seq:016d}-{term:016d}"


def term_key(term: int) -> str:
    return f"{TERM_PREFIX}{term:016d}"


def _numbers(key: str, prefix: str, count: int) -> tuple[int, ...] | None:
    """The numbers in a segment or snapshot name, with term 0 for names without one; None
    for a name that is not ours (a leftover, another tool's object)."""
    parts = key[len(prefix):].split("-")
    if len(parts) == count - 1:
        parts.append("0")
    if len(parts) != count or not all(p.isdigit() for p in parts):
        return None
    return tuple(int(p) for p in parts)


class Chain:
    """Which segments and snapshots in the bucket make up the volume's history.

    ``starts`` maps each term with a marker to the first row its holder wrote. A segment
    ``(first, last, term)`` is valid when ``last`` is below the start of every later term;
    a snapshot ``(seq, term)`` likewise. Read once from the bucket (a few LISTs)."""

    def __init__(self, store: store_mod.ObjectStore):
        self.starts: dict[int, int] = {}
        self.owners: dict[int, str] = {}
        for o in store.list(TERM_PREFIX):
            nums = _numbers(o.key, TERM_PREFIX, 1)
            if nums:
                try:
                    marker = json.loads(store.get(o.key))
                    self.starts[nums[0]] = int(marker["start"])
                    self.owners[nums[0]] = str(marker.get("owner", ""))
                except (store_mod.NotFound, ValueError, KeyError, TypeError):
                    raise errors.Corrupt(f"{o.key} is not a razordav term marker") from None
        self.segments = sorted(
            (n + (o.key,) for o in store.list(SEGMENT_PREFIX)
             if (n := _numbers(o.key, SEGMENT_PREFIX, 3))), key=lambda s: (s[0], -s[2]))
        self.snapshots = sorted(n + (o.key,) for o in store.list(SNAPSHOT_PREFIX)
                                if (n := _numbers(o.key, SNAPSHOT_PREFIX, 2)))

    def limit(self, term: int) -> float:
        """The first row no longer written under ``term``: the start of a later term."""
        later = [start for t, start in self.starts.items() if t > term]
        return min(later) if later else float("inf")

    def valid(self, last: int, term: int) -> bool:
        return last < self.limit(term)

    def newest_term(self) -> int:
        terms = set(self.starts) | {s[2] for s in self.segments} | {s[1] for s in self.snapshots}
        return max(terms, default=0)

    def snapshot(self) -> tuple[int, int, str] | None:
        """The newest valid snapshot ``(seq, term, key)``."""
        valid = [s for s in self.snapshots if s[0] < self.limit(s[1])]
        return max(valid, default=None)

    def after(self, seq: int) -> list[tuple[int, int, int, str]]:
        """The valid segments to replay after row ``seq``, in order; raises ``Corrupt`` on a
        gap. Where two terms have a segment at the same place the newer term's wins."""
        out = []
        for first, last, term, key in self.segments:
            if last <= seq or not self.valid(last, term):
                continue
            if first > seq + 1:
                raise errors.Corrupt(f"journal gap: rows {seq + 1}-{first - 1} are missing "
                                     "from the bucket")
            out.append((first, last, term, key))
            seq = last
        return out

    def stale(self, term: int) -> list[str]:
        """Segments and snapshots of older terms that are not part of the history: what a
        holder that lost its lease wrote late. ``term``'s holder removes them."""
        return [s[-1] for s in self.segments if s[2] < term and not self.valid(s[1], s[2])] + \
            [s[-1] for s in self.snapshots if s[1] < term and not s[0] < self.limit(s[1])]


def local_value(tree, key: str) -> int:
    """A number in the data dir's local ``shipper`` table (never shipped): ``shipped``, the
    last row in the bucket; ``lease_term``, the newest term this data dir held or saw."""
    row = tree.db.reader().execute("SELECT value FROM shipper WHERE key = ?", (key,)).fetchone()
    return row[0] if row else 0


def set_local_value(tree, key: str, value: int) -> None:
    with tree.db.write() as c:
        c.execute("INSERT OR REPLACE INTO shipper VALUES (?, ?)", (key, value))


def unshipped(tree) -> int:
    """Journal rows not yet in the bucket, in O(1): the last row's seq less the shipped one.

    Exact because ``seq`` is AUTOINCREMENT, never given explicitly, so rows are numbered
    without gaps (a rolled-back insert rolls ``sqlite_sequence`` back with it), and rows go
    only once shipped (``_upload_segment``) or all together when ``_replay`` moves both
    numbers to the same row. fsck compares it with a COUNT."""
    with tree.db.snapshot() as c:
        last = c.execute("SELECT seq FROM sqlite_sequence WHERE name = 'journal'").fetchone()
        shipped = c.execute("SELECT value FROM shipper WHERE key = 'shipped'").fetchone()
    return max(0, (last[0] if last else 0) - (shipped[0] if shipped else 0))


def count_unshipped(tree) -> int:
    """``unshipped`` by a full count of the rows (fsck)."""
    with tree.db.snapshot() as c:
        shipped = c.execute("SELECT value FROM shipper WHERE key = 'shipped'").fetchone()
        return c.execute("SELECT COUNT(*) FROM journal WHERE seq > ?",
                         (shipped[0] if shipped else 0,)).fetchone()[0]


class Shipper:
    """Ships journal rows and snapshots of one volume to its store."""

    def __init__(self, volume, interval: float = 2.0, snapshot_interval: float = 600.0,
                 snapshot_segments: int = 200):
        self.vol = volume
        self.tree = volume.tree
        self.store = volume.store
        self.lease = volume.lease
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
        self.on_tick = []                      # run every interval, round or rest (stats)
        self._last_round = time.monotonic()
        self.collected = 0                     # blocks deleted so far

    # -- state --

    def shipped(self) -> int:
        return local_value(self.tree, "shipped")

    def pending(self) -> int:
        return unshipped(self.tree)

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
        if flush and self.lease.state() != "held":
            log.warning("journal not shipped at shutdown: the lease is %s", self.lease.state())
        elif flush:
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
            if self.lease.lost:
                return False      # never again: another gateway writes this volume now
            try:
                done = self._ship()
                if done and self.vol.repacker is not None:
                    self.vol.repacker.run(self.shipped())
                if done and self._snapshot_due():
                    self.snapshot()
                self.last_error = None
                return done
            except (LeaseLost, LeaseLapsed) as exc:
                self.last_error = str(exc)
                return False
            except Exception as exc:
                if not (isinstance(exc, store_mod.StoreError) or self.store.is_transient(exc)):
                    raise
                self.last_error = str(exc)
                log.warning("metadata not shipped, will retry: %s", exc)
                return False

    def _ship(self) -> bool:
        c = self.tree.db.reader()
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
        self.store.put(segment_key(first, last, self.lease.term), data)
        with self.tree.db.write() as c:
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
            with self.tree.db.exclusive():   # writers wait, so the copy is exactly 'shipped'
                if self.pending():
                    return 0
                src = sqlite3.connect(self.tree.path)
                try:
                    src.backup(dst)
                finally:
                    src.close()
            seq = dst.execute("SELECT value FROM shipper WHERE key = 'shipped'").fetchone()
            seq = seq[0] if seq else 0
            present = {r[0] for r in dst.execute("SELECT name FROM sqlite_master")}
            for t in db_mod.TABLES.values():   # rows private to this data dir stay here
                if not t.snapshot and t.name in present:
                    dst.execute(f"DELETE FROM {t.name}")
            dst.commit()
            dst.execute("VACUUM")
            dst.close()
            raw = copy.read_bytes()
        data = _SNAP_MAGIC + zstandard.ZstdCompressor(level=3).compress(raw)
        self.store.put(snapshot_key(seq, self.lease.term), data)
        self._prune(seq)
        self._last_snapshot = time.monotonic()
        self._segments_since_snapshot = 0
        log.info("metadata snapshot at journal %d (%d bytes)", seq, len(data))
        return seq

    def _prune(self, seq: int) -> None:
        """Drop segments the snapshot at ``seq`` holds, all but the two newest snapshots, and
        what older terms wrote that is not part of the history."""
        chain = Chain(self.store)
        old = [s[-1] for s in chain.segments if s[1] <= seq]
        old += [s[-1] for s in chain.snapshots[:-2]]
        old += chain.stale(self.lease.term)
        # A term marker only bounds the history of older terms: once no segment or
        # snapshot of an older term is left, it goes too, so the markers read at every
        # open and prune stay few however often the volume changed hands.
        left = [s[2] for s in chain.segments if s[-1] not in old] + \
            [s[1] for s in chain.snapshots if s[-1] not in old]
        oldest = min(left, default=self.lease.term)
        old += [term_key(t) for t in chain.starts if t < oldest]
        if old:
            self.store.delete_many(sorted(set(old)))
        # interrupted segment and snapshot uploads; not a walk of every block
        self.store.remove_leftovers(older_than=3600, prefix="meta/")


# The snapshot format: 2 may hold packs (an older razordav must refuse it, not read packed
# blocks as missing objects); 1 is still read.
_SNAP_MAGIC = b"RZSNAP2\n"
_SNAP_MAGICS = (_SNAP_MAGIC, b"RZSNAP1\n")


# -- restore --

def restore(store: store_mod.ObjectStore, db_path: Path, progress=None) -> int:
    """Rebuild the tree database at ``db_path`` from the bucket; return the last sequence.

    ``progress(done, total)`` is called as segments are applied. The data dir remembers the
    newest term it saw (``lease_term``), so that the gateway started on it later can tell
    whether the bucket moved on meanwhile (``catch_up``).
    """
    from .tree import Tree
    chain = Chain(store)
    seq = 0
    snap = chain.snapshot()
    if snap:
        data = store.get(snap[-1])
        if not data.startswith(_SNAP_MAGICS):
            if data.startswith(b"RZSNAP"):
                raise errors.Corrupt(f"{snap[-1]}: snapshot format {data[6:7].decode('ascii', 'replace')} "
                                     "is newer than this razordav")
            raise errors.Corrupt(f"{snap[-1]} is not a razordav snapshot")
        db_path.write_bytes(zstandard.ZstdDecompressor().decompress(
            data[len(_SNAP_MAGIC):], max_output_size=1 << 36))
        seq = snap[0]
    tree = Tree(db_path)
    try:
        seq = _replay(store, tree, chain, seq, progress)
        set_local_value(tree, "lease_term", chain.newest_term())
        pmap = packs.PackMap(tree.db)
        located, _ = packs.adopt(store, pmap, packs.orphans(store, pmap))
        if located:
            log.info("located %d blocks from the indexes of packs the journal did not name "
                     "yet", located)
    finally:
        tree.close()
    return seq


def catch_up(store: store_mod.ObjectStore, tree, progress=None) -> int:
    """Apply what the bucket's history holds past this data dir's shipped row (rows another
    gateway shipped after this dir was restored from it); return how many segments. Only
    for a data dir with nothing of its own left to ship."""
    shipped = local_value(tree, "shipped")
    chain = Chain(store)
    segments = chain.after(shipped)
    if segments:
        _replay(store, tree, chain, shipped, progress)
    return len(segments)


def _replay(store, tree, chain: Chain, seq: int, progress) -> int:
    """Apply the segments after ``seq``. Rows go in with INSERT OR REPLACE, whose implicit
    delete fires no trigger, so the counters are marked unknown first and recounted at the
    end (a crash between leaves them unknown: the next open recounts)."""
    segments = chain.after(seq)
    if segments:
        tree.invalidate_counters()
    c = tree.db.reader()
    for i, (first, last, _term, key) in enumerate(segments):
        rows = _read_segment(store.get(key), key)
        with tree.db.write():
            for row_seq, op in rows:
                if row_seq > seq:
                    _apply(c, json.loads(op))
            c.execute("DELETE FROM journal")  # what replay captured is already shipped
        seq = last
        if progress:
            progress(i + 1, len(segments))
    with tree.db.write() as c:
        c.execute("DELETE FROM journal")
        c.execute("INSERT OR REPLACE INTO shipper VALUES ('shipped', ?)", (seq,))
        c.execute("DELETE FROM sqlite_sequence WHERE name = 'journal'")
        c.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('journal', ?)", (seq,))
    if segments:
        tree.recount()
    return seq


def begin_term(store: store_mod.ObjectStore, tree, lease) -> int:
    """Start writing the volume under ``lease.term`` from the data dir of ``tree``.

    Refuses (``VolumeError``) a data dir that is not the volume's newest history: one that
    another gateway's term superseded, or that never held nor was restored from a volume
    whose history is fenced. Applies what the bucket holds past the data dir's shipped row
    (a restore taken while the old holder still wrote), then writes the term marker saying
    where the new chain begins, before anything else of this term. Returns the rows caught
    up on."""
    chain = Chain(store)
    mine = local_value(tree, "lease_term")
    newest = max(lease.previous_term, chain.newest_term())
    foreign = [t for t in range(mine + 1, newest + 1)
               if chain.owners.get(t, lease.owner) != lease.owner]
    if foreign:
        if mine == 0:
            raise errors.VolumeError(
                "this data dir was never restored from the volume, which other gateways "
                f"have written (up to term {newest}); run `razordav restore` into a new "
                "--data-dir")
        raise errors.VolumeError(
            f"another gateway wrote the volume (term {foreign[-1]}) after this data dir last "
            f"held it (term {mine}): its metadata is out of date. Run `razordav restore` into "
            "a new --data-dir")
    caught = 0
    if unshipped(tree) == 0:
        caught = catch_up(store, tree)
    elif chain.after(local_value(tree, "shipped")):
        log.info("the bucket holds journal rows this data dir shipped before a crash without "
                 "recording it; they are shipped again under term %d", lease.term)
    start = local_value(tree, "shipped") + 1
    store.put(term_key(lease.term), json.dumps({
        "format": FORMAT_VERSION, "term": lease.term, "start": start, "owner": lease.owner,
        "time": time.time()}).encode())
    set_local_value(tree, "lease_term", lease.term)
    return caught


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
    t = db_mod.replicated().get(table)
    if t is None:
        raise db_mod.unknown_table(table)
    cols, keys, blobs = t.columns, t.keys, t.blobs
    names = cols if kind == "U" else keys
    values = [bytes.fromhex(v) if n in blobs and v is not None else v
              for n, v in zip(names, values)]
    if kind == "U":
        c.execute(f"INSERT OR REPLACE INTO {table} ({', '.join(cols)}) VALUES "
                  f"({', '.join('?' * len(cols))})", values)
    else:
        c.execute(f"DELETE FROM {table} WHERE " + " AND ".join(f"{k} = ?" for k in keys), values)
