"""Consistency checks of a tree's invariants: what fsck reports and what every core test
asserts at its end. Read-only; each finding is one human-readable line.

Checked: every entry points at an existing inode; every inode but the root is linked as
often as its ``nlink`` says (directories: 2 + subdirectories, exactly one entry); the tree
has no cycles; every extent names a known block; each block's reference count equals the
number of extents naming it; sizes cover the extents.
"""

from __future__ import annotations

import stat as st

from .tree import ROOT, Tree


def check_tree(tree: Tree) -> list[str]:
    c = tree.db.reader()
    problems: list[str] = []
    c.execute("BEGIN")
    try:
        problems += [f"entry {p}/{n!r} points at missing inode {i}" for p, n, i in c.execute(
            "SELECT parent, name, ino FROM dentries WHERE ino NOT IN (SELECT ino FROM inodes)")]
        problems += [f"entry {n!r} is in missing or non-directory inode {p}" for p, n in c.execute(
            "SELECT d.parent, d.name FROM dentries d LEFT JOIN inodes i ON i.ino = d.parent "
            "WHERE i.ino IS NULL OR (i.mode & 61440) != 16384")]
        links = dict(c.execute("SELECT ino, COUNT(*) FROM dentries GROUP BY ino").fetchall())
        subdirs = dict(c.execute(
            "SELECT d.parent, COUNT(*) FROM dentries d JOIN inodes i ON i.ino = d.ino "
            "WHERE (i.mode & 61440) = 16384 GROUP BY d.parent").fetchall())
        for ino, mode, nlink, size in c.execute("SELECT ino, mode, nlink, size FROM inodes"):
            entries = links.get(ino, 0)
            if st.S_ISDIR(mode):
                want = 2 + subdirs.get(ino, 0)
                # nlink 0, no entry: removed while open (Tree.rmdir keep), purged on release
                if ino != ROOT and entries != 1 and not (nlink == 0 and entries == 0):
                    problems.append(f"directory inode {ino} has {entries} entries")
            else:
                want = entries
            if nlink != want and not (nlink == 0 and entries == 0):
                problems.append(f"inode {ino} has nlink {nlink}, expected {want}")
            if ino != ROOT and entries == 0 and nlink > 0:
                problems.append(f"inode {ino} is not linked anywhere")
        problems += [f"inode {i} has extent {x} past its size {s}" for i, x, s in c.execute(
            f"SELECT e.ino, MAX(e.idx), i.size FROM extents e JOIN inodes i ON i.ino = e.ino "
            f"GROUP BY e.ino HAVING MAX(e.idx) * {tree_block_size(tree)} >= i.size")]
        problems += [f"extent {i}:{x} names unknown block {h.hex()[:16]}" for i, x, h in c.execute(
            "SELECT ino, idx, hash FROM extents WHERE hash NOT IN (SELECT hash FROM blocks)")]
        problems += [f"block {h.hex()[:16]} has refs {r}, extents use it {n} times"
                     for h, r, n in c.execute(
                         "SELECT b.hash, b.refs, COUNT(e.hash) FROM blocks b "
                         "LEFT JOIN extents e ON e.hash = b.hash GROUP BY b.hash "
                         "HAVING b.refs != COUNT(e.hash)")]
        problems += _cycles(c)
    finally:
        c.execute("COMMIT")
    return problems


def tree_block_size(tree: Tree) -> int:
    return int(tree.meta("block_size") or 4 << 20)


def _cycles(c) -> list[str]:
    parent = dict(c.execute("SELECT d.ino, d.parent FROM dentries d JOIN inodes i "
                            "ON i.ino = d.ino WHERE (i.mode & 61440) = 16384").fetchall())
    problems, reaches_root = [], {ROOT}
    for start in parent:
        seen, cur = [], start
        while cur not in reaches_root:
            if cur in seen or cur not in parent:
                problems.append(f"directory inode {start} is not reachable from the root")
                break
            seen.append(cur)
            cur = parent[cur]
        else:
            reaches_root.update(seen)
    return problems
