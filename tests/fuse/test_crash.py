"""kill -9 of the mount process under parallel writers that fsync: what fsync returned for
is there after a restart, on a real S3 server (SeaweedFS on loopback)."""
import hashlib
import os
import random
import subprocess
import sys
import threading
import time

from mounts import RazorMount
from tests.e2e.test_faults import wait_drained

KiB, MiB = 1 << 10, 1 << 20


def test_kill_9_loses_nothing_fsynced(tmp_path, seaweedfs):
    bucket = seaweedfs.make_bucket("fusekill9")
    store = [f"s3://{bucket}/v", seaweedfs.endpoint]
    m = RazorMount(tmp_path / "data", tmp_path / "mnt", store=store[0], endpoint=store[1])
    mnt = m.mountpoint
    lock = threading.Lock()
    acked: dict[str, str] = {}        # replaced files: name -> sha256 of the fsynced version
    later: dict[str, set] = {}        # versions renamed in after it, their answer cut off
    logs: dict[str, int] = {}         # append-only logs: name -> records fsynced
    # The device of this round's mount. Once the killed mount is detached, the mount point
    # is the bare directory below it, and a writer that has not seen ``stop`` yet would
    # write, fsync and rename there without an error: that is not the mount's promise.
    dev = {"mount": None}
    rng = random.Random(99)

    def replacer(n, stop):
        """Write a temp file, fsync, rename over the target: the way editors save."""
        i = 0
        while not stop.is_set():
            data = os.urandom(rng.choice([0, 1, 4 * KiB, 300 * KiB, 2 * MiB, 5 * MiB]))
            name = f"r{n}-{i % 3}"
            digest = hashlib.sha256(data).hexdigest()
            try:
                fd = os.open(f"{mnt}/{name}.tmp{i}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                os.write(fd, data)
                os.fsync(fd)
                on_mount = os.fstat(fd).st_dev == dev["mount"]
                os.close(fd)
                if not on_mount:
                    return              # the mount was gone: written to the bare directory
                with lock:
                    later.setdefault(name, set()).add(digest)
                os.rename(f"{mnt}/{name}.tmp{i}", f"{mnt}/{name}")
                if os.stat(f"{mnt}/{name}").st_dev != dev["mount"]:
                    return
            except OSError:
                return                  # the mount died under us
            with lock:
                acked[name], later[name] = digest, set()
            i += 1

    def appender(n, stop):
        """Append numbered records and fsync each, like a database log."""
        name = f"log{n}"
        try:
            fd = os.open(f"{mnt}/{name}", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            count = len(open(f"{mnt}/{name}", "rb").read().splitlines())
            while not stop.is_set():
                os.write(fd, record(n, count) + b"\n")
                os.fsync(fd)
                count += 1
                with lock:
                    logs[name] = count
        except OSError:
            return

    for round_ in range(3):
        m.start()
        dev["mount"] = os.stat(mnt).st_dev
        stop = threading.Event()
        threads = [threading.Thread(target=replacer, args=(n, stop)) for n in range(8)]
        threads += [threading.Thread(target=appender, args=(n, stop)) for n in range(8)]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(1.5, 4.0))
        m.kill()                        # SIGKILL at a random moment, then the mount detached
        stop.set()
        for t in threads:
            t.join()
    assert len(acked) >= 8 and sum(logs.values()) > 50, (acked, logs)
    m.start()
    try:
        for name, digest in acked.items():
            with open(f"{mnt}/{name}", "rb") as f:
                got = hashlib.sha256(f.read()).hexdigest()
            assert got in {digest} | later[name], name
        for name, count in logs.items():
            lines = open(f"{mnt}/{name}", "rb").read().splitlines()
            assert len(lines) >= count, name
            # what was fsynced is there, in order; after it only whole records or a torn tail
            n = int(name[3:])
            assert lines[:count] == [record(n, i) for i in range(count)], name
        wait_drained(tmp_path / "data")   # the uploads resumed by themselves
    finally:
        assert m.stop() == 0
    args = ["--data-dir", str(tmp_path / "data"), "--store", store[0], "--s3-endpoint", store[1]]
    r = subprocess.run([sys.executable, "-m", "razordav.cli", "fsck", *args],
                       capture_output=True, text=True, timeout=300)
    problems = [line for line in r.stdout.splitlines() if line.startswith("problem:")]
    # a block stored before its commit was cut off is garbage, not damage
    assert all("belong to no file" in line for line in problems), r.stdout + r.stderr


def record(n: int, i: int) -> bytes:
    return f"{n}:{i}:".encode() + hashlib.sha1(f"{n}-{i}".encode()).hexdigest().encode() * 3
