"""``razordav tenant|user|token`` against a real data dir and store: the main paths as real
processes, the battery of bad inputs in this process (same ``main``, faster).

Until cli.py wires the commands in, they run as ``python -m razordav.service.admin_cli``;
once it does, as ``python -m razordav.cli``.
"""

import io
import subprocess
import sys
from pathlib import Path

import pytest
from argon2 import PasswordHasher, profiles

import razordav.cli
from razordav.service import admin_cli
from razordav.core.tree import Tree
from razordav.core.volume import Volume
from razordav.service.registry import Registry
from razordav.service.tenants import tenant_data_dir, tenant_store_url
from razordav.store import open_store

ENTRY = ("razordav.cli" if "admin_cli" in Path(razordav.cli.__file__).read_text()
         else "razordav.service.admin_cli")


@pytest.fixture
def run(tmp_path):
    """run(*argv, stdin=None) -> CompletedProcess, against one data dir and store."""
    data, store = tmp_path / "data", (tmp_path / "store").as_uri()

    def _run(*argv, stdin=None):
        return subprocess.run(
            [sys.executable, "-m", ENTRY, *argv, "--data-dir", str(data), "--store", store,
             "-q"], input=stdin, capture_output=True, text=True, timeout=60)
    _run.data, _run.store = data, store
    return _run


@pytest.fixture
def inproc(run, capsys, monkeypatch):
    """Like ``run``, but calling the entry point's ``main`` in this process."""
    main = razordav.cli.main if ENTRY == "razordav.cli" else admin_cli.main

    def _run(*argv, stdin=None):
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin or ""))
        rc = main([*argv, "--data-dir", str(run.data), "--store", run.store, "-q"])
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(argv, rc, out, err)
    _run.data, _run.store = run.data, run.store
    return _run


def ok(p):
    assert p.returncode == 0, p.stderr
    return p.stdout


def fails(p, message):
    """Exit status 1 and one clear line on stderr, no traceback."""
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert lines[-1].startswith("razordav: error: ") and message in lines[-1], p.stderr
    return lines[-1]


def registry(data: Path):
    tree = Tree(data / "meta.db")
    return tree, Registry(tree, PasswordHasher.from_parameters(profiles.CHEAPEST))


def test_tenants_users_tokens_end_to_end(run, inproc):
    """On an empty data dir: the volume is created, then the registry filled and read."""
    assert "added" in ok(run("tenant", "add", "acme", "--quota", "10G", "--max-files", "500"))
    assert (run.data / "meta.db").exists()
    added = run("user", "add", "alice", "--tenant", "acme", "--role", "writer",
                "--password-stdin", stdin="s3cret pass\r\n")
    assert "s3cret" not in ok(added) + added.stderr
    token = ok(run("token", "create", "alice", "--label", "laptop")).strip()
    assert token.startswith("rzt_")
    listing = ok(run("tenant", "list")).splitlines()
    assert listing[0].split()[:4] == ["TENANT", "QUOTA", "MAX", "FILES"]
    assert listing[1].split()[:4] == ["acme", "10G", "500", "1"]
    assert ok(inproc("user", "list", "--tenant", "acme")).splitlines()[1].split()[:4] == \
        ["alice", "acme", "writer", "1"]
    tokens = ok(inproc("token", "list", "alice")).splitlines()
    assert len(tokens) == 2 and tokens[1].split()[-1] == "laptop"
    token_id = tokens[1].split()[0]
    assert token_id in token and token not in "".join(tokens)

    tree, reg = registry(run.data)
    try:
        assert reg.tenant("acme").quota_bytes == 10 << 30
        assert reg.verify_password("alice", "s3cret pass").role == "writer"
        assert reg.verify_password("alice", token)
        ok(run("token", "revoke", token_id))
        assert reg.verify_password("alice", token) is None      # at once, no TTL wait
        ok(run("user", "passwd", "alice", "--password-stdin", stdin="new pass\n"))
        assert reg.verify_password("alice", "s3cret pass") is None
        assert reg.verify_password("alice", "new pass")
        ok(run("user", "del", "alice"))
        assert reg.verify_password("alice", "new pass") is None
        assert reg.users() == []
    finally:
        tree.close()
    blob = b"".join(p.read_bytes() for p in run.data.iterdir() if p.name.startswith("meta.db"))
    for secret in (b"s3cret pass", b"new pass", token.encode()):
        assert secret not in blob


def test_clear_one_line_errors(inproc):
    run = inproc
    ok(run("tenant", "add", "acme"))
    fails(run("tenant", "add", "acme"), "tenant 'acme' exists already")
    fails(run("tenant", "add", "Not-Valid"), "invalid tenant name")
    fails(run("tenant", "add", "big", "--quota", "10X"), "invalid size")
    fails(run("tenant", "add", "neg", "--max-files", "-1"), "max_files")
    ok(run("user", "add", "alice", "--tenant", "acme", "--role", "reader", "--password-stdin",
           stdin="pw"))
    add = ("user", "add", "bob", "--tenant", "acme", "--role", "reader")
    fails(run(*add), "--password-stdin")
    fails(run(*add, "--password-stdin", stdin=""), "password on standard input is empty")
    fails(run(*add, "--password-stdin", stdin="\n"), "password on standard input is empty")
    fails(run(*add, "--password-stdin", stdin="two\nlines\n"), "must be one line")
    fails(run("user", "add", "bob", "--tenant", "acme", "--role", "root", "--password-stdin",
              stdin="pw"), "invalid role 'root'")
    fails(run("user", "add", "bob", "--tenant", "nope", "--role", "reader",
              "--password-stdin", stdin="pw"), "no tenant 'nope'")
    fails(run("user", "add", "bad:name", "--tenant", "acme", "--role", "reader",
              "--password-stdin", stdin="pw"), "invalid user name")
    fails(run("user", "add", "alice", "--tenant", "acme", "--role", "reader",
              "--password-stdin", stdin="pw"), "user 'alice' exists already")
    fails(run("user", "passwd", "nobody", "--password-stdin", stdin="pw"), "no user 'nobody'")
    fails(run("user", "del", "nobody"), "no user 'nobody'")
    fails(run("user", "list", "--tenant", "nope"), "no tenant 'nope'")
    fails(run("token", "create", "nobody"), "no user 'nobody'")
    fails(run("token", "revoke", "0123456789abcdef"), "no token")
    fails(run("token", "list", "nobody"), "no user 'nobody'")
    fails(run("tenant", "del", "nope", "--yes"), "no tenant 'nope'")
    tree, reg = registry(run.data)
    try:
        assert [u.name for u in reg.users()] == ["alice"]
        assert [t.name for t in reg.tenants()] == ["acme"]
    finally:
        tree.close()


def _component(run, name):
    """The tenant's directory and prefix component (<name>.<hex>)."""
    tree, reg = registry(run.data)
    try:
        return reg.tenant_dir(name)
    finally:
        tree.close()


def _tenant_volume(run, name, files):
    component = _component(run, name)
    vol = Volume.open(tenant_data_dir(run.data, component),
                      tenant_store_url(run.store, component),
                      block_size=64 * 1024, journal_interval=0)
    for path, data in files.items():
        vol.write_file(path, data)
    return vol


def test_tenant_del_removes_users_data_dir_and_objects(run, inproc):
    ok(run("tenant", "add", "acme"))
    ok(inproc("tenant", "add", "acme2"))
    for name in ("acme", "acme2"):
        ok(inproc("user", "add", f"u-{name}", "--tenant", name, "--role", "writer",
                  "--password-stdin", stdin="pw"))
    ok(inproc("token", "create", "u-acme"))
    for name in ("acme", "acme2"):
        _tenant_volume(run, name, {"/a": b"a" * 100_000, "/b": b"b"}).close()
    acme = _component(run, "acme")
    assert acme.startswith("acme.")
    acme_store = open_store(tenant_store_url(run.store, acme))
    assert len(list(acme_store.list(""))) >= 4         # volume.json, lease, blocks, journal
    # a tenant's volume is fenced like the main one: its writer marked its lease term
    assert [o.key for o in acme_store.list("meta/term/")] == ["meta/term/" + "1".zfill(16)]
    main_objects = {o.key for o in open_store(run.store).list("") if
                    not o.key.startswith("tenants/")}

    refusal = fails(inproc("tenant", "del", "acme"), "--yes")
    assert "1 users" in refusal and tenant_store_url(run.store, acme) in refusal
    assert tenant_data_dir(run.data, acme).exists()

    # An open volume (a running gateway) holds the tenant's lease: refused, nothing lost.
    vol = _tenant_volume(run, "acme", {})
    try:
        fails(inproc("tenant", "del", "acme", "--yes"), "open in a running gateway")
    finally:
        vol.close()
    tree, reg = registry(run.data)
    try:
        assert reg.tenant("acme")
    finally:
        tree.close()

    assert "deleted (1 user(s)" in ok(run("tenant", "del", "acme", "--yes"))
    assert not tenant_data_dir(run.data, acme).exists()
    assert not Path(run.store[len("file://"):], "tenants", acme).exists()
    tree, reg = registry(run.data)
    try:
        assert [t.name for t in reg.tenants()] == ["acme2"]
        assert [u.name for u in reg.users()] == ["u-acme2"]
        assert reg.verify_password("u-acme2", "pw")
    finally:
        tree.close()
    # The other tenant, whose name starts the same, and the main volume are untouched.
    vol = _tenant_volume(run, "acme2", {})
    try:
        assert vol.read_file("/a") == b"a" * 100_000
    finally:
        vol.close()
    assert main_objects <= {o.key for o in open_store(run.store).list("")}
    fails(inproc("tenant", "del", "acme", "--yes"), "no tenant 'acme'")


def test_tenant_del_cleans_up_leftovers_of_an_unregistered_tenant(inproc):
    run = inproc
    """A tenant deleted from the registry whose data stayed (an interrupted delete):
    ``tenant del`` finishes the job."""
    ok(run("tenant", "add", "acme"))
    _tenant_volume(run, "acme", {"/x": b"x"}).close()
    acme = _component(run, "acme")
    tree, reg = registry(run.data)
    try:
        reg.del_tenant("acme")
    finally:
        tree.close()
    assert "0 user(s)" in ok(run("tenant", "del", "acme", "--yes"))
    assert not tenant_data_dir(run.data, acme).exists()
    assert not Path(run.store[len("file://"):], "tenants", acme).exists()
