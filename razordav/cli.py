"""The ``razordav`` command: argument parsing, logging set-up, and the subcommands.

User errors (bad options, unreachable store, port in use) end with one line on stderr
and exit status 2 (usage) or 1 (runtime); bugs keep their traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import logging
import os
import socket
import sys

from . import __version__, config
from .cmdline import common_options, setup_logging
from .core import errors
from .store import StoreError

log = logging.getLogger("razordav")


class UserError(Exception):
    """An error the user can fix; printed as one line."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="razordav", description="WebDAV gateway to S3.")
    parser.add_argument("--version", action="version", version=f"razordav {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the volume over WebDAV")
    common_options(serve)
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8080; 0: any)")
    serve.add_argument("--insecure", action="store_true", default=None,
                       help="allow listening on a non-loopback address with --auth none")
    serve.add_argument("--auth", help="none (default), basic, jwt or basic,jwt")
    serve.add_argument("--tls-cert", metavar="FILE", help="PEM certificate: serve https")
    serve.add_argument("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")
    serve.add_argument("--jwks-url", help="JWKS URL of the identity provider (auth jwt)")
    serve.add_argument("--oidc-issuer", help="OIDC issuer URL; JWKS found by discovery")
    serve.add_argument("--jwt-issuer", help="required iss claim of Bearer tokens")
    serve.add_argument("--jwt-audience", help="required aud claim of Bearer tokens")
    serve.add_argument("--jwt-user-claim", help="claim naming the user (default sub)")
    serve.add_argument("--jwt-tenant-claim", help="claim naming the tenant (default tenant)")
    serve.add_argument("--takeover", action="store_true",
                       help="take the volume over from another gateway whose lease is live")
    serve.add_argument("--mount", metavar="MOUNTPOINT",
                       help="also mount the volume there with FUSE, in this process")
    serve.add_argument("-o", dest="fuse_options", action="append", metavar="OPT",
                       help="FUSE mount option for --mount, e.g. -o allow_other")

    mnt = sub.add_parser("mount", help="mount the volume as a local file system (FUSE)")
    common_options(mnt)
    mnt.add_argument("mountpoint", help="an empty directory to mount on")
    mnt.add_argument("-f", "--foreground", action="store_true",
                     help="stay in the foreground (default: return once mounted)")
    mnt.add_argument("-o", dest="fuse_options", action="append", metavar="OPT",
                     help="FUSE mount option, e.g. -o allow_other (repeatable)")
    mnt.add_argument("--takeover", action="store_true",
                     help="take the volume over from another gateway whose lease is live")
    mnt.add_argument("--tenant", help="mount this tenant's volume (with its quota)")

    restore = sub.add_parser("restore", help="rebuild a data dir from the bucket alone")
    common_options(restore)

    stats = sub.add_parser("stats", help="show a gateway's figures (queue, cache, errors)")
    common_options(stats)
    stats.add_argument("--json", action="store_true", help="print the raw JSON")

    fsck = sub.add_parser("fsck", help="verify the volume against its store")
    common_options(fsck)
    fsck.add_argument("--full", action="store_true",
                      help="download every block and verify its checksum")
    fsck.add_argument("--repair", action="store_true",
                      help="fix reference counts, re-upload from cache, delete orphans")
    fsck.add_argument("--takeover", action="store_true",
                      help="run even though another gateway holds the lease")

    from .service import admin_cli
    admin_cli.add_subcommands(sub)
    return parser


def _pin_malloc_threshold() -> None:
    """Keep glibc serving block-sized buffers with mmap, so they go back to the OS when
    freed. By default glibc raises its mmap threshold after the first 4 MiB free, and the
    heap then grows with every thread's blocks (server RSS over a 1 GiB PUT + GET: about
    195 MB without this, 127 MB with it)."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(a[4][0]).is_loopback
                       for a in socket.getaddrinfo(host, None))
        except OSError:
            return False


def open_volume(opts: config.Options, **kw):
    from .core.volume import Volume
    try:
        return Volume.open(opts.data_dir, opts.store, endpoint=opts.s3_endpoint,
                           block_size=opts.block_size, cache_size=opts.cache_size,
                           dirty_limit=opts.dirty_limit, uploaders=opts.uploaders,
                           lease_ttl=opts.lease_ttl, upload_delay=opts.upload_delay,
                           upload_delay_max=opts.upload_delay_max,
                           pack_threshold=opts.pack_threshold, pack_size=opts.pack_size,
                           repack_below=opts.repack_below, repack_share=opts.repack_share,
                           **{"journal_interval": opts.journal_interval, **kw})
    except StoreError as exc:
        raise UserError(f"object store: {exc}") from None
    except errors.VolumeError as exc:
        raise UserError(str(exc)) from None


def cmd_serve(opts: config.Options, args) -> int:
    from .dav.app import close_app
    from .web.server import Server
    loopback = _is_loopback(opts.host)
    if not loopback and opts.auth == "none" and not opts.insecure:
        raise UserError(f"refusing to listen on {opts.host} without authentication; "
                        "use --auth basic (or jwt), or --insecure to allow it")
    tls = _tls_files(opts)
    if args.mount:
        _check_mountpoint(args.mount)
    vol = open_volume(opts, takeover=args.takeover)
    app = service = mounted = None
    try:
        app, service = _build_app(opts, vol)
        try:
            server = Server(app, opts.host, opts.port, threads=opts.threads, tls=tls,
                            header_timeout=opts.header_timeout,
                            max_connections=opts.max_connections,
                            per_address=opts.max_connections_per_address)
        except OSError as exc:
            raise UserError(f"cannot listen on {opts.host}:{opts.port}: {exc.strerror}") from None
        if "basic" in opts.auth and not tls and not loopback:
            log.warning("Basic auth without TLS on %s: passwords cross the network in clear; "
                        "use --tls-cert and --tls-key", opts.host)
        if args.mount:
            from .fuse import MountError, MountThread
            try:
                mounted = MountThread(vol, args.mount, args.fuse_options or ())
            except MountError as exc:
                raise UserError(str(exc)) from None
            print(f"razordav: mounted on {mounted.mountpoint}", flush=True)
        url = f"{server.scheme}://{server.host}:{server.port}/"
        log.info("razordav %s serving %s on %s (data dir %s, auth %s)", __version__,
                 vol.store.url, url, vol.data_dir, opts.auth)
        print(f"razordav: listening on {url}", flush=True)
        server.serve_forever()
    finally:
        if mounted is not None:
            mounted.stop()
        if service is not None:
            service.close()
        elif app is not None:
            close_app(app)
        queued = vol.cache.queue_length()
        vol.close()
    log.info("stopped; %s", "no uploads pending" if not queued else
             f"{queued} blocks still queued for upload, they go on at the next start")
    return 0


def _tls_files(opts: config.Options) -> tuple[str, str] | None:
    if not opts.tls_cert:
        return None
    import ssl
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(opts.tls_cert,
                                                                            opts.tls_key)
    except FileNotFoundError as exc:
        raise UserError(f"TLS: {exc.filename}: no such file") from None
    except (ssl.SSLError, OSError) as exc:
        raise UserError(f"TLS: cannot use {opts.tls_cert} with {opts.tls_key}: {exc}") from None
    return opts.tls_cert, opts.tls_key


def _build_app(opts: config.Options, vol):
    """The WSGI app: with auth none, the main volume's WebDAV app alone (as it always was);
    otherwise the gate over tenants, the REST API and metrics."""
    from .dav.app import close_app, make_app
    if opts.auth == "none":
        return make_app(vol, lock_timeout_max=opts.lock_timeout_max), None
    from .service.api import make_api
    from .service.gate import Gate, Service
    from .service.metrics import Metrics
    from .service.registry import Registry

    def open_tenant(data_dir, store_url, cache_size):
        return open_volume(dataclasses.replace(opts, data_dir=str(data_dir), store=store_url,
                                               cache_size=cache_size, dirty_limit=None))

    service = Service(vol, Registry(vol.tree), open_volume=open_tenant,
                      make_dav_app=lambda v, key: make_app(
                          v, trusted_user_key=key, lock_timeout_max=opts.lock_timeout_max),
                      close_app=close_app)
    jwt = None
    if "jwt" in opts.auth:
        from .service.jwt_auth import JwtAuthenticator
        jwt = JwtAuthenticator(jwks_url=opts.jwks_url, oidc_issuer=opts.oidc_issuer,
                               issuer=opts.jwt_issuer, audience=opts.jwt_audience,
                               user_claim=opts.jwt_user_claim,
                               tenant_claim=opts.jwt_tenant_claim)
    metrics = Metrics(service)
    gate = Gate(service, basic="basic" in opts.auth, jwt=jwt, api_app=make_api(service),
                metrics_app=metrics.app, metrics_token=opts.metrics_token,
                allowed_origins=opts.cors_origins or ())
    return metrics.middleware(gate), service


def _check_mountpoint(mountpoint: str) -> None:
    try:
        from .fuse import MountError, check_fuse_available
    except ImportError as exc:
        raise UserError(f"FUSE support is not installed ({exc}); "
                        "run: pip install 'razordav[fuse]'") from None
    try:
        check_fuse_available(mountpoint)
    except MountError as exc:
        raise UserError(str(exc)) from None


def cmd_mount(opts: config.Options, args) -> int:
    """Mount and serve until unmounted (SIGTERM, SIGINT or fusermount3 -u). Without
    --foreground the command forks first and returns once the mount is up, or with the
    child's error."""
    _check_mountpoint(args.mountpoint)
    if not args.foreground:
        return _mount_in_background(opts, args)
    return _mount(opts, args, lambda h: print(f"razordav: mounted on {h.mountpoint}",
                                              flush=True))


def _mount(opts: config.Options, args, ready) -> int:
    from .fuse import MountError, mount
    tenant = None
    if args.tenant:
        opts, tenant = _tenant_options(opts, args.tenant)
    vol = open_volume(opts, takeover=args.takeover)
    try:
        if tenant is not None:
            from .service.tenancy import apply_limits
            apply_limits(vol, tenant)
        from .dav.locks import lock_checker, standalone_lock_manager
        # WebDAV locks taken before this mount (they persist) keep its writers out too.
        vol.lock_check = lock_checker(standalone_lock_manager(vol.data_dir,
                                                              opts.lock_timeout_max))
        mount(vol, args.mountpoint, fuse_options=args.fuse_options or (), ready=ready)
    except MountError as exc:
        raise UserError(str(exc)) from None
    finally:
        vol.close()
    return 0


def _tenant_options(opts: config.Options, name: str):
    """The options of a tenant's volume, and its registry row (for its limits), read from
    the registry in the main volume's database (which a running gateway may hold: only
    read here)."""
    from pathlib import Path

    from .core.tree import Tree
    from .core.volume import default_store_url
    from .service.registry import Registry
    from .service.tenancy import Tenancy
    db = Path(opts.data_dir) / "meta.db"
    if not db.exists():
        raise UserError(f"{opts.data_dir} holds no volume, so no tenant {name!r}")
    tree = Tree(db)
    try:
        registry = Registry(tree)
        tenant = registry.tenant(name)
        place = Tenancy(registry, opts.data_dir,
                        opts.store or default_store_url(opts.data_dir)).place(name)
    except errors.NotFound:
        raise UserError(f"no tenant {name!r} (razordav tenant list shows them)") from None
    except errors.FsError as exc:
        raise UserError(str(exc)) from None
    finally:
        tree.close()
    opts = dataclasses.replace(opts, data_dir=str(place.data_dir), store=place.store_url)
    return opts, tenant


def _mount_in_background(opts: config.Options, args) -> int:
    """Fork before any thread exists; the child reports "ok" or its error through a pipe
    and logs to <data dir>/mount.log."""
    from pathlib import Path
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_end)
        with os.fdopen(read_end) as pipe:
            answer = pipe.read()
        if answer.startswith("ok"):
            print(f"razordav: mounted on {os.path.abspath(args.mountpoint)} (pid {pid}; "
                  f"log in {Path(opts.data_dir) / 'mount.log'})")
            return 0
        os.waitpid(pid, 0)
        raise UserError(answer.strip() or "the mount process failed; see its log")
    os.close(read_end)
    os.setsid()
    Path(opts.data_dir).mkdir(parents=True, exist_ok=True)
    logfile = os.open(Path(opts.data_dir) / "mount.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                      0o644)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    for fd in (1, 2):
        os.dup2(logfile, fd)
    pipe = os.fdopen(write_end, "w")

    def ready(_handle):
        pipe.write("ok\n")
        pipe.close()
    status = 1
    try:
        status = _mount(opts, args, ready)
    except UserError as exc:
        if not pipe.closed:
            pipe.write(str(exc))
        print(f"razordav: error: {exc}", file=sys.stderr)
    except BaseException:
        log.exception("the mount process failed")
    finally:
        if not pipe.closed:
            pipe.close()
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(status)


def cmd_restore(opts: config.Options, args) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from .core import journal
    from .service import registry  # noqa: F401  (declares its tables before the replay)
    from .store import open_store
    data_dir = Path(opts.data_dir)
    if (data_dir / "meta.db").exists():
        raise UserError(f"{data_dir} already holds a volume; restore into a new --data-dir")
    if not opts.store:
        raise UserError("restore needs --store: the bucket to restore from")
    try:
        store = open_store(opts.store, endpoint=opts.s3_endpoint)
        store.get("volume.json")
    except StoreError as exc:
        raise UserError(f"object store: {exc}") from None
    data_dir.mkdir(parents=True, exist_ok=True)
    bar = tqdm(desc="journal segments", unit="seg", disable=None)

    def progress(done, total):
        bar.total = total
        bar.n = done
        bar.refresh()
    try:
        seq = journal.restore(store, data_dir / "meta.db", progress)
        tenants = _restore_tenants(opts, store, data_dir, progress)
    except (errors.FsError, StoreError) as exc:
        (data_dir / "meta.db").unlink(missing_ok=True)
        raise UserError(f"restore failed: {exc}") from None
    finally:
        bar.close()
    if tenants:
        print(f"razordav: restored tenants: {', '.join(tenants)}")
    print(f"razordav: restored metadata up to change {seq} into {data_dir}; blocks are fetched "
          f"from {store.url} on demand. Start it with: razordav serve --data-dir {data_dir} "
          f"--store {opts.store} (add --takeover if the old gateway's lease is still live)")
    return 0


def _restore_tenants(opts: config.Options, store, data_dir, progress) -> list[str]:
    """Each tenant named in the restored registry is a volume of its own: restore it too."""
    from .core.tree import Tree
    from .service.registry import Registry
    from .service.tenancy import Tenancy
    tree = Tree(data_dir / "meta.db")
    try:
        return Tenancy(Registry(tree), data_dir, store.url).restore_all(
            progress, endpoint=opts.s3_endpoint)
    finally:
        tree.close()


def cmd_stats(opts: config.Options, args) -> int:
    import json
    import os
    import time
    from pathlib import Path
    path = Path(opts.data_dir) / "stats.json"
    try:
        figures = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"no figures in {opts.data_dir}: no gateway has run there") from None
    if args.json:
        print(json.dumps(figures, indent=1))
        return 0
    try:
        os.kill(figures["pid"], 0)
        state = "running"
    except (OSError, KeyError):
        state = "not running"
    age = time.time() - figures.get("time", 0)
    ratio = figures.get("compression_ratio")
    hit = figures.get("hit_rate")
    rows = [
        ("gateway", f"{state} (figures {age:.0f} s old)"),
        ("files and directories", figures.get("inodes")),
        ("logical bytes", figures.get("logical_bytes")),
        ("stored bytes", figures.get("block_stored_bytes")),
        ("compression ratio", f"{ratio:.1%}" if ratio is not None else "-"),
        ("cache bytes / limit", f"{figures.get('cache_bytes')} / {figures.get('cache_limit')}"),
        ("cache hit rate", f"{hit:.1%}" if hit is not None else "-"),
        ("upload queue (blocks)", figures.get("upload_queue")),
        ("dirty bytes / limit", f"{figures.get('dirty_bytes')} / {figures.get('dirty_limit')}"),
        ("journal rows not shipped", figures.get("journal_pending")),
        ("last S3 error", figures.get("last_store_error") or figures.get("journal_error") or "-"),
    ]
    for label, value in rows:
        print(f"{label:26} {value}")
    return 0


def cmd_fsck(opts: config.Options, args) -> int:
    from tqdm import tqdm

    from .core.fsck import fsck
    vol = open_volume(opts, journal_interval=0, takeover=args.takeover)
    try:
        report = fsck(vol, full=args.full, repair=args.repair,
                      progress=lambda **kw: tqdm(disable=None, **kw))
    finally:
        vol.close()
    for line in report.problems:
        print(f"problem: {line}")
    for line in report.repaired:
        print(f"repaired: {line}")
    print(f"razordav fsck: {report.checked_blocks} blocks checked, {len(report.problems)} "
          f"problems, {len(report.repaired)} repairs")
    return 0 if report.clean else 1


def _private_files(data_dir: str) -> int:
    """Whatever the umask, everything this process creates is for its user alone (the data
    dir holds password hashes, file contents and names): 0700 directories, 0600 files.
    A data dir made by an older razordav is closed up too (its top level; files keep
    their modes until rewritten, and cannot be reached through the closed directory).
    Returns the umask it replaced."""
    old = os.umask(0o077)
    try:
        os.chmod(data_dir, 0o700)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot make %s private: %s", data_dir, exc.strerror)
    return old


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    options = {f.name for f in dataclasses.fields(config.Options)}
    flags = {k: v for k, v in vars(args).items() if k in options}   # the rest: the command's
    try:
        opts = config.load(args.config, flags)
    except config.ConfigError as exc:
        parser.error(str(exc))
    setup_logging(opts, args.verbose, args.quiet)
    _pin_malloc_threshold()
    umask = _private_files(opts.data_dir)
    try:
        return _run(args, opts)
    finally:
        os.umask(umask)   # main() may run inside another program (the tests do)


def _run(args, opts: config.Options) -> int:
    if args.command == "serve" and opts.auth != "none":
        from pathlib import Path

        from .service.metrics import log_audit_to
        log_audit_to(Path(opts.data_dir) / "audit.log")   # created at the first line
    try:
        from .service.admin_cli import COMMANDS as admin_commands
        commands = {"serve": cmd_serve, "mount": cmd_mount, "restore": cmd_restore,
                    "stats": cmd_stats, "fsck": cmd_fsck, **admin_commands}
        return commands[args.command](opts, args)
    except UserError as exc:
        print(f"razordav: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
