"""A gateway process per test module over a local store, and an HTTP session to it."""

import pytest
import requests

from tests.razor import RazorServer


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = RazorServer(tmp_path_factory.mktemp("dav") / "data")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def http(server):
    with requests.Session() as s:
        yield s


@pytest.fixture
def url(server, request):
    """A fresh collection per test, so tests do not see each other's files."""
    base = f"{server.url}/{request.node.name.replace('[', '_').replace(']', '')}"
    requests.request("MKCOL", base)
    return base
