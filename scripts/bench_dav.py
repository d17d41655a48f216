#!/usr/bin/env python3
"""WebDAV benchmark: razordav beside stock WsgiDAV (FilesystemProvider), both served by
cheroot on 127.0.0.1 and driven the same way over HTTP.

Measures PUT and GET of 1, 10 and 100 MiB, 1 000 small PUTs, PROPFIND depth 1 on 1 000
entries, and the server's peak RSS (VmHWM) over a 1 GiB PUT + GET.

With ``--auth``: what authentication costs. Small GETs per second from 8 clients with no
auth, Basic and JWT (goal: auth costs under 10 %), and 32 clients across 4 tenants doing
mixed GET, PUT and PROPFIND (requests per second, p99, errors).
With ``--small N``: only the 1 000 sequential 4 KiB PUTs over one keep-alive connection,
N runs against each server in turn (a fresh directory per run, servers alternating so load
from elsewhere hits all alike): seconds as min/median/max, the ratios of the medians, and
the load average before and after. The servers: razordav; stock WsgiDAV, which never
fsyncs (its acknowledgement is not durable); stock WsgiDAV made durable
(``wsgidav_durable.py``: the file fsynced, and its directory when new, before the answer);
and razordav with its commits deferred (no fsync; bench only, no such product option) to
show what the fsync costs it.
With ``--ranges``: 1 000 Range GETs of 4 KiB at random offsets of a compressible 100 MiB
file (issue 17), razordav beside stock WsgiDAV and Apache.
Run: python scripts/bench_dav.py [--big-mib 1024] [--store local|seaweedfs] [--auth]
     [--small N] [--listing N ...] [--ranges] [--runs N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from tests.razor import RazorServer, free_port  # noqa: E402

MiB = 1 << 20


class StockWsgiDAV:
    """`wsgidav` with its FilesystemProvider over a directory, anonymous, cheroot. With
    ``durable``: the provider of ``wsgidav_durable.py`` (fsync before each PUT's answer)."""

    def __init__(self, root: str, durable: bool = False):
        self.root = root
        self.durable = durable
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self):
        os.makedirs(self.root, exist_ok=True)
        where, env = ["--root", self.root], None
        if self.durable:
            import json
            import wsgidav_durable
            conf = self.root.rstrip("/") + ".json"
            with open(conf, "w") as f:
                json.dump(wsgidav_durable.config(self.root), f)
            where = ["--config", conf]
            env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.abspath(__file__))}
        self.proc = subprocess.Popen(
            [shutil.which("wsgidav") or "wsgidav", "--host", "127.0.0.1", "--port",
             str(self.port), *where, "--auth", "anonymous", "--server", "cheroot",
             "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, env=env)
        return _wait_up(self, "wsgidav")

    def stop(self):
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(30)


def _wait_up(server, name: str):
    """Return ``server`` once its URL answers anything HTTP (a 403 counts), within 10 s."""
    for _ in range(100):
        try:
            urllib.request.urlopen(server.url + "/", timeout=1).close()
            return server
        except urllib.error.HTTPError:
            return server
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{name} did not start")


class ApacheDAV(StockWsgiDAV):
    """Apache httpd with mod_dav over a directory, on 127.0.0.1, one process per request
    worker (prefork, as Debian runs mod_dav), started by us and stopped by its PID."""

    @staticmethod
    def available() -> bool:
        return bool(shutil.which("apache2") or os.path.exists("/usr/sbin/apache2")) and \
            os.path.exists("/usr/lib/apache2/modules/mod_dav.so")

    def start(self):
        os.makedirs(self.root, exist_ok=True)
        conf = os.path.join(os.path.dirname(self.root.rstrip("/")),
                            f"apache-{self.port}.conf")
        mods = "/usr/lib/apache2/modules"
        with open(conf, "w") as f:
            f.write(f"""ServerRoot /etc/apache2
PidFile {conf}.pid
ErrorLog {conf}.log
Listen 127.0.0.1:{self.port}
LoadModule mpm_prefork_module {mods}/mod_mpm_prefork.so
LoadModule authz_core_module {mods}/mod_authz_core.so
LoadModule dav_module {mods}/mod_dav.so
LoadModule dav_fs_module {mods}/mod_dav_fs.so
LoadModule dav_lock_module {mods}/mod_dav_lock.so
DAVLockDB {conf}.davlock
ServerName localhost
User www-data
Group www-data
DocumentRoot {self.root}
<Directory {self.root}>
  Dav On
  Require all granted
</Directory>
""")
        # Apache refuses to serve as root: its worker runs as www-data, which must own the tree
        subprocess.run(["chown", "-R", "www-data:www-data", self.root,
                        os.path.dirname(conf)], check=True)
        apache = shutil.which("apache2") or "/usr/sbin/apache2"
        env = {**os.environ, "APACHE_RUN_DIR": os.path.dirname(conf)}
        self.proc = subprocess.Popen([apache, "-X", "-f", conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True,
                                     env=env)
        return _wait_up(self, "apache2")


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Body:
    """A request body of ``size`` random bytes made on the fly (requests sees its length,
    so it sends Content-Length, not chunks)."""

    def __init__(self, size: int):
        self.size, self.sent, self.block = size, 0, os.urandom(MiB)

    def __len__(self):
        return self.size - self.sent

    def read(self, n: int = -1) -> bytes:
        n = min(MiB if n is None or n < 0 else n, self.size - self.sent)
        out = bytearray()
        while len(out) < n:
            mib, off = divmod(self.sent, MiB)
            if off == 0 or self._cur is None:
                k = (mib * 7919) % MiB    # every MiB different, so nothing dedups
                self._cur = self.block[k:] + self.block[:k]
            piece = self._cur[off:off + n - len(out)]
            out += piece
            self.sent += len(piece)
        return bytes(out)

    _cur = None


def put(s, url, size):
    s.put(url, data=Body(size)).raise_for_status()


def get(s, url):
    with s.get(url, stream=True) as r:
        r.raise_for_status()
        for _ in r.iter_content(MiB):
            pass


def timed(fn, *args):
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def run(server, big_mib: int) -> dict:
    res = {}
    with requests.Session() as s:
        for mib in (1, 10, 100):
            res[f"PUT {mib} MiB"] = mib / timed(put, s, f"{server.url}/f{mib}.bin", mib * MiB)
            res[f"GET {mib} MiB"] = mib / timed(get, s, f"{server.url}/f{mib}.bin")
        s.request("MKCOL", f"{server.url}/many")
        small = os.urandom(4096)
        t = time.perf_counter()
        for i in range(1000):
            s.put(f"{server.url}/many/f{i:04}.txt", data=small).raise_for_status()
        res["1000 small PUTs"] = 1000 / (time.perf_counter() - t)
        t = time.perf_counter()
        for _ in range(5):
            r = s.request("PROPFIND", f"{server.url}/many/", headers={"Depth": "1"})
            assert r.status_code == 207 and r.text.count("getcontentlength>") >= 2000
        res["PROPFIND depth 1, 1000 entries"] = (time.perf_counter() - t) / 5 * 1000
        put(s, f"{server.url}/big.bin", big_mib * MiB)
        get(s, f"{server.url}/big.bin")
    res[f"peak RSS over {big_mib} MiB PUT+GET"] = peak_rss_mb(server.proc.pid)
    return res


def small_puts(url: str, n: int = 1000, size: int = 4096) -> float:
    """Seconds for ``n`` sequential PUTs of ``size`` random bytes, new files, one keep-alive
    connection (the collection is made first, outside the timing). Every body differs, so
    razordav stores (and fsyncs) a new block for each, as it would for real files."""
    bodies = [os.urandom(size) for _ in range(n + 1)]
    with requests.Session() as s:
        s.request("MKCOL", f"{url}/many").raise_for_status()
        s.put(f"{url}/warm.txt", data=bodies[n]).raise_for_status()
        t = time.perf_counter()
        for i in range(n):
            s.put(f"{url}/many/f{i:04}.txt", data=bodies[i]).raise_for_status()
        return time.perf_counter() - t


class DeferredRazor(RazorServer):
    """``razordav serve`` with every commit deferred (``Database.deferred`` forced on):
    nothing is fsynced before an answer. For this benchmark only, to show what durability
    costs; razordav has no such option."""

    def argv(self) -> list[str]:
        argv = super().argv()
        i = argv.index("-m")
        return argv[:i] + ["-c", "import sys; from razordav.core.db import Database; "
                           "Database.deferred = property(lambda self: True); "
                           "from razordav.cli import main; sys.argv[0] = 'razordav'; "
                           "sys.exit(main())"] + argv[i + 2:]


SMALL_PEERS = {   # name -> (server class and arguments, durable acknowledgement)
    "razordav": (RazorServer, {}, True),
    "WsgiDAV fs": (StockWsgiDAV, {}, False),
    "WsgiDAV fs+fsync": (StockWsgiDAV, {"durable": True}, True),
    "razordav no-fsync": (DeferredRazor, {}, False),
}


def range_gets(url: str, data: bytes, n: int) -> float:
    """Range GETs per second: ``n`` GETs of 4 KiB at random offsets of ``data`` (PUT first),
    one keep-alive connection, each answer checked."""
    import random
    rng = random.Random(3)
    with requests.Session() as s:
        s.put(f"{url}/big.txt", data=data).raise_for_status()
        offsets = [rng.randrange(len(data) - 4096) for _ in range(n + 50)]
        for o in offsets[:50]:                      # warm the connection and the server
            s.get(f"{url}/big.txt", headers={"Range": f"bytes={o}-{o + 4095}"})
        t = time.perf_counter()
        for o in offsets[50:]:
            r = s.get(f"{url}/big.txt", headers={"Range": f"bytes={o}-{o + 4095}"})
            assert r.status_code == 206 and r.content == data[o:o + 4096], r.status_code
        return n / (time.perf_counter() - t)


def ranges_bench(tmp: str, runs: int, mib: int = 100, n: int = 1000) -> None:
    """4 KiB Range GETs at random offsets of a compressible file, razordav beside stock
    WsgiDAV (and Apache when installed), servers alternating; GETs/s min/median/max."""
    import statistics

    from bench_core import text_data   # compressible: zstd stores it at about a fifth
    data = text_data(mib * MiB)
    peers = {"razordav": (RazorServer, {}), "WsgiDAV fs": (StockWsgiDAV, {})}
    if ApacheDAV.available():
        peers["Apache mod_dav"] = (ApacheDAV, {})
    load0 = os.getloadavg()
    rates: dict[str, list[float]] = {name: [] for name in peers}
    for r in range(runs):
        for k, (name, (cls, kw)) in enumerate(peers.items()):
            srv = cls(os.path.join(tmp, f"r{k}-{r}"), **kw).start()
            try:
                rates[name].append(range_gets(srv.url, data, n))
            finally:
                srv.stop()
    print(f"{n} Range GETs of 4 KiB at random offsets of a {mib} MiB text file, one "
          f"keep-alive connection, {runs} runs; load {load0[0]:.2f} -> "
          f"{os.getloadavg()[0]:.2f}, {os.cpu_count()} cores\n")
    print("| server | GETs/s min / median / max |\n|---|---|")
    for name, v in rates.items():
        print(f"| {name} | {min(v):.0f} / {statistics.median(v):.0f} / {max(v):.0f} |")


def small_bench(tmp: str, runs: int) -> None:
    import statistics
    load0 = os.getloadavg()
    times: dict[str, list[float]] = {name: [] for name in SMALL_PEERS}
    for r in range(runs):
        for n, (name, (cls, kw, _durable)) in enumerate(SMALL_PEERS.items()):
            d = os.path.join(tmp, f"peer{n}-{r}")
            srv = cls(d, **kw).start()
            try:
                times[name].append(small_puts(srv.url))
            finally:
                srv.stop()
            shutil.rmtree(d, ignore_errors=True)
    load1 = os.getloadavg()
    print(f"1 000 sequential 4 KiB PUTs, one keep-alive connection, {runs} runs each, "
          f"{os.cpu_count()} cores, same disk ({tmp})\n")
    print(f"{'server':18} {'durable':>7} {'min s':>7} {'median s':>9} {'max s':>7}")
    med = {name: statistics.median(ts) for name, ts in times.items()}
    for name, ts in times.items():
        durable = "yes" if SMALL_PEERS[name][2] else "no"
        print(f"{name:18} {durable:>7} {min(ts):7.3f} {med[name]:9.3f} {max(ts):7.3f}")
    print()
    for ours, theirs in (("razordav", "WsgiDAV fs"), ("razordav", "WsgiDAV fs+fsync"),
                         ("razordav no-fsync", "WsgiDAV fs")):
        print(f"{ours} / {theirs} (medians): {med[ours] / med[theirs]:.2f}x"
              + (" (goal <= 1.0x)" if ours == "razordav" else ""))
    print("load average 1/5/15 min: before " + " ".join(f"{x:.2f}" for x in load0)
          + ", after " + " ".join(f"{x:.2f}" for x in load1))


def _fill_razordav(data_dir: str, n: int) -> None:
    """``n`` empty files in /big of a razordav data dir, made through the core directly."""
    from razordav.core.volume import Volume
    vol = Volume.open(data_dir, journal_interval=0)
    try:
        d = vol.mkdir("/big")
        with vol.tree.db.write():
            for i in range(n):
                vol.tree.mknod(d.ino, f"file-{i:07d}.txt", 0o100644)
    finally:
        vol.close()


def _fill_plain(root: str, n: int) -> None:
    os.makedirs(os.path.join(root, "big"), exist_ok=True)
    for i in range(n):
        open(os.path.join(root, "big", f"file-{i:07d}.txt"), "wb").close()


def _propfind(url: str) -> tuple[float, int]:
    body = b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>'
    t = time.perf_counter()
    with requests.request("PROPFIND", url + "/big/", data=body, headers={"Depth": "1"},
                          stream=True) as r:
        r.raise_for_status()
        size = sum(len(c) for c in r.iter_content(1 << 16))
    return time.perf_counter() - t, size


def listing_bench(tmp: str, sizes: list[int], runs: int) -> None:
    """PROPFIND depth 1 (allprop) of a folder of N empty files: time, bytes, peak RSS."""
    import statistics
    load0 = os.getloadavg()
    rows = []
    peers = ["razordav", "WsgiDAV fs"] + (["Apache"] if ApacheDAV.available() else [])
    for n in sizes:
        for name in peers:
            d = os.path.join(tmp, f"{name.split()[0]}-{n}")
            if name == "razordav":
                _fill_razordav(d, n)
                srv = RazorServer(d)
            else:
                _fill_plain(d, n)
                srv = StockWsgiDAV(d) if name == "WsgiDAV fs" else ApacheDAV(d)
            srv.start()
            try:
                times, size = [], 0
                for _ in range(runs):
                    t, size = _propfind(srv.url)
                    times.append(t)
                rss = peak_rss_mb(srv.proc.pid)
            finally:
                srv.stop()
            shutil.rmtree(d, ignore_errors=True)
            rows.append((n, name, min(times), statistics.median(times), max(times), size, rss))
    load1 = os.getloadavg()
    print(f"PROPFIND depth 1 (allprop) of a folder of N empty files, {runs} runs each, "
          f"{os.cpu_count()} cores" +
          ("" if "Apache" in peers else "; Apache mod_dav is not installed here") + "\n")
    print(f"{'N':>7} {'server':11} {'min s':>7} {'median s':>9} {'max s':>7} "
          f"{'us/entry':>9} {'XML MB':>7} {'peak RSS MB':>12}")
    for n, name, lo, med, hi, size, rss in rows:
        print(f"{n:7} {name:11} {lo:7.2f} {med:9.2f} {hi:7.2f} {med / n * 1e6:9.1f} "
              f"{size / 1e6:7.1f} {rss:12.0f}")
    print("load average 1/5/15 min: before " + " ".join(f"{x:.2f}" for x in load0)
          + ", after " + " ".join(f"{x:.2f}" for x in load1))


def hammer(url: str, clients: int, seconds: float, auth_for, work) -> dict:
    """``clients`` threads, each with its own session and credentials (``auth_for(n)`` ->
    (requests auth, headers)), calling ``work(session, url, n, i)`` until time is up."""
    import threading
    lat, errors, lock = [], [0], threading.Lock()
    stop = time.monotonic() + seconds

    def client(n):
        s = requests.Session()
        s.auth, headers = auth_for(n)
        s.headers.update(headers)
        i = 0
        while time.monotonic() < stop:
            t = time.perf_counter()
            ok = work(s, url, n, i)
            with lock:
                lat.append(time.perf_counter() - t)
                errors[0] += not ok
            i += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lat.sort()
    return {"rps": len(lat) / (time.monotonic() - t0), "p99_ms": lat[int(len(lat) * .99)] * 1000,
            "errors": errors[0], "requests": len(lat)}


def auth_bench(tmp: str, seconds: float) -> None:
    from tests.service.issuer import LocalIssuer
    tenants = [f"t{i}" for i in range(4)]
    users = {f"u{i}": (tenants[i % 4], f"pw-{i}-secret") for i in range(32)}

    def cli(*args, stdin=None):
        subprocess.run([sys.executable, "-m", "razordav.cli", *args, "--data-dir",
                        os.path.join(tmp, "auth")], input=stdin, text=True, check=True,
                       capture_output=True)
    for t in tenants:
        cli("tenant", "add", t)
    for user, (tenant, pw) in users.items():
        cli("user", "add", user, "--tenant", tenant, "--role", "writer", "--password-stdin",
            stdin=pw + "\n")
    small = os.urandom(4096)

    def get_small(s, url, n, i):
        return s.get(url + "/small.bin").status_code == 200

    rows = {}
    with LocalIssuer() as issuer:
        anon = RazorServer(os.path.join(tmp, "anon")).start()
        try:
            requests.put(anon.url + "/small.bin", data=small).raise_for_status()
            rows["none"] = hammer(anon.url, 8, seconds, lambda n: (None, {}), get_small)
        finally:
            anon.stop()
        srv = RazorServer(os.path.join(tmp, "auth"), extra=[
            "--auth", "basic,jwt", "--jwks-url", issuer.jwks_url, "--jwt-issuer",
            issuer.issuer, "--jwt-audience", issuer.audience]).start()
        try:
            for user in ("u0", "u1", "u2", "u3"):
                requests.put(srv.url + "/small.bin", data=small,
                             auth=(user, users[user][1])).raise_for_status()
            rows["basic"] = hammer(srv.url, 8, seconds,
                                   lambda n: ((f"u{n % 4}", users[f"u{n % 4}"][1]), {}),
                                   get_small)
            tokens = {n: issuer.token(claims={"sub": f"jwt{n}", "tenant": tenants[n % 4]})
                      for n in range(32)}
            rows["jwt"] = hammer(srv.url, 8, seconds, lambda n: (
                None, {"Authorization": f"Bearer {tokens[n]}"}), get_small)

            def mixed(s, url, n, i):
                op = i % 4
                if op == 0:
                    r = s.put(f"{url}/c{n}-{i % 20}.bin", data=small)
                elif op == 3:
                    r = s.request("PROPFIND", url + "/", headers={"Depth": "1"})
                else:
                    r = s.get(url + "/small.bin")
                return r.status_code < 500
            t = time.perf_counter()   # first logins: argon2 (slow on purpose), then cached
            for user, (_, pw) in users.items():
                requests.get(srv.url + "/", auth=(user, pw)).raise_for_status()
            first_login_ms = (time.perf_counter() - t) / len(users) * 1000
            tenant_mix = hammer(srv.url, 32, seconds, lambda n: (
                (f"u{n}", users[f"u{n}"][1]), {}), mixed)
        finally:
            srv.stop()
    print(f"small GETs (4 KiB), 8 clients, {seconds:.0f} s each, {os.cpu_count()} cores\n")
    print(f"{'auth':8} {'req/s':>10} {'p99 ms':>8} {'errors':>7}  cost vs none")
    for name, r in rows.items():
        cost = 1 - r["rps"] / rows["none"]["rps"]
        print(f"{name:8} {r['rps']:10.0f} {r['p99_ms']:8.1f} {r['errors']:7}  {cost:+.1%}"
              + ("  (goal < 10 %)" if name != "none" else ""))
    print(f"\nfirst Basic login of a user (argon2id, then cached): {first_login_ms:.0f} ms")
    print(f"32 Basic clients across 4 tenants, mixed PUT/GET/PROPFIND, {seconds:.0f} s: "
          f"{tenant_mix['rps']:.0f} req/s, p99 {tenant_mix['p99_ms']:.0f} ms, "
          f"{tenant_mix['errors']} 5xx of {tenant_mix['requests']}")


def _in_tmp(prefix: str, bench, *args) -> int:
    """Run ``bench(tmp, *args)`` in a fresh temporary directory, removed afterwards."""
    tmp = tempfile.mkdtemp(prefix=prefix)
    try:
        bench(tmp, *args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--big-mib", type=int, default=1024)
    ap.add_argument("--store", choices=["local", "seaweedfs"], default="local")
    ap.add_argument("--auth", action="store_true", help="only the authentication benchmark")
    ap.add_argument("--seconds", type=float, default=10.0, help="per --auth measurement")
    ap.add_argument("--small", type=int, metavar="RUNS",
                    help="only the 1 000 small PUTs, RUNS times against each server")
    ap.add_argument("--listing", type=int, nargs="*", metavar="N",
                    help="only PROPFIND of folders of N entries (default 10000 100000)")
    ap.add_argument("--runs", type=int, default=3, help="repetitions for --listing, --ranges")
    ap.add_argument("--ranges", action="store_true",
                    help="only 4 KiB Range GETs at random offsets of a 100 MiB text file")
    args = ap.parse_args()
    if args.ranges:
        return _in_tmp("rzd-benchrange-", ranges_bench, args.runs)
    if args.listing is not None:
        return _in_tmp("rzd-benchlist-", listing_bench, args.listing or [10_000, 100_000],
                       args.runs)
    if args.small:
        return _in_tmp("rzd-benchsmall-", small_bench, args.small)
    if args.auth:
        return _in_tmp("rzd-benchauth-", auth_bench, args.seconds)
    tmp = tempfile.mkdtemp(prefix="rzd-benchdav-")
    weed = None
    try:
        store = endpoint = None
        if args.store == "seaweedfs":
            from servers import seaweedfs
            weed = seaweedfs(os.path.join(tmp, "weed"))
            os.makedirs(weed.workdir, exist_ok=True)
            weed.start()
            store, endpoint = f"s3://{weed.make_bucket('bench')}/dav", weed.endpoint
        rzd = RazorServer(os.path.join(tmp, "rzd"), store=store, endpoint=endpoint).start()
        try:
            ours = run(rzd, args.big_mib)
        finally:
            rzd.stop()
        stock = StockWsgiDAV(os.path.join(tmp, "stock")).start()
        try:
            theirs = run(stock, args.big_mib)
        finally:
            stock.stop()
    finally:
        if weed:
            weed.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"WebDAV benchmark, store {args.store}, {os.cpu_count()} cores, random data\n")
    print(f"{'measure':38} {'razordav':>12} {'WsgiDAV fs':>12}  unit")
    for key in ours:
        unit = ("MB/s" if "MiB" in key and "RSS" not in key else "req/s" if "small" in key
                else "ms" if "PROPFIND" in key else "MB")
        print(f"{key:38} {ours[key]:12.1f} {theirs[key]:12.1f}  {unit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
