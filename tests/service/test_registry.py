"""The registry: tenants, users, app tokens, verification and its cache, and that the rows
travel to the bucket and come back with ``restore``."""

import time

import pytest
from argon2 import PasswordHasher, profiles

from razordav.core import errors
from razordav.core.check import check_tree
from razordav.core.journal import restore
from razordav.core.tree import Tree
from razordav.core.volume import Volume
from razordav.service import Principal
from razordav.service.registry import MAX_PASSWORD, Registry, Tenant, Token, User
from razordav.store import open_store


class CountingHasher(PasswordHasher):
    """argon2id with the cheapest parameters, counting the real verifications it does."""

    def __init__(self):
        p = profiles.CHEAPEST
        super().__init__(time_cost=p.time_cost, memory_cost=p.memory_cost,
                         parallelism=p.parallelism, hash_len=p.hash_len, salt_len=p.salt_len)
        self.verified = []
        self.hashed = 0

    def hash(self, password, **kw):
        self.hashed += 1
        return super().hash(password, **kw)

    def verify(self, hash, password):
        self.verified.append(hash)
        return super().verify(hash, password)


@pytest.fixture
def tree(tmp_path):
    t = Tree(tmp_path / "meta.db")
    yield t
    assert check_tree(t) == []
    t.close()


@pytest.fixture
def reg(tree):
    return Registry(tree, CountingHasher())


@pytest.fixture
def acme(reg):
    reg.add_tenant("acme")
    reg.add_user("alice", "acme", "writer", "correct horse")
    return reg


# -- tenants --

def test_tenants_add_list_get_del(reg):
    t = reg.add_tenant("acme", quota_bytes=10 << 30, max_files=1000)
    assert t == Tenant("acme", 10 << 30, 1000, t.created)
    assert abs(t.created - time.time()) < 60
    reg.add_tenant("beta")
    assert [x.name for x in reg.tenants()] == ["acme", "beta"]
    assert reg.tenant("beta") == Tenant("beta", None, None, reg.tenant("beta").created)
    assert reg.set_tenant_limits("beta", quota_bytes=5).quota_bytes == 5
    assert reg.del_tenant("beta") == []
    assert [x.name for x in reg.tenants()] == ["acme"]
    with pytest.raises(errors.NotFound):
        reg.tenant("beta")
    with pytest.raises(errors.NotFound):
        reg.del_tenant("beta")
    with pytest.raises(errors.NotFound):
        reg.set_tenant_limits("beta", 1, 1)


def test_tenant_duplicates_and_bad_input(reg):
    reg.add_tenant("acme")
    with pytest.raises(errors.Exists, match="exists already"):
        reg.add_tenant("acme")
    for bad in ("", "Acme", "a/b", "..", "-x", "a" * 64, "a b", "é"):
        with pytest.raises(errors.InvalidArgument):
            reg.add_tenant(bad)
    for quota, files in ((-1, None), (None, -1), ("10G", None), (1.5, None), (True, None)):
        with pytest.raises(errors.InvalidArgument):
            reg.add_tenant("other", quota_bytes=quota, max_files=files)
    assert [t.name for t in reg.tenants()] == ["acme"]


# -- users --

def test_users_add_list_get_del(acme):
    reg = acme
    reg.add_tenant("beta")
    reg.add_user("bob@example.org", "beta", "reader", "pw")
    reg.add_user("carol.x_y-z", "acme", "admin", "pw")
    assert [u.name for u in reg.users()] == ["alice", "bob@example.org", "carol.x_y-z"]
    assert [u.name for u in reg.users("acme")] == ["alice", "carol.x_y-z"]
    assert reg.users("nobody") == []
    alice = reg.user("alice")
    assert alice == User("alice", "acme", "writer", alice.created)
    assert reg.set_role("alice", "reader").role == "reader"
    reg.del_user("alice")
    with pytest.raises(errors.NotFound):
        reg.user("alice")
    with pytest.raises(errors.NotFound):
        reg.del_user("alice")
    with pytest.raises(errors.NotFound):
        reg.set_password("alice", "x")
    with pytest.raises(errors.NotFound):
        reg.set_role("alice", "writer")


def test_user_duplicates_and_bad_input(acme):
    reg = acme
    with pytest.raises(errors.Exists, match="exists already"):
        reg.add_user("alice", "acme", "reader", "other")
    for bad in ("", "a:b", "a b", ".hidden", "-opt", "x" * 65, "é", "a/b", "a\0b", None):
        with pytest.raises(errors.InvalidArgument):
            reg.add_user(bad, "acme", "reader", "pw")
    for role in ("", "root", "Admin", None):
        with pytest.raises(errors.InvalidArgument):
            reg.add_user("bob", "acme", role, "pw")
    for password in ("", None, "x" * (MAX_PASSWORD + 1), "bad \ud800 surrogate"):
        with pytest.raises(errors.InvalidArgument):
            reg.add_user("bob", "acme", "reader", password)
    hashed = reg.hasher.hashed
    with pytest.raises(errors.NotFound, match="no tenant"):
        reg.add_user("bob", "nope", "reader", "pw")
    with pytest.raises(errors.Exists):
        reg.add_user("alice", "acme", "reader", "pw")
    assert reg.hasher.hashed == hashed     # refused before spending a hash
    with pytest.raises(errors.InvalidArgument):
        reg.set_role("alice", "root")
    with pytest.raises(errors.InvalidArgument):
        reg.set_password("alice", "")
    assert [u.name for u in reg.users()] == ["alice"]
    assert reg.verify_password("alice", "correct horse") is not None


# -- verification --

def test_verify_right_wrong_unknown(acme):
    reg = acme
    u = reg.verify_password("alice", "correct horse")
    assert u == reg.user("alice")
    assert reg.principal("alice", "correct horse") == Principal("alice", "acme", "writer",
                                                                "basic")
    assert reg.verify_password("alice", "correct horsE") is None
    assert reg.verify_password("alice", "") is None
    assert reg.verify_password("Alice", "correct horse") is None   # names are exact
    assert reg.verify_password("mallory", "correct horse") is None
    assert reg.verify_password("bad:name", "x") is None
    assert reg.verify_password("alice", "x" * (MAX_PASSWORD + 1)) is None
    assert reg.verify_password(None, "x") is None
    assert reg.verify_password("alice", b"correct horse") is None
    assert reg.principal("alice", "nope") is None


def test_unknown_user_costs_an_argon2_verification_like_a_wrong_password(acme):
    """Same work for an unknown user and a wrong password: one argon2 verify each, with
    the same parameters, so neither answers faster."""
    reg = acme
    h = reg.hasher
    h.verified.clear()
    assert reg.verify_password("alice", "wrong") is None
    assert reg.verify_password("mallory", "wrong") is None
    assert reg.verify_password("not a name", "wrong") is None
    assert reg.verify_password("alice", "\ud800") is None     # not encodable: still verified
    assert len(h.verified) == 4
    real, dummy, dummy2, real2 = h.verified
    assert dummy == dummy2 != real == real2
    params = lambda s: s.split("$")[1:4]   # noqa: E731  argon2id, version, m/t/p
    assert params(real) == params(dummy)


def test_successes_are_cached_failures_are_not(acme):
    reg = acme
    h = reg.hasher
    h.verified.clear()
    for _ in range(3):
        assert reg.verify_password("alice", "correct horse")
    assert len(h.verified) == 1
    for _ in range(3):
        assert reg.verify_password("alice", "wrong") is None
    assert len(h.verified) == 4
    assert reg.cache_size() == 1


def test_verify_from_many_threads_while_the_password_changes(acme):
    """The gate verifies on cheroot's worker threads; a change lands between requests."""
    import threading
    reg = acme
    results, start = [], threading.Barrier(8)

    def worker():
        start.wait()
        for _ in range(30):
            results.append(reg.verify_password("alice", "correct horse") is not None)
            results.append(reg.verify_password("alice", "wrong") is None)
    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 480 and all(results)
    reg.set_password("alice", "changed")
    assert reg.verify_password("alice", "correct horse") is None


def test_cache_expires(tree):
    reg = Registry(tree, CountingHasher(), cache_ttl=0.05)
    reg.add_tenant("acme")
    reg.add_user("alice", "acme", "writer", "pw")
    assert reg.verify_password("alice", "pw")
    time.sleep(0.1)
    assert reg.verify_password("alice", "pw")
    assert len(reg.hasher.verified) == 2


def test_set_password_invalidates(acme):
    reg = acme
    assert reg.verify_password("alice", "correct horse")
    reg.set_password("alice", "battery staple")
    assert reg.verify_password("alice", "correct horse") is None
    assert reg.verify_password("alice", "battery staple")


def test_del_user_and_del_tenant_invalidate(acme):
    reg = acme
    reg.add_user("bob", "acme", "reader", "pw")
    reg.add_tenant("beta")
    reg.add_user("carol", "beta", "writer", "pw")
    _, token = reg.create_token("bob")
    assert reg.verify_password("alice", "correct horse")
    assert reg.verify_password("bob", token)
    assert reg.verify_password("carol", "pw")
    reg.del_user("alice")
    assert reg.verify_password("alice", "correct horse") is None
    assert sorted(reg.del_tenant("acme")) == ["bob"]
    assert reg.verify_password("bob", "pw") is None
    assert reg.verify_password("bob", token) is None
    assert reg.users() == [reg.user("carol")]
    assert reg.verify_password("carol", "pw")   # another tenant is untouched


def test_user_of_a_tenant_removed_elsewhere_fails(acme, tree):
    """A tenant row gone without its users (another process, an old restore): its users
    no longer log in, cached or not."""
    reg = acme
    assert reg.verify_password("alice", "correct horse")
    with tree.db.write() as c:
        c.execute("DELETE FROM tenants WHERE name = 'acme'")
    assert reg.verify_password("alice", "correct horse") is None


def test_changes_by_another_process_apply_at_the_next_request(acme, tmp_path):
    """The admin CLI opens its own Tree on the same file; the gateway's cached success
    still checks the row, so a new password applies at once, not after the TTL."""
    gateway = acme
    assert gateway.verify_password("alice", "correct horse")
    other_tree = Tree(tmp_path / "meta.db")
    try:
        other = Registry(other_tree, CountingHasher())
        other.set_password("alice", "new one")
        _, token = other.create_token("alice")
        assert gateway.verify_password("alice", "correct horse") is None
        assert gateway.verify_password("alice", "new one")
        assert gateway.verify_password("alice", token)
        other.set_role("alice", "reader")
        assert gateway.principal("alice", "new one").role == "reader"
        other.del_user("alice")
        assert gateway.verify_password("alice", "new one") is None
        assert gateway.verify_password("alice", token) is None
    finally:
        other_tree.close()


# -- app tokens --

def test_tokens_create_verify_list_revoke(acme):
    reg = acme
    token_id, token = reg.create_token("alice", label="laptop rclone")
    assert token.startswith(f"rzt_{token_id}_") and len(token) == 4 + 16 + 1 + 43
    assert reg.principal("alice", token) == Principal("alice", "acme", "writer", "token", "files")
    assert reg.verify_password("alice", "correct horse")     # the password still works
    assert reg.tokens("alice") == [Token(token_id, "alice", "laptop rclone",
                                         reg.tokens("alice")[0].created)]
    id2, token2 = reg.create_token("alice")
    assert id2 != token_id and token2 != token
    assert {t.id for t in reg.tokens("alice")} == {token_id, id2}
    reg.revoke_token(token_id)
    assert reg.verify_password("alice", token) is None
    assert reg.verify_password("alice", token2)
    assert [t.id for t in reg.tokens("alice")] == [id2]
    with pytest.raises(errors.NotFound):
        reg.revoke_token(token_id)


def test_token_misuse_fails(acme):
    reg = acme
    reg.add_user("bob", "acme", "admin", "pw")
    token_id, token = reg.create_token("alice")
    assert reg.verify_password("bob", token) is None            # another user's token
    secret = token[len("rzt_") + 16 + 1:]
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert reg.verify_password("alice", tampered) is None
    assert reg.verify_password("alice", f"rzt_{'0' * 16}_{secret}") is None
    assert reg.verify_password("alice", secret) is None          # the secret alone
    assert reg.verify_password("alice", token + "x") is None
    hashed = reg.hasher.hashed
    with pytest.raises(errors.NotFound):
        reg.create_token("nobody")
    assert reg.hasher.hashed == hashed     # refused before spending a hash
    with pytest.raises(errors.NotFound):
        reg.tokens("nobody")
    for label in ("x" * 101, "a\nb", "\x7f"):
        with pytest.raises(errors.InvalidArgument):
            reg.create_token("alice", label)
    assert [t.id for t in reg.tokens("alice")] == [token_id]


def test_token_revoked_by_another_registry_fails_at_once(acme, tmp_path):
    gateway = acme
    token_id, token = gateway.create_token("alice")
    assert gateway.verify_password("alice", token)
    other_tree = Tree(tmp_path / "meta.db")
    try:
        Registry(other_tree, CountingHasher()).revoke_token(token_id)
    finally:
        other_tree.close()
    assert gateway.verify_password("alice", token) is None


def test_no_secret_is_stored_in_clear(acme, tree, tmp_path):
    reg = acme
    _, token = reg.create_token("alice")
    reg.set_password("alice", "Zebra-Password-42")
    tree.db.sync()                      # everything on disk: the database and its log
    blob = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("meta.db"))
    for secret in ("Zebra-Password-42", "correct horse", token, token[21:]):
        assert secret.encode() not in blob
    assert b"$argon2id$" in blob


# -- to the bucket and back --

def _shipped(vol, timeout=20.0):
    deadline = time.monotonic() + timeout
    while vol.shipper.pending():
        assert time.monotonic() < deadline, "journal not shipped"
        time.sleep(0.05)


def test_registry_rows_are_journaled_and_restored(tmp_path):
    store_url = (tmp_path / "store").as_uri()
    vol = Volume.open(tmp_path / "data", store_url, block_size=64 * 1024,
                      journal_interval=0.1)
    try:
        # The admin CLI writes through its own Tree while the gateway runs.
        cli_tree = Tree(tmp_path / "data" / "meta.db")
        cli = Registry(cli_tree, CountingHasher())
        cli.add_tenant("acme", quota_bytes=1 << 20, max_files=10)
        cli.add_user("alice", "acme", "writer", "pw")
        cli.add_user("gone", "acme", "reader", "pw")
        cli.del_user("gone")
        token_id, token = cli.create_token("alice", "phone")
        cli_tree.close()
        vol.write_file("/f", b"data")
        vol.cache.wait_uploaded(10)   # a small block alone waits for a pack otherwise
        _shipped(vol)
    finally:
        vol.close()
    db = tmp_path / "restored" / "meta.db"
    db.parent.mkdir()
    assert restore(open_store(store_url), db) > 0
    tree = Tree(db)
    try:
        reg = Registry(tree, CountingHasher())
        assert reg.tenant("acme").quota_bytes == 1 << 20
        assert [u.name for u in reg.users()] == ["alice"]
        assert reg.verify_password("alice", "pw") == reg.user("alice")
        assert reg.principal("alice", token).via == "token"
        assert [t.id for t in reg.tokens("alice")] == [token_id]
        assert check_tree(tree) == []
    finally:
        tree.close()


def test_registry_rows_restored_from_a_snapshot(tmp_path):
    store_url = (tmp_path / "store").as_uri()
    vol = Volume.open(tmp_path / "data", store_url, block_size=64 * 1024, journal_interval=0)
    try:
        reg = Registry(vol.tree, CountingHasher())
        reg.add_tenant("acme")
        reg.add_user("alice", "acme", "admin", "pw")
        vol.collect_garbage()
        assert vol.shipper.snapshot() > 0
        reg.set_password("alice", "later")        # a segment after the snapshot
    finally:
        vol.close()
    db = tmp_path / "restored.db"
    restore(open_store(store_url), db)
    tree = Tree(db)
    try:
        reg = Registry(tree, CountingHasher())
        assert reg.verify_password("alice", "pw") is None
        assert reg.principal("alice", "later") == Principal("alice", "acme", "admin", "basic")
    finally:
        tree.close()
