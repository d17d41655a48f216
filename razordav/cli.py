"""The ``razordav`` command: argument parsing, logging set-up, and the subcommands.

User errors (bad options, unreachable store, port in use) end with one line on stderr
and exit status 2 (usage) or 1 (runtime); bugs keep their traceback.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import socket
import sys

from . import __version__, config
from .core import errors
from .store import StoreError

log = logging.getLogger("razordav")


class UserError(Exception):
    """An error the user can fix; printed as one line."""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML config file (flags override it)")
    p.add_argument("--data-dir", help="metadata and cache directory (default ./razordav-data)")
    p.add_argument("--store", help="object store URL: file:///path or s3://bucket/prefix "
                                   "(default: a store inside the data dir)")
    p.add_argument("--s3-endpoint", help="S3 endpoint URL (default $AWS_ENDPOINT_URL)")
    p.add_argument("--cache-size", help="local block cache size, e.g. 10G")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    p.add_argument("-q", "--quiet", action="count", default=0, help="less log output")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="razordav", description="WebDAV gateway to S3.")
    parser.add_argument("--version", action="version", version=f"razordav {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the volume over WebDAV")
    _common(serve)
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8080; 0: any)")
    serve.add_argument("--insecure", action="store_true", default=None,
                       help="allow listening on a non-loopback address without authentication")
    return parser


def _setup_logging(opts: config.Options, verbose: int, quiet: int) -> None:
    levels = ["debug", "info", "warning", "error"]
    idx = levels.index(opts.log_level.lower()) - verbose + quiet
    level = levels[max(0, min(idx, len(levels) - 1))].upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if level != "DEBUG":
        for noisy in ("botocore", "boto3", "urllib3", "wsgidav", "sqlitedict", "s3transfer"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


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


def open_volume(opts: config.Options):
    from .core.volume import Volume
    try:
        return Volume.open(opts.data_dir, opts.store, endpoint=opts.s3_endpoint,
                           block_size=opts.block_size, cache_size=opts.cache_size,
                           dirty_limit=opts.dirty_limit, uploaders=opts.uploaders)
    except StoreError as exc:
        raise UserError(f"object store: {exc}") from None
    except errors.VolumeError as exc:
        raise UserError(str(exc)) from None


def cmd_serve(opts: config.Options) -> int:
    from .dav.app import Server, close_app, make_app
    if not _is_loopback(opts.host) and not opts.insecure:
        raise UserError(f"refusing to listen on {opts.host} without authentication; "
                        "use --insecure to allow it")
    vol = open_volume(opts)
    app = None
    try:
        app = make_app(vol)
        try:
            server = Server(app, opts.host, opts.port, threads=opts.threads)
        except OSError as exc:
            raise UserError(f"cannot listen on {opts.host}:{opts.port}: {exc.strerror}") from None
        log.info("razordav %s serving %s on http://%s:%d/ (data dir %s)", __version__,
                 vol.store.url, server.host, server.port, vol.data_dir)
        print(f"razordav: listening on http://{server.host}:{server.port}/", flush=True)
        server.serve_forever()
    finally:
        if app is not None:
            close_app(app)
        queued = vol.cache.queue_length()
        vol.close()
    log.info("stopped; %s", "no uploads pending" if not queued else
             f"{queued} blocks still queued for upload, they go on at the next start")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    flags = {k: v for k, v in vars(args).items()
             if k not in ("command", "config", "verbose", "quiet")}
    try:
        opts = config.load(args.config, flags)
    except config.ConfigError as exc:
        parser.error(str(exc))
    _setup_logging(opts, args.verbose, args.quiet)
    _pin_malloc_threshold()
    try:
        return {"serve": cmd_serve}[args.command](opts)
    except UserError as exc:
        print(f"razordav: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
