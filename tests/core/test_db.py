"""The metadata database: when its write-ahead log is checkpointed."""

import os

from razordav.core import db as db_mod
from razordav.core.tree import ROOT, Tree


def test_a_grown_log_checkpoints_once_per_threshold_not_on_every_commit(tmp_path, monkeypatch):
    # SQLite reuses the log file from its start after a checkpoint but never shrinks it by
    # itself: a rule "checkpoint when the file is past the threshold" fired on every durable
    # commit once the file had once grown that far (three more flushes per PUT).
    limit = 256 << 10
    monkeypatch.setattr(db_mod, "CHECKPOINT_BYTES", limit)
    tree = Tree(tmp_path / "t.db")
    events = []
    tree.db.before_durable.append(lambda: events.append("hook"))
    tree.db.reader().set_trace_callback(
        lambda sql: events.append("checkpoint") if "wal_checkpoint" in sql else None)
    wal = tree.path + "-wal"
    commits, biggest, at = 600, 0, []
    for i in range(commits):
        before = tree.db.checkpoints
        tree.mkdir(ROOT, f"d{i:04}-" + "x" * 200)   # about ten pages (40 KiB) of log each
        if at:   # (creating the schema wrote a longer log before the first commit)
            biggest = max(biggest, os.path.getsize(wal))
        if tree.db.checkpoints != before:
            at.append(i)
    assert events.count("checkpoint") == tree.db.checkpoints == len(at)
    # 600 commits write about 24 MiB of log: one checkpoint per 256 KiB of it, not one per
    # commit once the file first passed 256 KiB.
    assert 20 <= len(at) <= commits // 5, at
    gaps = [b - a for a, b in zip(at, at[1:])]
    assert min(gaps) >= 4, gaps
    assert biggest <= limit + (limit // 16) + (64 << 10), biggest   # cut back as it restarts
    # Every checkpoint follows the hooks that flush what deferred commits name.
    for i, e in enumerate(events):
        if e == "checkpoint":
            assert events[i - 1] == "hook"
    tree.close()


def test_a_log_that_cannot_restart_is_retried_only_after_more_log(tmp_path, monkeypatch):
    limit = 128 << 10
    monkeypatch.setattr(db_mod, "CHECKPOINT_BYTES", limit)
    tree = Tree(tmp_path / "t.db")
    reader = __import__("sqlite3").connect(tree.path)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM inodes").fetchone()   # holds the log open
    for i in range(300):
        tree.mkdir(ROOT, f"d{i:04}-" + "x" * 200)
    # the log grows (about 3 pages a commit); tries are a sixteenth of the limit apart
    size = os.path.getsize(tree.path + "-wal")
    assert size > 2 * limit
    assert tree.db.checkpoints <= (size - limit) // (limit // 16) + 1
    reader.execute("COMMIT")
    reader.close()
    tree.close()


def test_deferred_commits_turn_durable_once_the_log_is_long(tmp_path, monkeypatch):
    """Small blocks ride in the log too: a long run of deferred commits (the FUSE face)
    must not grow it without bound. Past DEFERRED_LOG_MAX a deferred commit runs the
    before_durable hooks, commits durably and may checkpoint."""
    monkeypatch.setattr(db_mod, "CHECKPOINT_BYTES", 256 << 10)
    monkeypatch.setattr(db_mod, "DEFERRED_LOG_MAX", 1 << 20)
    tree = Tree(tmp_path / "t.db")
    hooks = []
    tree.db.before_durable.append(lambda: hooks.append(os.path.getsize(tree.path + "-wal")))
    with tree.db.deferred_sync():
        for i in range(200):
            tree.mkdir(ROOT, f"d{i:04}-" + "x" * 200)      # about 40 KiB of log each
    assert hooks and min(hooks) > 1 << 20                 # only once the log was long
    assert tree.db.checkpoints >= 1
    assert os.path.getsize(tree.path + "-wal") < 4 << 20  # not 8 MiB: it was cut back
    tree.close()
