"""Uploads wait for a pause in the mount's requests (upload_delay): a workload keeps the
store quiet while it runs, and the backlog goes out in the pause after it."""
import os
import time

from mounts import RazorMount


def test_requests_through_the_mount_hold_uploads_back(tmp_path, seaweedfs):
    bucket = seaweedfs.make_bucket("fusedelay")
    cfg = tmp_path / "c.yaml"
    # Blocks alone: a small one would wait for a full pack (tests/core/test_pack_store.py).
    cfg.write_text("upload_delay: 1\nupload_delay_max: 30\npack_threshold: 0\n")
    m = RazorMount(tmp_path / "data", tmp_path / "mnt", store=f"s3://{bucket}/v",
                   endpoint=seaweedfs.endpoint, extra=["--config", str(cfg)]).start()
    s3 = seaweedfs.client()

    def blocks_in_bucket():
        return s3.list_objects_v2(Bucket=bucket, Prefix="v/blocks/").get("KeyCount", 0)

    try:
        data = os.urandom(100_000)
        with open(f"{m.mountpoint}/f.bin", "wb") as f:
            f.write(data)
        t_end, i = time.monotonic() + 3, 0
        while time.monotonic() < t_end:     # lookups of new names reach the daemon each time
            assert not os.path.exists(f"{m.mountpoint}/nothing-{i}")
            i += 1
            time.sleep(0.05)
            assert blocks_in_bucket() == 0, "uploaded while requests kept coming"
        deadline = time.monotonic() + 10
        while blocks_in_bucket() == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert blocks_in_bucket() == 1
        with open(f"{m.mountpoint}/f.bin", "rb") as f:
            assert f.read() == data
    finally:
        m.stop()
