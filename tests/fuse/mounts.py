"""Run ``razordav mount --foreground`` (optionally with ``serve --mount``) as a real process
for the tests, stopped by PID.

``RazorMount(data_dir, mountpoint).start()`` waits until the mount is live; ``stop()`` sends
SIGTERM (clean unmount, buffers committed) and ``kill()`` SIGKILL, then lazily unmounts the
dead mount so the next test finds an empty directory. With ``dav=True`` the process is
``razordav serve --mount`` and ``.url`` is its WebDAV address.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
from razor import HOST, free_port  # noqa: E402


def is_mounted(path: str) -> bool:
    path = os.path.abspath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def force_unmount(path: str) -> None:
    if is_mounted(path):
        subprocess.run(["fusermount3", "-u", "-z", path], capture_output=True)
        if is_mounted(path):
            subprocess.run(["umount", "-l", path], capture_output=True)


class RazorMount:
    def __init__(self, data_dir, mountpoint, store: str | None = None,
                 endpoint: str | None = None, options: list[str] | None = None,
                 dav: bool = False, extra: list[str] | None = None):
        self.data_dir = str(data_dir)
        self.mountpoint = os.path.abspath(str(mountpoint))
        self.store, self.endpoint = store, endpoint
        self.options = list(options or [])
        self.extra = list(extra or [])
        self.dav = dav
        self.port = free_port() if dav else None
        self.url = f"http://{HOST}:{self.port}" if dav else None
        self.proc: subprocess.Popen | None = None
        self._log_start = 0
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

    def start(self, timeout: float = 30) -> "RazorMount":
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
        with open(self.log_path, "ab") as log:
            self._log_start = log.tell()
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"razordav exited with {self.proc.returncode}:\n{self.log()}")
            out = self.log(since_start=True)
            if "mounted on" in out and (not self.dav or "listening on" in out):
                return self
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"razordav did not mount within {timeout}s:\n{self.log()}")

    def log(self, since_start: bool = False) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                if since_start:
                    f.seek(self._log_start)
                return f.read()[-8000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM and wait; returns the exit status. The mount is gone afterwards."""
        proc, self.proc = self.proc, None
        if proc is None:
            return 0
        proc.send_signal(signal.SIGTERM)
        try:
            status = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            force_unmount(self.mountpoint)
            raise
        if is_mounted(self.mountpoint):
            force_unmount(self.mountpoint)
            raise AssertionError(f"{self.mountpoint} still mounted after SIGTERM")
        return status

    def kill(self) -> None:
        """SIGKILL: a crash. The dead mount is detached so the directory can be reused."""
        proc, self.proc = self.proc, None
        if proc is not None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        force_unmount(self.mountpoint)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        if self.proc is not None:
            self.stop()
