"""Shared pytest fixtures: real S3 servers (SeaweedFS, moto) on 127.0.0.1.

The process handling lives in tests/servers.py; these fixtures only start a
server per session and stop it (kill its process group) at the end.  A missing
binary is a test failure, never a skip: run scripts/test.sh to install it.
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from servers import ServerError, free_port, seaweedfs as _seaweedfs, moto as _moto  # noqa: E402,F401


def _serve(factory, tmp_path_factory, name):
    error = None
    try:
        server = factory(str(tmp_path_factory.mktemp(name)))
        server.start()
    except ServerError as e:
        error = str(e)  # fail outside the except block: no chained traceback
    if error:
        pytest.fail(error, pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory):
    """SeaweedFS (`weed server -s3`): .endpoint, .pid, .make_bucket(), .stop(), .start()."""
    yield from _serve(_seaweedfs, tmp_path_factory, "seaweedfs")


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory):
    """moto's standalone S3 server: .endpoint, .pid, .make_bucket(), .stop(), .start()."""
    yield from _serve(_moto, tmp_path_factory, "moto")
