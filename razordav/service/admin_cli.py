"""The operator's commands for the registry and WebDAV locks: ``razordav
tenant|user|token|lock ...``.

Owns: argument parsing for these commands, reading passwords from standard input, and
refusing to delete a tenant whose volume a running gateway holds. The rows and the rules
about names, roles and secrets are registry.py's; where a tenant's data lives and
deleting it, tenancy.py's.

Which database: the MAIN volume's ``<data_dir>/meta.db``. Operators run these commands
while ``razordav serve`` runs, so the tree is opened directly (SQLite WAL lets two processes
share it; the running gateway's journal shipper ships the new rows and its registry sees
them at the next request) rather than through ``Volume.open``, which would take the
volume's lease. When the data dir holds no volume yet, one is created first (and closed),
so the volume descriptor in the store and the data dir agree from the start. Rows written
while no gateway runs are shipped when one next starts.

Errors the operator can fix end as one line, ``razordav: error: ...``, and exit status 1;
bugs keep their traceback. Wiring into cli.py: ``add_subcommands(sub)`` in
``build_parser``, ``COMMANDS`` in the command table; ``python -m razordav.service.admin_cli``
runs them alone.
"""

from __future__ import annotations

import argparse
import functools
import getpass
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .. import config
from ..cmdline import common_options, setup_logging
from ..core import errors
from ..core.tree import Tree
from ..core.volume import default_store_url
from ..dav.locks import LOCK_DB, SqliteLockStorage
from ..store import StoreError, open_store
from .registry import Registry, check_role, check_user_name
from .tenancy import Tenancy
from .tenants import check_tenant_name

# argparse destinations of these commands: none of them is a config option.
FLAGS = frozenset({"admin_action", "name", "tenant", "role", "password_stdin", "quota",
                   "max_files", "yes", "label", "token_id", "scope", "token"})


class AdminError(Exception):
    """An error the operator can fix; printed as one line."""


# -- the parser --

def add_subcommands(subparsers) -> None:
    """Add ``tenant``, ``user`` and ``token`` to ``subparsers``, each leaf parser with
    --data-dir, --store and the other options every command takes."""
    def leaf(group, name, help):
        p = group.add_parser(name, help=help)
        common_options(p)
        return p

    tenant = subparsers.add_parser("tenant", help="add, list or delete tenants")
    ts = tenant.add_subparsers(dest="admin_action", required=True, metavar="ACTION")
    p = leaf(ts, "add", "register a tenant (its volume is made when first used)")
    p.add_argument("name")
    p.add_argument("--quota", metavar="BYTES", help="storage quota, e.g. 10G (default: none)")
    p.add_argument("--max-files", type=int, metavar="N", help="file limit (default: none)")
    leaf(ts, "list", "list tenants")
    p = leaf(ts, "del", "delete a tenant: its users, tokens, data dir and stored objects")
    p.add_argument("name")
    p.add_argument("--yes", action="store_true", help="really delete everything of it")

    user = subparsers.add_parser("user", help="add, change, list or delete users")
    us = user.add_subparsers(dest="admin_action", required=True, metavar="ACTION")
    p = leaf(us, "add", "register a user of a tenant")
    p.add_argument("name")
    p.add_argument("--tenant", required=True)
    p.add_argument("--role", required=True, metavar="reader|writer|admin")
    p.add_argument("--password-stdin", action="store_true",
                   help="read the password from standard input (one line)")
    p = leaf(us, "passwd", "set a user's password")
    p.add_argument("name")
    p.add_argument("--password-stdin", action="store_true",
                   help="read the password from standard input (one line)")
    p = leaf(us, "del", "delete a user and its tokens")
    p.add_argument("name")
    p = leaf(us, "list", "list users")
    p.add_argument("--tenant", help="only this tenant's users")

    token = subparsers.add_parser("token", help="create, list or revoke app tokens")
    ks = token.add_subparsers(dest="admin_action", required=True, metavar="ACTION")
    p = leaf(ks, "create", "make an app token for a user (printed once)")
    p.add_argument("name", metavar="USER")
    p.add_argument("--label", default="", help="what the token is for, e.g. 'laptop rclone'")
    p.add_argument("--scope", default="files", choices=("files", "all"),
                   help="files (default): WebDAV and the REST file routes only; all: also "
                        "what the user's role allows (admin API, jobs, metrics)")
    p = leaf(ks, "revoke", "revoke an app token")
    p.add_argument("token_id", metavar="ID")
    p = leaf(ks, "list", "list a user's tokens (never their secrets)")
    p.add_argument("name", metavar="USER")

    lock = subparsers.add_parser("lock", help="list or break WebDAV locks")
    ls = lock.add_subparsers(dest="admin_action", required=True, metavar="ACTION")
    p = leaf(ls, "list", "list the live WebDAV locks of every tenant, or of one")
    p.add_argument("--tenant", help="only this tenant's locks")
    p = leaf(ls, "break", "break a WebDAV lock: its holder loses it at once, running "
                          "gateway or not")
    p.add_argument("token", metavar="TOKEN", help="as listed, e.g. opaquelocktoken:...")
    p.add_argument("--tenant", help="the tenant whose lock it is (default: look in all)")


# -- plumbing --

def _one_line_errors(fn):
    """Turn expected errors into ``razordav: error: ...`` and exit status 1."""
    @functools.wraps(fn)
    def run(opts: config.Options, args) -> int:
        try:
            status = fn(opts, args)
            if args.admin_action in ("add", "del", "passwd", "create", "revoke", "break"):
                _audit(opts, args)
            return status
        except StoreError as exc:
            message = f"object store: {exc}"
        except (AdminError, errors.FsError, config.ConfigError) as exc:
            message = str(exc)
        print(f"razordav: error: {message}", file=sys.stderr)
        return 1
    return run


def _audit(opts: config.Options, args) -> None:
    """One line per change in <data dir>/audit.log (the server's audit trail too), naming
    the operator's login and never a secret."""
    from . import Principal
    from .metrics import audit_line
    target = getattr(args, "name", None) or getattr(args, "token_id", None) or \
        getattr(args, "token", "")
    details = {k: getattr(args, k) for k in ("tenant", "role", "quota", "max_files", "label")
               if getattr(args, k, None) is not None}
    line = audit_line(Principal(getpass.getuser(), "", "admin", "cli"),
                      f"{args.command}.{args.admin_action}", target, **details)
    with open(Path(opts.data_dir) / "audit.log", "a", encoding="utf-8") as f:
        f.write(line + "\n")


@contextmanager
def _registry(opts: config.Options):
    db = Path(opts.data_dir) / "meta.db"
    if not db.exists():
        from ..core.volume import Volume
        Volume.open(opts.data_dir, opts.store, endpoint=opts.s3_endpoint,
                    block_size=opts.block_size, cache_size=opts.cache_size,
                    journal_interval=0, lease_ttl=opts.lease_ttl).close()
    tree = Tree(db)
    try:
        yield Registry(tree)
    finally:
        tree.close()


def _read_password(args) -> str:
    if not args.password_stdin:
        raise AdminError("give the password on standard input with --password-stdin "
                         "(never on the command line, where other users can see it)")
    if sys.stdin is None:
        raise AdminError("no standard input to read the password from")
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Again: "):
            raise AdminError("the two passwords differ")
    else:
        password = sys.stdin.read()
        if password.endswith("\n"):
            password = password[:-1].removesuffix("\r")
        if "\n" in password:
            raise AdminError("the password on standard input must be one line")
    if not password:
        raise AdminError("the password on standard input is empty")
    return password


def _size(n: int | None) -> str:
    """Exact and parseable again: 10G, 1536K, 1000."""
    if n is None:
        return "-"
    unit = ""
    for bigger in "KMGT":
        if n < 1024 or n % 1024:
            break
        n, unit = n // 1024, bigger
    return f"{n}{unit}"


def _when(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(seconds))


def _table(header: tuple, rows: list[tuple]) -> None:
    rows = [tuple(str(v) for v in r) for r in rows]
    widths = [max([len(str(h)), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    for row in [header, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())


# -- tenant --

@_one_line_errors
def cmd_tenant(opts: config.Options, args) -> int:
    return {"add": _tenant_add, "list": _tenant_list, "del": _tenant_del}[args.admin_action](
        opts, args)


def _tenant_add(opts, args) -> int:
    quota = config.parse_size(args.quota) if args.quota is not None else None
    with _registry(opts) as reg:
        t = reg.add_tenant(args.name, quota_bytes=quota, max_files=args.max_files)
    print(f"razordav: tenant {t.name} added (quota {_size(t.quota_bytes)}, "
          f"max files {t.max_files if t.max_files is not None else '-'})")
    return 0


def _tenant_list(opts, args) -> int:
    with _registry(opts) as reg:
        rows = [(t.name, _size(t.quota_bytes), "-" if t.max_files is None else t.max_files,
                 len(reg.users(t.name)), _when(t.created)) for t in reg.tenants()]
    _table(("TENANT", "QUOTA", "MAX FILES", "USERS", "CREATED (UTC)"), rows)
    return 0


def _tenant_del(opts, args) -> int:
    name = check_tenant_name(args.name)
    store = open_store(opts.store or default_store_url(opts.data_dir), endpoint=opts.s3_endpoint)
    try:
        with _registry(opts) as reg:
            registered = name in {t.name for t in reg.tenants()}
            users = reg.users(name)
            # the registered tenant's data, and any left by earlier tenants of that name
            tenancy = Tenancy(reg, opts.data_dir, store.url)
            places = tenancy.places(name)
            if not registered and not any(p.data_dir.exists() or _has_objects(store, p.prefix)
                                          for p in places):
                raise AdminError(f"no tenant {name!r}")
            if not args.yes:
                raise AdminError(
                    f"deleting tenant {name!r} removes its {len(users)} users and their "
                    f"tokens, {', '.join(str(p.data_dir) for p in places)} and every object "
                    f"under {', '.join(p.store_url for p in places)}; run again with --yes "
                    "to do it")
            for place in places:
                _refuse_if_open(place.store_url, opts)
            if registered:
                reg.del_tenant(name)
        deleted = sum(tenancy.delete_data(place, store) for place in places)
    finally:
        store.close()
    print(f"razordav: tenant {name} deleted ({len(users)} user(s), {deleted} object(s))")
    return 0


def _has_objects(store, prefix: str) -> bool:
    return next(iter(store.list(prefix)), None) is not None


def _refuse_if_open(url: str, opts) -> None:
    """A live lease means a running gateway has the tenant's volume open: deleting under it
    would only have it write the data back."""
    from ..core.lease import live_holder
    parts = urlsplit(url)
    if parts.scheme == "file" and not Path(unquote(parts.path)).is_dir():
        return       # never made (and looking must not make it)
    store = open_store(url, endpoint=opts.s3_endpoint)
    try:
        held = live_holder(store)
    finally:
        store.close()
    if held is not None:
        raise AdminError(
            f"the tenant's volume is open in a running gateway ({held.get('host')}, pid "
            f"{held.get('pid')}, lease {held['expires'] - time.time():.0f} s more); stop it "
            "or let it close the volume, then try again")


# -- user --

@_one_line_errors
def cmd_user(opts: config.Options, args) -> int:
    return {"add": _user_add, "passwd": _user_passwd, "del": _user_del,
            "list": _user_list}[args.admin_action](opts, args)


def _user_add(opts, args) -> int:
    with _registry(opts) as reg:
        # clear errors before the password is read
        check_user_name(args.name)
        check_role(args.role)
        reg.tenant(args.tenant)
        if _exists(reg.user, args.name):
            raise AdminError(f"user {args.name!r} exists already")
        u = reg.add_user(args.name, args.tenant, args.role, _read_password(args))
    print(f"razordav: user {u.name} added to tenant {u.tenant} as {u.role}")
    return 0


def _exists(lookup, name: str) -> bool:
    try:
        lookup(name)
        return True
    except errors.NotFound:
        return False


def _user_passwd(opts, args) -> int:
    with _registry(opts) as reg:
        reg.user(args.name)
        reg.set_password(args.name, _read_password(args))
    print(f"razordav: password of {args.name} changed")
    return 0


def _user_del(opts, args) -> int:
    with _registry(opts) as reg:
        reg.del_user(args.name)
    print(f"razordav: user {args.name} deleted")
    return 0


def _user_list(opts, args) -> int:
    with _registry(opts) as reg:
        if args.tenant is not None:
            reg.tenant(args.tenant)
        rows = [(u.name, u.tenant, u.role, len(reg.tokens(u.name)), _when(u.created))
                for u in reg.users(args.tenant)]
    _table(("USER", "TENANT", "ROLE", "TOKENS", "CREATED (UTC)"), rows)
    return 0


# -- token --

@_one_line_errors
def cmd_token(opts: config.Options, args) -> int:
    return {"create": _token_create, "revoke": _token_revoke,
            "list": _token_list}[args.admin_action](opts, args)


def _token_create(opts, args) -> int:
    with _registry(opts) as reg:
        token_id, token = reg.create_token(args.name, args.label, args.scope)
    print(token)   # alone on stdout, so a script can capture it
    print(f"razordav: token {token_id} for {args.name}: use it as the password; it is shown "
          "only this once", file=sys.stderr)
    return 0


def _token_revoke(opts, args) -> int:
    with _registry(opts) as reg:
        reg.revoke_token(args.token_id)
    print(f"razordav: token {args.token_id} revoked")
    return 0


def _token_list(opts, args) -> int:
    with _registry(opts) as reg:
        rows = [(k.id, _when(k.created), k.label) for k in reg.tokens(args.name)]
    _table(("ID", "CREATED (UTC)", "LABEL"), rows)
    return 0


# -- lock --
# A lock table is a SQLite file in its volume's data dir, which a running gateway reads
# through on every lock check (dav/locks.py): a lock broken here is gone for it at once.

@_one_line_errors
def cmd_lock(opts: config.Options, args) -> int:
    return {"list": _lock_list, "break": _lock_break}[args.admin_action](opts, args)


def _lock_tables(opts, tenant: str | None) -> list[tuple[str, Path]]:
    """(tenant, lock table) of one tenant, or of every tenant and of the main volume (a
    gateway without --auth); only tables that exist (a volume never served has none)."""
    data_dir = Path(opts.data_dir)
    if not (data_dir / "meta.db").exists():
        raise AdminError(f"{data_dir} holds no volume")
    tree = Tree(data_dir / "meta.db")
    try:
        tenancy = Tenancy(Registry(tree), data_dir, opts.store or default_store_url(data_dir))
        names = [tenant] if tenant is not None else [t.name for t in tenancy.registry.tenants()]
        tables = [(n, tenancy.place(n).data_dir / LOCK_DB) for n in names]
    finally:
        tree.close()
    if tenant is None:
        tables.insert(0, ("", data_dir / LOCK_DB))
    return [(name, path) for name, path in tables if path.exists()]


@contextmanager
def _lock_storage(path: Path):
    storage = SqliteLockStorage(str(path))
    storage.open()
    try:
        yield storage
    finally:
        storage.close()


def _lock_list(opts, args) -> int:
    rows = []
    for tenant, path in _lock_tables(opts, args.tenant):
        with _lock_storage(path) as storage:
            rows += [(tenant or "-", lock["token"], lock["root"], lock.get("principal") or "-",
                      lock.get("depth", "0"), lock.get("scope", ""),
                      _when(int(lock.get("expire", 0))))
                     for lock in sorted(storage.all_locks(), key=lambda lock: lock["root"])]
    _table(("TENANT", "TOKEN", "PATH", "HOLDER", "DEPTH", "SCOPE", "EXPIRES (UTC)"), rows)
    return 0


def _lock_break(opts, args) -> int:
    for tenant, path in _lock_tables(opts, args.tenant):
        with _lock_storage(path) as storage:
            lock = storage.get(args.token)
            if lock is None:
                continue
            storage.delete(args.token)
        args.tenant = tenant or None     # for the audit line
        print(f"razordav: lock {args.token} on {lock['root']} broken"
              f"{f' (tenant {tenant})' if tenant else ''}; {lock.get('principal') or '-'} "
              "no longer holds it")
        return 0
    where = f" in tenant {args.tenant!r}" if args.tenant else ""
    raise AdminError(f"no live lock {args.token!r}{where} (razordav lock list shows them)")


COMMANDS = {"tenant": cmd_tenant, "user": cmd_user, "token": cmd_token, "lock": cmd_lock}


def main(argv: list[str] | None = None) -> int:
    """These commands alone, as ``razordav`` runs them."""
    parser = argparse.ArgumentParser(prog="razordav")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    flags = {k: v for k, v in vars(args).items()
             if k not in FLAGS and k not in ("command", "config", "verbose", "quiet")}
    try:
        opts = config.load(args.config, flags)
    except config.ConfigError as exc:
        parser.error(str(exc))
    setup_logging(opts, args.verbose, args.quiet)
    return COMMANDS[args.command](opts, args)


if __name__ == "__main__":
    sys.exit(main())
