"""Run ``razordav mount --foreground`` (optionally with ``serve --mount``) as a real process
for the tests, stopped by PID.

``RazorMount(data_dir, mountpoint).start()`` waits until the mount is live; ``stop()`` sends
SIGTERM (clean unmount, buffers committed) and ``kill()`` SIGKILL, then lazily unmounts the
dead mount so the next test finds an empty directory. With ``dav=True`` the process is
``razordav serve --mount`` and ``.url`` is its WebDAV address.
"""

from __future__ import annotations

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
from razor import HOST, RazorServer  # noqa: E402


def is_mounted(path: str) -> bool:
    path = os.path.abspath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def force_unmount(path: str) -> None:
    if is_mounted(path):
        subprocess.run(["fusermount3", "-u", "-z", path], capture_output=True)
        if is_mounted(path):
            subprocess.run(["umount", "-l", path], capture_output=True)


class RazorMount(RazorServer):
    def __init__(self, data_dir, mountpoint, store: str | None = None,
                 endpoint: str | None = None, options: list[str] | None = None,
                 dav: bool = False, extra: list[str] | None = None):
        super().__init__(data_dir, store, endpoint, extra)
        self.mountpoint = os.path.abspath(str(mountpoint))
        self.options = list(options or [])
        self.dav = dav
        if not dav:
            self.port = self.url = None
        self.log_path = os.path.join(os.path.dirname(self.data_dir.rstrip("/")),
                                     f"mount-{os.path.basename(self.mountpoint)}.log")
        os.makedirs(self.mountpoint, exist_ok=True)

    def argv(self) -> list[str]:
        if self.dav:
            argv = [sys.executable, "-m", "razordav.cli", "serve", "--host", HOST,
                    "--port", str(self.port), "--mount", self.mountpoint]
        else:
            argv = [sys.executable, "-m", "razordav.cli", "mount", "--foreground",
                    self.mountpoint]
        argv += ["--data-dir", self.data_dir]
        if self.store:
            argv += ["--store", self.store]
        if self.endpoint:
            argv += ["--s3-endpoint", self.endpoint]
        for opt in self.options:
            argv += ["-o", opt]
        return argv + self.extra

    def ready(self) -> bool:
        out = self.log(since_start=True)
        return "mounted on" in out and (not self.dav or "listening on" in out)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM and wait; returns the exit status. The mount is gone afterwards."""
        try:
            status = super().stop(timeout)
        finally:
            if is_mounted(self.mountpoint):
                force_unmount(self.mountpoint)
                raise AssertionError(f"{self.mountpoint} still mounted after stopping")
        return status

    def kill(self) -> None:
        """SIGKILL: a crash. The dead mount is detached so the directory can be reused."""
        super().kill()
        force_unmount(self.mountpoint)
