"""An S3 outage seen through the mount: cached reads go on, writes queue in the cache until
the dirty limit and then fail with ENOSPC (never hang), uncached reads fail with EIO within
seconds, and the queue drains by itself once S3 is back."""
import errno
import os
import time

import pytest

from mounts import RazorMount
from tests.e2e.test_faults import stats, wait_drained, weed  # noqa: F401 (weed: a fixture)

KiB = 1 << 10


def drop_page_cache():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3")


def write_file(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def test_outage_enospc_eio_then_drain(tmp_path, weed):  # noqa: F811
    bucket = weed.make_bucket("fuseoutage")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("block_size: 64K\ncache_size: 1M\ndirty_limit: 768K\n")
    m = RazorMount(tmp_path / "data", tmp_path / "mnt", store=f"s3://{bucket}/v",
                   endpoint=weed.endpoint, extra=["--config", str(cfg)]).start()
    mnt = m.mountpoint
    try:
        cold, hot = os.urandom(900 * KiB), os.urandom(100 * KiB)
        write_file(f"{mnt}/cold.bin", cold)
        wait_drained(tmp_path / "data")
        write_file(f"{mnt}/filler.bin", os.urandom(900 * KiB))   # pushes cold out of the cache
        write_file(f"{mnt}/hot.bin", hot)
        wait_drained(tmp_path / "data")
        weed.stop()
        drop_page_cache()
        assert open(f"{mnt}/hot.bin", "rb").read() == hot           # from the block cache
        written, failures = {}, []
        for i in range(20):
            data = os.urandom(128 * KiB)
            t = time.monotonic()
            try:
                write_file(f"{mnt}/during-{i}.bin", data)
                written[i] = data
            except OSError as exc:
                failures.append(exc.errno)
            assert time.monotonic() - t < 30                         # never a hang
        assert written and failures and set(failures) == {errno.ENOSPC}, failures
        t = time.monotonic()
        with pytest.raises(OSError) as exc:
            open(f"{mnt}/cold.bin", "rb").read()
        assert exc.value.errno == errno.EIO
        assert time.monotonic() - t < 15
        s = stats(tmp_path / "data")
        assert s["upload_queue"] > 0 and s["last_store_error"]
        weed.start()
        wait_drained(tmp_path / "data", timeout=90)
        drop_page_cache()
        for i, data in written.items():
            assert open(f"{mnt}/during-{i}.bin", "rb").read() == data
        assert open(f"{mnt}/cold.bin", "rb").read() == cold
    finally:
        m.stop()
