#!/usr/bin/env python3
"""Load test: N concurrent WebDAV clients doing mixed PUT/GET/PROPFIND/MOVE/DELETE against a
razordav on 127.0.0.1 for a bounded time, then a check that no file was lost.

Each client works in its own directory and keeps the state it expects (name -> sha256).
Passes when no request got a 5xx, every GET matched, and at the end every expected file is
there with its content and nothing else is. Prints requests/s and latency percentiles.
Run: python scripts/load_dav.py [--clients 32] [--seconds 60] [--store local|seaweedfs]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter
from urllib.parse import unquote

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from tests.razor import RazorServer  # noqa: E402


class Client(threading.Thread):
    def __init__(self, n: int, url: str, deadline: float, seed: int):
        super().__init__(name=f"client-{n}")
        self.base = f"{url}/c{n}"
        self.deadline = deadline
        self.rng = random.Random(seed)
        self.files: dict[str, str] = {}
        self.latencies: dict[str, list[float]] = {}
        self.statuses: Counter = Counter()
        self.errors: list[str] = []
        self.session = requests.Session()

    def call(self, method: str, path: str, **kw):
        t = time.perf_counter()
        r = self.session.request(method, self.base + path, timeout=60, **kw)
        self.latencies.setdefault(method, []).append(time.perf_counter() - t)
        self.statuses[r.status_code] += 1
        if r.status_code >= 500:
            self.errors.append(f"{method} {path}: {r.status_code} {r.text[:200]}")
        return r

    def run(self):
        self.call("MKCOL", "")
        i = 0
        while time.monotonic() < self.deadline:
            op = self.rng.choices(["put", "get", "propfind", "move", "delete"],
                                  [35, 30, 15, 10, 10])[0]
            names = sorted(self.files)
            if op == "put" or not names:
                name = f"/f{i}.bin"
                i += 1
                data = os.urandom(self.rng.choice([0, 100, 4096, 64 * 1024, 1 << 20]))
                if self.call("PUT", name, data=data).status_code in (201, 204):
                    self.files[name] = hashlib.sha256(data).hexdigest()
            elif op == "get":
                name = self.rng.choice(names)
                r = self.call("GET", name)
                if r.status_code != 200 or hashlib.sha256(r.content).hexdigest() != self.files[name]:
                    self.errors.append(f"GET {name}: {r.status_code}, content differs")
            elif op == "propfind":
                self.call("PROPFIND", "/", headers={"Depth": "1"})
            elif op == "move":
                name = self.rng.choice(names)
                new = f"/m{i}.bin"
                i += 1
                r = self.call("MOVE", name, headers={"Destination": self.base + new})
                if r.status_code in (201, 204):
                    self.files[new] = self.files.pop(name)
            else:
                name = self.rng.choice(names)
                if self.call("DELETE", name).status_code == 204:
                    del self.files[name]

    def verify(self):
        r = self.session.request("PROPFIND", self.base + "/", headers={"Depth": "1"})
        listed = set()
        for resp in ET.fromstring(r.content).iter("{DAV:}response"):
            href = unquote(resp.find("{DAV:}href").text)
            name = href[href.rstrip("/").rfind("/"):]
            if not href.endswith("/"):
                listed.add(name)
        if listed != set(self.files):
            self.errors.append(f"listing differs: missing {set(self.files) - listed}, "
                               f"extra {listed - set(self.files)}")
        for name, digest in self.files.items():
            body = self.session.get(self.base + name).content
            if hashlib.sha256(body).hexdigest() != digest:
                self.errors.append(f"{name}: content lost or changed")


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] if values else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--store", choices=["local", "seaweedfs"], default="local")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="rzd-load-")
    weed = None
    try:
        store = endpoint = None
        if args.store == "seaweedfs":
            from servers import seaweedfs
            weed = seaweedfs(os.path.join(tmp, "weed"))
            os.makedirs(weed.workdir, exist_ok=True)
            weed.start()
            store, endpoint = f"s3://{weed.make_bucket('load')}/v", weed.endpoint
        srv = RazorServer(os.path.join(tmp, "data"), store=store, endpoint=endpoint).start()
        try:
            deadline = time.monotonic() + args.seconds
            clients = [Client(n, srv.url, deadline, seed=n) for n in range(args.clients)]
            t0 = time.monotonic()
            for c in clients:
                c.start()
            for c in clients:
                c.join()
            elapsed = time.monotonic() - t0
            for c in clients:
                c.verify()
        finally:
            srv.stop()
    finally:
        if weed:
            weed.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    statuses = sum((c.statuses for c in clients), Counter())
    lat: dict[str, list[float]] = {}
    for c in clients:
        for k, v in c.latencies.items():
            lat.setdefault(k, []).extend(v)
    total = sum(statuses.values())
    everything = [x for v in lat.values() for x in v]
    errors = [e for c in clients for e in c.errors]
    print(f"{args.clients} clients, {elapsed:.0f} s, store {args.store}: {total} requests, "
          f"{total / elapsed:.0f} req/s")
    print(f"{'method':10} {'count':>7} {'median ms':>10} {'p99 ms':>8}")
    for method, values in sorted(lat.items()):
        print(f"{method:10} {len(values):7} {statistics.median(values) * 1000:10.1f} "
              f"{percentile(values, 0.99) * 1000:8.1f}")
    print(f"{'all':10} {len(everything):7} {statistics.median(everything) * 1000:10.1f} "
          f"{percentile(everything, 0.99) * 1000:8.1f}")
    print("statuses:", dict(sorted(statuses.items())))
    fivexx = sum(n for s, n in statuses.items() if s >= 500)
    print(f"5xx: {fivexx}; files checked: {sum(len(c.files) for c in clients)}; "
          f"problems: {len(errors)}")
    for e in errors[:20]:
        print("  ", e)
    return 1 if errors or fivexx else 0


if __name__ == "__main__":
    sys.exit(main())
