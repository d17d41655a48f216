"""Run ``razordav serve`` as a real process on 127.0.0.1 for the tests, stopped by PID.

``RazorServer(data_dir, store=None, endpoint=None).start()`` waits until the gateway
answers; ``stop()`` sends SIGTERM (a clean shutdown) and ``kill()`` SIGKILL (a crash).
Both keep the data dir, so ``start()`` again is a restart on the same port.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import ssl
import urllib.error
import urllib.request

HOST = "127.0.0.1"
_unverified = ssl._create_unverified_context()   # readiness only; tests verify the cert


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class RazorServer:
    def __init__(self, data_dir, store: str | None = None, endpoint: str | None = None,
                 extra: list[str] | None = None, env: dict | None = None,
                 tls: tuple[str, str] | None = None):
        self.data_dir = str(data_dir)
        self.store = store
        self.endpoint = endpoint
        self.extra = list(extra or [])
        self.env = env or {}
        self.port = free_port()
        self.tls = tls
        self.url = f"{'https' if tls else 'http'}://{HOST}:{self.port}"
        self.proc: subprocess.Popen | None = None
        self._log_start = 0
        self.log_path = os.path.join(os.path.dirname(self.data_dir.rstrip("/")) or ".",
                                     f"razordav-{self.port}.log")

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "razordav.cli", "serve", "--host", HOST,
                "--port", str(self.port), "--data-dir", self.data_dir]
        if self.store:
            argv += ["--store", self.store]
        if self.endpoint:
            argv += ["--s3-endpoint", self.endpoint]
        if self.tls:
            argv += ["--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1])]
        return argv + self.extra

    def start(self, timeout: float = 30) -> "RazorServer":
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
               **self.env}
        with open(self.log_path, "ab") as log:
            self._log_start = log.tell()
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"razordav exited with {self.proc.returncode}:\n{self.log()}")
            if self.ready():
                return self
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"razordav was not up within {timeout}s:\n{self.log()}")

    def ready(self) -> bool:
        try:
            urllib.request.urlopen(urllib.request.Request(self.url + "/", method="OPTIONS"),
                                   timeout=2, context=_unverified).close()
            return True
        except urllib.error.HTTPError:
            return True          # it answers (401 with --auth)
        except OSError:
            return False

    def log(self, since_start: bool = False) -> str:
        """The process's output (of this start only, with ``since_start``)."""
        try:
            with open(self.log_path, errors="replace") as f:
                if since_start:
                    f.seek(self._log_start)
                return f.read()[-8000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM and wait; returns the exit status."""
        proc, self.proc = self.proc, None
        if proc is None:
            return 0
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise

    def kill(self) -> None:
        """SIGKILL: a crash, nothing gets to clean up."""
        proc, self.proc = self.proc, None
        if proc is not None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        if self.proc is not None:
            self.stop()
