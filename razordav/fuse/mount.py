"""Mounting a volume: the checks before, the session loop, the clean unmount after.
``razordav mount`` and ``razordav serve --mount`` (cli.py) call ``mount``.

``mount`` blocks until the file system is unmounted: by SIGTERM/SIGINT (when it runs in the main
thread), by ``fusermount3 -u MOUNTPOINT``, or by ``MountHandle.stop()`` from any thread. It then
commits every write buffer and returns; the caller closes the volume. One mount per process
(pyfuse3 keeps its session in module state).

User errors (no FUSE, a busy or missing mount point) raise ``MountError`` with one line.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import signal
import stat
import threading
from typing import Callable, Iterable

log = logging.getLogger(__name__)

READ_AHEAD_KB = 4096   # the kernel's default (128 KiB) would cut big reads into small requests


class MountError(Exception):
    """FUSE cannot be used here, or the mount point cannot take a mount; one line for users."""


def check_fuse_available(mountpoint: str | os.PathLike) -> None:
    """Raise ``MountError`` unless a FUSE mount on ``mountpoint`` can be attempted: /dev/fuse
    usable (or fusermount3 for a non-root user), the binding installed, and the mount point an
    existing directory with nothing mounted on it."""
    mountpoint = os.fspath(mountpoint)
    _check_device()
    try:
        import pyfuse3  # noqa: F401
    except ImportError as exc:
        raise MountError(f"the FUSE binding is missing ({exc}); run: pip install pyfuse3 "
                         "(it builds against libfuse3-dev and pkg-config)") from None
    try:
        st = os.stat(mountpoint)
    except FileNotFoundError:
        raise MountError(f"mount point {mountpoint} does not exist") from None
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            raise MountError(f"mount point {mountpoint} is a dead FUSE mount (transport endpoint "
                             f"is not connected); run: fusermount3 -u {mountpoint}") from None
        raise MountError(f"mount point {mountpoint}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise MountError(f"mount point {mountpoint} is not a directory")
    if os.path.ismount(mountpoint):
        raise MountError(f"mount point {mountpoint} is busy: something is mounted there already")


def _check_device() -> None:
    try:
        dev = os.stat("/dev/fuse")
    except FileNotFoundError:
        raise MountError("FUSE is not available: /dev/fuse is missing (load the fuse module; "
                         "a container needs --device /dev/fuse)") from None
    if not stat.S_ISCHR(dev.st_mode) or (os.major(dev.st_rdev), os.minor(dev.st_rdev)) != (10, 229):
        raise MountError("FUSE is not available: /dev/fuse is not the FUSE device (10:229)")
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
        return
    except PermissionError:
        if os.geteuid() == 0:
            raise MountError("FUSE is not permitted: cannot open /dev/fuse (a container needs "
                             "--device /dev/fuse and --cap-add SYS_ADMIN)") from None
    except OSError as exc:
        raise MountError(f"FUSE is not available: /dev/fuse: {exc.strerror}") from None
    if shutil.which("fusermount3") is None:   # how libfuse mounts for a non-root user
        raise MountError("FUSE is not permitted for this user and fusermount3 is missing "
                         "(apt-get install fuse3)")


class MountHandle:
    """Given to ``mount``'s ``ready`` callback: ``stop()`` unmounts, from any thread."""

    def __init__(self, mountpoint: str, token):
        self.mountpoint = mountpoint
        self._token = token

    def stop(self) -> None:
        import pyfuse3
        import trio
        try:
            trio.from_thread.run_sync(pyfuse3.terminate, trio_token=self._token)
        except trio.RunFinishedError:
            pass   # already stopped


def _options(fuse_options: Iterable[str]) -> set[str]:
    import pyfuse3
    options = set(pyfuse3.default_options)   # default_permissions: the kernel checks modes
    options |= {"fsname=razordav", "subtype=razordav"}
    for opt in fuse_options:
        for part in str(opt).split(","):
            part = part.strip()
            if part and part != "-o":
                options.add(part)
    return options


def mount(volume, mountpoint: str | os.PathLike, *, foreground: bool = True,
          fuse_options: Iterable[str] = (), ready: Callable[[MountHandle], None] | None = None
          ) -> None:
    """Mount the open ``volume`` on ``mountpoint`` and serve it until unmounted.

    ``fuse_options`` are libfuse/mount options ("allow_other", "ro", "a,b"); default_permissions
    is always on. ``ready(handle)`` is called once the mount is live, from the serving thread:
    it must return quickly and must not touch the mount itself. Every write buffer is
    committed before this returns; the volume stays open. ``foreground=False`` is refused:
    the volume's threads are running, so this process cannot fork into the background.
    """
    if not foreground:
        raise MountError("mounting in the background is not supported; run in the foreground "
                         "(under systemd, or with &)")
    mountpoint = os.path.abspath(os.fspath(mountpoint))
    check_fuse_available(mountpoint)
    import pyfuse3
    import trio

    from .ops import RazorOps
    ops = RazorOps(volume)
    try:
        pyfuse3.init(ops, mountpoint, _options(fuse_options))
    except RuntimeError as exc:
        ops.shutdown()
        raise MountError(f"cannot mount {mountpoint}: {exc} (see the libfuse message above)") \
            from None
    try:
        trio.run(_serve, mountpoint, ready)
    finally:
        pyfuse3.close(unmount=True)
        ops.shutdown()
    log.info("unmounted %s; all writes committed", mountpoint)


class MountThread:
    """A mount served by a thread of its own (``razordav serve --mount``: the WebDAV face
    keeps the main thread). Returns once the mount is live, or raises ``MountError``;
    ``stop()`` unmounts and waits, every buffer committed."""

    def __init__(self, volume, mountpoint: str, fuse_options: Iterable[str] = ()):
        self.mountpoint = os.path.abspath(os.fspath(mountpoint))
        self.handle: MountHandle | None = None
        self.error: BaseException | None = None
        ready = threading.Event()

        def on_ready(handle):
            self.handle = handle
            ready.set()

        def run():
            try:
                mount(volume, self.mountpoint, fuse_options=fuse_options, ready=on_ready)
            except BaseException as exc:
                self.error = exc
                if not isinstance(exc, MountError):
                    log.exception("the FUSE mount failed")
            finally:
                ready.set()

        self.thread = threading.Thread(target=run, name="rzd-mount", daemon=True)
        self.thread.start()
        ready.wait()
        if self.handle is None:
            raise self.error if isinstance(self.error, MountError) else \
                MountError(f"the FUSE mount failed: {self.error}")

    def stop(self) -> None:
        if self.thread.is_alive():
            self.handle.stop()
        self.thread.join()


async def _serve(mountpoint: str, ready) -> None:
    import pyfuse3
    import trio
    async with trio.open_nursery() as nursery:
        if threading.current_thread() is threading.main_thread():
            nursery.start_soon(_stop_on_signal)
        nursery.start_soon(_tune_read_ahead, mountpoint)
        if ready is not None:
            ready(MountHandle(mountpoint, trio.lowlevel.current_trio_token()))
        await pyfuse3.main(min_tasks=2, max_tasks=24)
        nursery.cancel_scope.cancel()


async def _stop_on_signal() -> None:
    import pyfuse3
    import trio
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            log.info("%s: unmounting", signal.Signals(signum).name)
            pyfuse3.terminate()
            return


async def _tune_read_ahead(mountpoint: str) -> None:
    """Let the kernel read ahead in 1 MiB requests. Its window comes from the mount's bdi,
    which libfuse lowers to 128 KiB while the mount starts, so this waits until the mount is
    up. The device number comes from /proc/self/mountinfo: a stat of the mount point would
    be a request to this very loop. Needs root; without it the default stays."""
    import trio
    for _ in range(100):
        await trio.sleep(0.05)
        dev = _mounted_device(mountpoint)
        if dev is not None:
            break
    else:
        return
    await trio.sleep(0.1)   # the INIT reply sets the window: come after it
    try:
        with open(f"/sys/class/bdi/{dev}/read_ahead_kb", "w") as f:
            f.write(str(READ_AHEAD_KB))
    except OSError as exc:
        log.debug("read-ahead left at the kernel default: %s", exc)


def _mounted_device(mountpoint: str) -> str | None:
    """"major:minor" of the razordav FUSE mount on ``mountpoint``, if there is one."""
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                sep = fields.index("-")
                point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[4])
                if point == mountpoint and fields[sep + 1].startswith("fuse"):
                    return fields[2]
    except (OSError, ValueError, IndexError):
        pass
    return None
