"""Random operation sequences on a razordav mount and a plain directory, in lockstep.

Every operation runs on both; its result (value or errno name) must be the same, and so must
the trees at the end (names, types, modes, sizes, contents, link counts, symlink targets).
Paths come from a small pool, so operations collide: renames onto existing entries, links to
removed files, writes through descriptors of unlinked files. Offsets favour the 4 MiB block
boundaries, and some descriptors stay open across operations, so writes sit in the mount's
buffer while others rename, truncate and read.

Sequences come from fixed seeds (long ones) and from Hypothesis (short ones, shrunk on
failure). Afterwards the mount is stopped, the volume's metadata checked (``check_tree``),
and the volume mounted again: the trees must still be equal.
"""
from __future__ import annotations

import hashlib
import os
import random

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from mounts import RazorMount
from oracle import PAIR, attrs, err_name, tree_of
from razordav.core.check import check_tree
from razordav.core.tree import Tree

MiB = 1 << 20
BS = 4 * MiB
FILES = ["a", "b", "c", "d/a", "d/b", "d/d/a", "e/a", "e/b"]
DIRS = ["d", "e", "d/d", "e/d"]
PRELUDE = [("mkdir", "d", 0o755), ("mkdir", "d/d", 0o755), ("mkdir", "e", 0o755),
           ("create", "a", "", 0o644), ("create", "d/a", "", 0o644), ("open", 0, "a", os.O_RDWR)]
TARGETS = ["a", "b", "d", "d/a", "missing", "a/x", "e"]
MODES = [0o644, 0o600, 0o755, 0o000, 0o4755, 0o2711, 0o1777, 0o444, 0o6775]
OFFSETS = [0, 1, 100, 4095, 4096, 65535, BS - 1, BS, BS + 7, 2 * BS - 3, 2 * BS + 100]
LENGTHS = [1, 7, 4096, 10_000, 70_000, MiB + 3]
OPEN_FLAGS = [os.O_RDWR, os.O_RDWR | os.O_APPEND, os.O_RDONLY, os.O_WRONLY | os.O_TRUNC,
              os.O_RDWR | os.O_CREAT, os.O_WRONLY | os.O_CREAT | os.O_APPEND,
              os.O_RDWR | os.O_CREAT]
SLOTS = 3


WEIGHTS = {"create": 4, "write": 6, "append": 2, "truncate": 3, "rename": 4, "link": 2,
           "symlink": 1, "unlink": 2, "mkdir": 1, "rmdir": 1, "chmod": 1, "read": 3, "stat": 2,
           "open": 4, "fwrite": 8, "fread": 4, "ftruncate": 2, "close": 1}


def random_op(rnd: random.Random) -> tuple:
    """One operation; mostly on file names, sometimes on any name (to meet EISDIR & co)."""
    any_path = lambda: rnd.choice(FILES + DIRS)   # noqa: E731
    path = lambda: rnd.choice(FILES) if rnd.random() < 0.9 else any_path()   # noqa: E731
    offset = lambda: rnd.choice(OFFSETS + [rnd.randrange(3 * BS)])   # noqa: E731
    length = lambda: rnd.choice(LENGTHS)   # noqa: E731
    data = lambda: (length(), rnd.choice("rzp"), rnd.randrange(1 << 30))   # noqa: E731
    slot = lambda: rnd.randrange(SLOTS)   # noqa: E731
    kind = rnd.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))[0]
    return {
        "create": lambda: ("create", path(), rnd.choice(["", "excl", "trunc", "append"]),
                           rnd.choice(MODES)),
        "write": lambda: ("write", path(), offset(), data()),
        "append": lambda: ("append", path(), data()),
        "truncate": lambda: ("truncate", path(), offset()),
        "rename": lambda: ("rename", *(rnd.sample(DIRS, 2) if rnd.random() < 0.2
                                       else (path(), path()))),
        "link": lambda: ("link", path(), path()),
        "symlink": lambda: ("symlink", rnd.choice(TARGETS), path()),
        "unlink": lambda: ("unlink", path()),
        "mkdir": lambda: ("mkdir", rnd.choice(DIRS), rnd.choice(MODES)),
        "rmdir": lambda: ("rmdir", rnd.choice(DIRS)),
        "chmod": lambda: ("chmod", any_path(), rnd.choice(MODES)),
        "read": lambda: ("read", path(), offset(), length()),
        "stat": lambda: ("stat", any_path()),
        "open": lambda: ("open", slot(), path(), rnd.choice(OPEN_FLAGS)),
        "fwrite": lambda: ("fwrite", slot(), offset(), data()),
        "fread": lambda: ("fread", slot(), offset(), length()),
        "ftruncate": lambda: ("ftruncate", slot(), offset()),
        "close": lambda: ("close", slot()),
    }[kind]()


def payload(spec: tuple) -> bytes:
    """Random (incompressible), zeros (like a hole, but written) or a repeated pattern."""
    length, kind, seed = spec
    if kind == "r":
        return random.Random(seed).randbytes(length)
    if kind == "z":
        return bytes(length)
    return (seed.to_bytes(4, "little") * (length // 4 + 1))[:length]


def digest(data: bytes):
    return data if len(data) <= 64 else (len(data), hashlib.sha1(data).hexdigest())


class Side:
    """One of the two trees, with its open descriptors by slot."""

    def __init__(self, root: str):
        self.root = root
        self.fds: dict[int, int] = {}

    def p(self, path: str) -> str:
        return os.path.join(self.root, path)

    def fd(self, slot: int) -> int:
        if slot not in self.fds:
            raise OSError(9, "slot not open")   # EBADF, as for a closed descriptor
        return self.fds[slot]

    def close_all(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()

    # -- the operations: each returns what both sides must agree on --

    def create(self, path, how, mode):
        flags = os.O_WRONLY | os.O_CREAT | {"": 0, "excl": os.O_EXCL, "trunc": os.O_TRUNC,
                                            "append": os.O_APPEND}[how]
        os.close(os.open(self.p(path), flags, mode))

    def write(self, path, offset, spec):
        fd = os.open(self.p(path), os.O_WRONLY)
        try:
            return os.pwrite(fd, payload(spec), offset)
        finally:
            os.close(fd)

    def append(self, path, spec):
        fd = os.open(self.p(path), os.O_WRONLY | os.O_APPEND)
        try:
            return os.write(fd, payload(spec)), os.lseek(fd, 0, os.SEEK_CUR)
        finally:
            os.close(fd)

    def truncate(self, path, size):
        os.truncate(self.p(path), size)

    def rename(self, src, dst):
        os.rename(self.p(src), self.p(dst))

    def link(self, src, dst):
        os.link(self.p(src), self.p(dst), follow_symlinks=False)

    def symlink(self, target, path):
        os.symlink(target, self.p(path))

    def unlink(self, path):
        os.unlink(self.p(path))

    def mkdir(self, path, mode):
        os.mkdir(self.p(path), mode)

    def rmdir(self, path):
        os.rmdir(self.p(path))

    def chmod(self, path, mode):
        os.chmod(self.p(path), mode)

    def read(self, path, offset, length):
        fd = os.open(self.p(path), os.O_RDONLY)
        try:
            return digest(os.pread(fd, length, offset))
        finally:
            os.close(fd)

    def stat(self, path):
        return attrs(os.lstat(self.p(path)))

    def open(self, slot, path, flags):
        if slot in self.fds:
            os.close(self.fds.pop(slot))
        self.fds[slot] = os.open(self.p(path), flags, 0o644)

    def fwrite(self, slot, offset, spec):
        fd = self.fd(slot)
        return os.pwrite(fd, payload(spec), offset), attrs(os.fstat(fd))

    def fread(self, slot, offset, length):
        return digest(os.pread(self.fd(slot), length, offset))

    def ftruncate(self, slot, size):
        fd = self.fd(slot)
        os.ftruncate(fd, size)
        return attrs(os.fstat(fd))

    def close(self, slot):
        os.close(self.fd(slot))
        del self.fds[slot]


def apply(side: Side, op: tuple):
    try:
        out = getattr(side, op[0])(*op[1:])
    except OSError as exc:
        return err_name(exc)
    return "ok" if out is None else out


class Rig:
    def __init__(self, base, mount):
        self.base = base
        self.mount = mount
        self.runs: list[str] = []

    def sides(self, name: str) -> tuple[Side, Side]:
        self.runs.append(name)
        roots = [self.base / side / name for side in PAIR]
        for root in roots:
            root.mkdir()
        return tuple(Side(str(root)) for root in roots)

    def trees(self, name: str) -> tuple[dict, dict]:
        return tuple(tree_of(str(self.base / side / name)) for side in PAIR)

    def remount_and_compare(self) -> None:
        """Stop the mount, check the volume's metadata, mount again, compare every run."""
        assert self.mount.stop() == 0
        assert "Traceback" not in self.mount.log(), self.mount.log()
        tree = Tree(self.base / "data" / "meta.db")
        try:
            assert check_tree(tree) == []
        finally:
            tree.close()
        self.mount.start()
        for name in self.runs:
            mount, plain = self.trees(name)
            assert mount == plain, f"{name} after remount"


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    base = tmp_path_factory.mktemp("random")
    (base / PAIR[1]).mkdir()
    m = RazorMount(base / "data", base / PAIR[0]).start()
    try:
        yield Rig(base, m)
    finally:
        if m.proc is not None:
            m.stop()


def run_lockstep(rig: Rig, name: str, ops: list[tuple]) -> None:
    mount, plain = rig.sides(name)
    ops = PRELUDE + ops
    done = []
    try:
        for op in ops:
            got, want = apply(mount, op), apply(plain, op)
            done.append(op)
            assert got == want, (f"step {len(done)} {op!r}: mount {got!r}, plain {want!r}\n"
                                 "steps so far:\n" + "\n".join(map(repr, done)))
    finally:
        mount.close_all()
        plain.close_all()
    got, want = rig.trees(name)
    assert got == want, "trees differ after:\n" + "\n".join(map(repr, ops))


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_seeded_sequences(rig, seed):
    rnd = random.Random(seed)
    run_lockstep(rig, f"seed{seed}", [random_op(rnd) for _ in range(300)])
    rig.remount_and_compare()


def test_hypothesis_sequences(rig):
    count = iter(range(10**6))

    @settings(max_examples=25, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.randoms(use_true_random=False), st.integers(1, 60))
    def sequence(rnd, n):
        run_lockstep(rig, f"hypo{next(count)}", [random_op(rnd) for _ in range(n)])

    sequence()
    rig.remount_and_compare()
