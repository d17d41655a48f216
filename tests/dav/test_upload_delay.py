"""Uploads wait for a pause in WebDAV requests too (upload_delay), not only in new blocks:
a client listing and reading while the cache holds dirty blocks keeps the uploads back."""

import http.client
import os
import threading
import time

from razordav.core.volume import Volume
from razordav.dav.app import close_app, make_app
from razordav.web.server import Server


def test_requests_hold_uploads_back_until_a_pause(tmp_path):
    vol = Volume.open(tmp_path / "data", block_size=16 * 1024, journal_interval=0,
                      upload_delay=0.6, upload_delay_max=30,
                      pack_threshold=0)   # blocks alone: packs wait longer (test_pack_store)
    app = make_app(vol, lock_db=str(tmp_path / "locks.sqlite"), verbose=0)
    server = Server(app, port=0, threads=4, timeout=10)
    thread = threading.Thread(target=server.httpd.serve, daemon=True)
    thread.start()
    try:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=20)

        def request(method, path, body=None, headers=None):
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, r.read()

        data = os.urandom(40_000)
        assert request("PUT", "/f.bin", data)[0] == 201
        t_end = time.monotonic() + 1.5
        while time.monotonic() < t_end:      # no new blocks, but requests keep coming
            assert request("PROPFIND", "/", headers={"Depth": "1"})[0] == 207
            assert request("GET", "/f.bin") == (200, data)
            assert vol.cache.stats["uploads"] == 0
            time.sleep(0.1)
        deadline = time.monotonic() + 5
        while vol.cache.queue_length() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert vol.cache.queue_length() == 0 and vol.cache.stats["uploads"] == 3
        conn.close()
    finally:
        server.stop()
        thread.join(10)
        close_app(app)
        vol.close()
