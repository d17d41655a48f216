"""The litmus WebDAV compliance suite against the gateway, on the local store and on S3
(SeaweedFS on loopback): every group, every test passes, none skipped."""

import re
import shutil
import subprocess

import pytest

from tests.razor import RazorServer

GROUPS = {"basic": 16, "copymove": 13, "props": 30, "locks": 41, "http": 4}


def run_litmus(url, tmp_path):
    litmus = shutil.which("litmus")
    assert litmus, "litmus is not installed: run scripts/test.sh"
    out = subprocess.run([litmus, url], capture_output=True, cwd=tmp_path, timeout=600)
    text = out.stdout.decode("utf-8", "replace")
    summary = {g: (int(n), int(p)) for g, n, p in re.findall(
        r"summary for `(\w+)': of (\d+) tests run: (\d+) passed", text)}
    return text, summary


def check(text, summary):
    problems = [line for line in text.splitlines() if "FAIL" in line or "SKIPPED" in line
                or "WARNING" in line]
    assert problems == [], "\n".join(problems)
    assert summary == {g: (n, n) for g, n in GROUPS.items()}, text[-3000:]
    assert sum(n for n, _ in summary.values()) == 104


def test_litmus_local_store(tmp_path):
    with RazorServer(tmp_path / "data") as srv:
        text, summary = run_litmus(srv.url + "/", tmp_path)
    check(text, summary)


def test_litmus_on_s3(tmp_path, seaweedfs):
    bucket = seaweedfs.make_bucket("litmus")
    with RazorServer(tmp_path / "data", store=f"s3://{bucket}/vol",
                     endpoint=seaweedfs.endpoint) as srv:
        text, summary = run_litmus(srv.url + "/", tmp_path)
    check(text, summary)
