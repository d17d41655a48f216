"""The `razordav serve` command: options and config file, clear errors, clean shutdown,
and state that survives a restart."""

import os
import signal
import socket
import subprocess
import sys
from dataclasses import fields

import pytest
import requests
import yaml

from razordav import config
from tests.razor import RazorServer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_cli(*args, timeout=30, env=None):
    return subprocess.run([sys.executable, "-m", "razordav.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def test_sample_config_lists_every_option_with_a_comment():
    path = os.path.join(ROOT, "conf", "razordav.yaml")
    data = yaml.safe_load(open(path))
    assert set(data) == {f.name for f in fields(config.Options)}
    for line in open(path):
        if line and not line.startswith("#") and ":" in line:
            assert "#" in line, f"option without a comment: {line}"
    opts = config.load(path, {})
    assert opts.cache_size == 10 << 30 and opts.block_size == 4 << 20


def test_flags_override_config_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("port: 9000\ncache_size: 1G\n")
    opts = config.load(str(cfg), {"port": 9100, "cache_size": None})
    assert opts.port == 9100 and opts.cache_size == 1 << 30


@pytest.mark.parametrize("content,message", [
    ("bogus: 1\n", "unknown option"),
    ("cache_size: lots\n", "invalid size"),
    ("port: 99999\n", "out of range"),
    ("[not, a, mapping]\n", "mapping"),
    ("port: [\n", "not valid YAML"),
    ("upload_delay: soon\n", "upload_delay must be a number of seconds"),
    ("upload_delay: -1\n", "upload_delay must be between 0 and 600"),
    ("upload_delay: 10\nupload_delay_max: 5\n", "upload_delay_max must be between"),
    ("pack_threshold: big\n", "invalid size"),
    ("pack_threshold: 32M\n", "pack_threshold must be between 0"),
    ("pack_size: 100K\n", "pack_size must be between 1M"),
    ("pack_threshold: 8M\npack_size: 8M\n", "twice pack_threshold"),
    ("repack_below: 1\n", "repack_below must be at least 0"),
    ("repack_below: half\n", "repack_below must be a fraction"),
    ("repack_share: 0\n", "repack_share must be above 0"),
])
def test_bad_config_is_a_clear_error(tmp_path, content, message):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(content)
    r = run_cli("serve", "--config", str(cfg), "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 2 and message in r.stderr


def test_bad_store_url(tmp_path):
    r = run_cli("serve", "--data-dir", str(tmp_path / "d"), "--store", "ftp://x/y")
    assert r.returncode == 1
    assert r.stderr.strip().endswith("use file:///path or s3://bucket/prefix")
    assert "Traceback" not in r.stderr


def test_missing_bucket(tmp_path, seaweedfs):
    r = run_cli("serve", "--data-dir", str(tmp_path / "d"), "--store", "s3://no-such-bucket/p",
                "--s3-endpoint", seaweedfs.endpoint)
    assert r.returncode == 1 and "bucket 'no-such-bucket' does not exist" in r.stderr
    r = run_cli("serve", "--data-dir", str(tmp_path / "d"), "--store", "s3://x/p",
                "--s3-endpoint", seaweedfs.endpoint,
                env={"AWS_ACCESS_KEY_ID": "wrong", "AWS_SECRET_ACCESS_KEY": "wrong"})
    assert r.returncode == 1 and "access to bucket 'x' denied: The access key ID" in r.stderr


def test_port_in_use(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run_cli("serve", "--data-dir", str(tmp_path / "d"), "--port", str(port))
    assert r.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in r.stderr


def test_refuses_non_loopback_without_auth(tmp_path):
    r = run_cli("serve", "--data-dir", str(tmp_path / "d"), "--host", "0.0.0.0")
    assert r.returncode == 1 and "--insecure" in r.stderr
    assert not (tmp_path / "d").exists()  # refused before touching anything


def test_sigterm_exits_cleanly_and_state_persists(tmp_path):
    srv = RazorServer(tmp_path / "data").start()
    requests.request("MKCOL", f"{srv.url}/docs")
    requests.put(f"{srv.url}/docs/a.txt", data=b"persisted", headers={"X-OC-Mtime": "1400000000"})
    requests.request("PROPPATCH", f"{srv.url}/docs/a.txt", data=(
        b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:z"><D:set><D:prop>'
        b'<Z:tag>kept</Z:tag></D:prop></D:set></D:propertyupdate>'))
    r = requests.request("LOCK", f"{srv.url}/docs/a.txt", data=(
        b'<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
        b'</D:lockscope><D:locktype><D:write/></D:locktype></D:lockinfo>'))
    token = r.headers["Lock-Token"]
    assert srv.stop() == 0
    assert "stopped" in srv.log()
    srv.start()
    try:
        r = requests.get(f"{srv.url}/docs/a.txt")
        assert r.content == b"persisted"
        assert r.headers["Last-Modified"] == "Tue, 13 May 2014 16:53:20 GMT"
        body = requests.request("PROPFIND", f"{srv.url}/docs/a.txt", headers={"Depth": "0"}).text
        assert "kept" in body and token.strip("<>") in body        # the lock survived
        assert requests.put(f"{srv.url}/docs/a.txt", data=b"x").status_code == 423
    finally:
        srv.stop()
