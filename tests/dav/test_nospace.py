"""A full local disk (issue 13): the data dir on a 48 MiB tmpfs, a 60 MB PUT answers 507,
the cause is logged once with the path and free space and shows in the figures, nothing
half-written stays behind, and the next small PUT works."""

import os
import subprocess
from pathlib import Path

import pytest
import requests

from tests.razor import RazorServer


@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_full_local_disk_is_507(small_disk, tmp_path):
    srv = RazorServer(small_disk / "data", store=f"file://{tmp_path}/store").start()
    try:
        assert requests.put(srv.url + "/keep.txt", data=b"keep me").status_code == 201
        r = requests.put(srv.url + "/big.bin", data=(os.urandom(1 << 20) for _ in range(60)))
        assert r.status_code == 507, r.text
        r = requests.put(srv.url + "/big.bin", data=os.urandom(60 << 20))
        assert r.status_code == 507, r.text
        assert requests.head(srv.url + "/big.bin").status_code == 404
        assert requests.get(srv.url + "/keep.txt").content == b"keep me"
        assert not list(Path(small_disk).rglob("*.tmp*")), "a half-written block stayed"
        assert requests.put(srv.url + "/small.txt", data=b"small").status_code == 201
        assert requests.get(srv.url + "/small.txt").content == b"small"
    finally:
        srv.stop()
    log = srv.log(since_start=True)
    assert log.count("local disk full at ") == 1, log
    assert "bytes free" in log and str(small_disk) in log
    figures = (small_disk / "data" / "stats.json").read_text()
    assert '"local_disk_full_errors": 0' not in figures and "local_disk_full_errors" in figures


def test_full_disk_in_the_core_is_enospc_and_not_ready(small_disk, tmp_path):
    """What FUSE and /readyz see: NoSpace (errno ENOSPC), and a readiness problem naming
    the directory until there is room again."""
    import errno

    from razordav.core import errors, space
    from razordav.core.volume import Volume
    from razordav.fuse.ops import errno_of

    vol = Volume.open(small_disk / "data", f"file://{tmp_path}/store", journal_interval=0)
    try:
        with pytest.raises(errors.NoSpace) as exc:
            with vol.open_write("/big") as w:
                for _ in range(60):
                    w.write(os.urandom(1 << 20))
        assert errno_of(exc.value) == errno.ENOSPC
        assert any("local disk full" in p for p in vol.problems())
        assert vol.figures()["local_disk_full"]
    finally:
        vol.close()
        for d in list(space._full):   # the module keeps episodes per directory
            space._full.pop(d, None)
