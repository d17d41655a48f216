"""The namespace: creation, lookup, listing, rename, links, names, properties, xattrs."""

import stat
import unicodedata

import pytest

from razordav.core import errors
from razordav.core.check import check_tree
from razordav.core.tree import ROOT, Tree


@pytest.fixture
def tree(tmp_path):
    t = Tree(tmp_path / "t.db", block_size=4096)
    yield t
    assert check_tree(t) == []
    t.close()


def test_mkdir_create_lookup_and_list_in_name_order(tree):
    d = tree.mkdir(ROOT, "docs")
    for name in ["b.txt", "a.txt", "c.txt"]:
        tree.create(d.ino, name)
    assert [n for n, _ in tree.readdir(d.ino)] == ["a.txt", "b.txt", "c.txt"]
    assert tree.lookup(d.ino, "b.txt").is_file
    assert tree.resolve("/docs/c.txt").ino == tree.lookup(d.ino, "c.txt").ino
    assert tree.getattr(ROOT).nlink == 3 and tree.getattr(d.ino).nlink == 2


def test_errors_have_the_right_type(tree):
    f = tree.create(ROOT, "f")
    with pytest.raises(errors.Exists):
        tree.create(ROOT, "f")
    with pytest.raises(errors.NotFound):
        tree.lookup(ROOT, "missing")
    with pytest.raises(errors.NotADirectory):
        tree.create(f.ino, "child")
    with pytest.raises(errors.NotADirectory):
        tree.resolve("/f/child")
    with pytest.raises(errors.IsADirectory):
        tree.mkdir(ROOT, "d") and tree.unlink(ROOT, "d")
    with pytest.raises(errors.NotADirectory):
        tree.rmdir(ROOT, "f")


def test_rmdir_refuses_non_empty(tree):
    d = tree.mkdir(ROOT, "d")
    tree.create(d.ino, "x")
    with pytest.raises(errors.NotEmpty):
        tree.rmdir(ROOT, "d")
    tree.unlink(d.ino, "x")
    tree.rmdir(ROOT, "d")
    assert tree.readdir(ROOT) == [] and tree.getattr(ROOT).nlink == 2


def test_rename_directory_is_one_row_update(tree):
    a = tree.mkdir(ROOT, "a")
    b = tree.mkdir(ROOT, "b")
    for i in range(500):
        tree.create(a.ino, f"f{i}")
    c = tree.db.reader()
    before = c.total_changes
    seq = c.execute("SELECT MAX(seq) FROM journal").fetchone()[0]
    tree.rename(ROOT, "a", b.ino, "moved")
    journaled = c.execute("SELECT COUNT(*) FROM journal WHERE seq > ?", (seq,)).fetchone()[0]
    # one entry row plus the two parents' and the inode's times, whatever the size
    assert c.total_changes - before - journaled <= 4
    assert journaled <= 5
    assert tree.resolve("/b/moved/f499").is_file
    assert tree.getattr(b.ino).nlink == 3 and tree.getattr(ROOT).nlink == 3


def test_rename_replace_and_noreplace(tree):
    tree.create(ROOT, "x")
    y = tree.create(ROOT, "y")
    with pytest.raises(errors.Exists):
        tree.rename(ROOT, "x", ROOT, "y", replace=False)
    replaced = tree.rename(ROOT, "x", ROOT, "y")
    assert replaced == y.ino
    assert [n for n, _ in tree.readdir(ROOT)] == ["y"]
    with pytest.raises(errors.NotFound):
        tree.getattr(y.ino)


def test_rename_directory_rules(tree):
    a = tree.mkdir(ROOT, "a")
    sub = tree.mkdir(a.ino, "sub")
    with pytest.raises(errors.InvalidArgument):
        tree.rename(ROOT, "a", sub.ino, "loop")
    tree.mkdir(ROOT, "full")
    tree.create(tree.lookup(ROOT, "full").ino, "x")
    with pytest.raises(errors.NotEmpty):
        tree.rename(ROOT, "a", ROOT, "full")
    tree.create(ROOT, "file")
    with pytest.raises(errors.NotADirectory):
        tree.rename(ROOT, "a", ROOT, "file")
    with pytest.raises(errors.IsADirectory):
        tree.rename(ROOT, "file", ROOT, "a")
    tree.mkdir(ROOT, "empty")
    tree.rename(ROOT, "a", ROOT, "empty")
    assert tree.resolve("/empty/sub").is_dir


def test_rename_exchange(tree):
    a = tree.create(ROOT, "a")
    d = tree.mkdir(ROOT, "d")
    tree.rename(ROOT, "a", ROOT, "d", exchange=True)
    assert tree.lookup(ROOT, "a").ino == d.ino and tree.lookup(ROOT, "d").ino == a.ino


def test_hard_links_keep_inode_until_last(tree):
    f = tree.create(ROOT, "f")
    d = tree.mkdir(ROOT, "d")
    tree.link(f.ino, d.ino, "g")
    assert tree.getattr(f.ino).nlink == 2
    tree.unlink(ROOT, "f")
    assert tree.getattr(f.ino).nlink == 1
    tree.unlink(d.ino, "g")
    with pytest.raises(errors.NotFound):
        tree.getattr(f.ino)
    with pytest.raises(errors.NotPermitted):
        tree.link(d.ino, ROOT, "dirlink")


def test_unlink_keeps_open_inode_until_purged(tree):
    f = tree.create(ROOT, "f")
    tree.unlink(ROOT, "f", keep={f.ino})
    assert tree.getattr(f.ino).nlink == 0
    assert tree.purge_if_unlinked(f.ino)
    with pytest.raises(errors.NotFound):
        tree.getattr(f.ino)


def test_purge_if_unlinked_many_takes_only_the_unlinked(tree):
    """The FUSE face forgets thousands of inodes at once: one query finds the dead ones."""
    files = [tree.create(ROOT, f"f{i}") for i in range(1200)]   # more than one chunk
    dead = {f.ino for f in files[::3]}
    for i in range(0, len(files), 3):
        tree.unlink(ROOT, f"f{i}", keep=dead)
    assert tree.purge_if_unlinked_many([f.ino for f in files] + [10 ** 9]) == len(dead)
    for f in files:
        if f.ino in dead:
            with pytest.raises(errors.NotFound):
                tree.getattr(f.ino)
        else:
            assert tree.getattr(f.ino).nlink == 1
    assert check_tree(tree) == []


def test_rmdir_and_rename_keep_an_open_directory_until_purged(tree):
    d = tree.mkdir(ROOT, "d")
    tree.rmdir(ROOT, "d", keep={d.ino})
    assert tree.getattr(d.ino).nlink == 0 and tree.getattr(ROOT).nlink == 2
    assert check_tree(tree) == []   # an open, removed directory is not a broken tree
    assert tree.purge_if_unlinked(d.ino)
    a, b = tree.mkdir(ROOT, "a"), tree.mkdir(ROOT, "b")
    assert tree.rename(ROOT, "a", ROOT, "b", keep={b.ino}) == b.ino
    assert tree.getattr(b.ino).nlink == 0 and tree.lookup(ROOT, "b").ino == a.ino
    assert tree.purge_if_unlinked(b.ino)
    with pytest.raises(errors.NotFound):
        tree.getattr(b.ino)


def test_nfc_and_nfd_name_the_same_file(tree):
    nfd = unicodedata.normalize("NFD", "café.txt")
    nfc = unicodedata.normalize("NFC", "café.txt")
    assert nfd != nfc
    f = tree.create(ROOT, nfd)
    assert tree.lookup(ROOT, nfc).ino == f.ino
    with pytest.raises(errors.Exists):
        tree.create(ROOT, nfc)
    assert tree.readdir(ROOT)[0][0] == nfd  # the name is kept as given
    tree.rename(ROOT, nfc, ROOT, nfc)  # same key: renames the spelling in place
    assert tree.readdir(ROOT)[0][0] == nfc


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\0b"])
def test_invalid_names_are_refused(tree, name):
    with pytest.raises(errors.InvalidName):
        tree.create(ROOT, name)


def test_names_at_the_byte_limit(tree):
    ok = "é" * 127 + "x"            # 255 bytes in UTF-8
    assert len(ok.encode()) == 255
    tree.create(ROOT, ok)
    assert tree.lookup(ROOT, ok).is_file
    too_long = "é" * 128              # 256 bytes
    with pytest.raises(errors.NameTooLong):
        tree.create(ROOT, too_long)
    with pytest.raises(errors.NameTooLong):
        tree.create(ROOT, "x" * 256)
    with pytest.raises(errors.InvalidName):
        tree.create(ROOT, "bad\udcff")  # a lone surrogate is not UTF-8


def test_symlink_and_special_files(tree):
    s = tree.symlink(ROOT, "link", b"target/path")
    assert stat.S_ISLNK(s.mode) and s.target == b"target/path" and s.size == 11
    fifo = tree.mknod(ROOT, "fifo", stat.S_IFIFO | 0o600)
    assert stat.S_ISFIFO(fifo.mode)


def test_setattr(tree):
    f = tree.create(ROOT, "f")
    a = tree.setattr(f.ino, mode=stat.S_IFREG | 0o4755, uid=1000, mtime=123456789)
    assert a.mode & 0o7777 == 0o4755 and a.uid == 1000 and a.mtime == 123456789
    with pytest.raises(errors.InvalidArgument):
        tree.setattr(f.ino, size=3)
    with pytest.raises(errors.NotFound):
        tree.setattr(9999, uid=1)


def test_dead_properties(tree):
    f = tree.create(ROOT, "f")
    tree.set_props(f.ino, {("DAV:", "displayname"): b"<x/>", ("urn:x", "color"): b"red"})
    assert tree.props(f.ino) == {("DAV:", "displayname"): b"<x/>", ("urn:x", "color"): b"red"}
    tree.set_props(f.ino, {("urn:x", "color"): None})
    assert list(tree.props(f.ino)) == [("DAV:", "displayname")]
    tree.unlink(ROOT, "f")
    assert tree.props(f.ino) == {}


def test_xattrs_create_replace(tree):
    f = tree.create(ROOT, "f")
    tree.set_xattr(f.ino, "user.a", b"1", create=True)
    with pytest.raises(errors.Exists):
        tree.set_xattr(f.ino, "user.a", b"2", create=True)
    with pytest.raises(errors.NoAttribute):
        tree.set_xattr(f.ino, "user.b", b"2", replace=True)
    tree.set_xattr(f.ino, "user.a", b"3", replace=True)
    assert tree.xattrs(f.ino) == {"user.a": b"3"}
    tree.set_xattr(f.ino, "user.a", None)
    assert tree.xattrs(f.ino) == {}
    with pytest.raises(errors.NoAttribute):
        tree.set_xattr(f.ino, "user.a", None)


def test_readdir_pages_are_stable(tree):
    d = tree.mkdir(ROOT, "d")
    for i in range(100):
        tree.create(d.ino, f"n{i:03}")
    first = tree.readdir(d.ino, limit=40)
    tree.unlink(d.ino, "n010")  # change the directory between pages
    tree.create(d.ino, "n050a")
    rest = tree.readdir(d.ino, after=tree.entry_key(first[-1][0]))
    names = [n for n, _ in first + rest]
    assert names[:40] == [f"n{i:03}" for i in range(40)]
    assert "n050a" in names and len(names) == 100 + 1


def test_hundred_thousand_entries(tree):
    d = tree.mkdir(ROOT, "big")
    with tree.db.write():
        for i in range(100_000):
            tree.create(d.ino, f"file-{i:06}")
    c = tree.db.reader()
    plan = " ".join(r[3] for r in c.execute(
        "EXPLAIN QUERY PLAN SELECT ino FROM dentries WHERE parent = ? AND key = ?", (d.ino, "x")))
    assert "USING PRIMARY KEY" in plan or "INDEX" in plan
    assert tree.lookup(d.ino, "file-054321").is_file
    listing = tree.readdir(d.ino)
    assert len(listing) == 100_000 and listing[0][0] == "file-000000"
    assert listing[-1][0] == "file-099999"


def test_failed_transaction_changes_nothing(tree):
    tree.create(ROOT, "keep")
    with pytest.raises(RuntimeError):
        with tree.db.write():
            tree.create(ROOT, "new")
            raise RuntimeError("boom")
    assert [n for n, _ in tree.readdir(ROOT)] == ["keep"]
