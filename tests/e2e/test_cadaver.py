"""Scripted cadaver sessions against a real ``razordav serve``.

cadaver reads its commands from stdin (the gateway is anonymous, so it never prompts for
credentials; HOME points at an empty dir so no ~/.cadaverrc or ~/.netrc gets in the way).
Every command's output is checked, and the server's state is then read back over plain
HTTP, independently of cadaver.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from .davhttp import get, listing, need_tool, propfind, request, serve

CADAVER_NS = "{http://webdav.org/cadaver/custom-properties/}"
PROMPT = re.compile(r"^dav:(/[^>]*)> ?(.*)$")
LOCAL = b"hello from cadaver\n" * 100
LOCAL2 = b"second version, written under the lock\n" * 50
LOCKTOKEN = re.compile(r"opaquelocktoken:[^<\s]+")


@pytest.fixture(scope="module")
def cadaver_bin():
    return need_tool("cadaver")


@pytest.fixture
def server(tmp_path):
    yield from serve(tmp_path / "data")


@pytest.fixture
def cadaver(cadaver_bin, tmp_path, server):
    """Run one cadaver session; returns [(command, output)] in order."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "local.txt").write_bytes(LOCAL)
    (home / "local2.txt").write_bytes(LOCAL2)

    def run(script: str):
        proc = subprocess.run([cadaver_bin, server.url + "/"], input=script + "\nquit\n",
                              capture_output=True, text=True, cwd=home, timeout=120,
                              env={**os.environ, "HOME": str(home)})
        assert proc.returncode == 0, f"cadaver exited {proc.returncode}:\n{proc.stdout}" \
                                     f"{proc.stderr}\nserver log:\n{server.log()}"
        steps, current = [], None
        for line in proc.stdout.splitlines():
            m = PROMPT.match(line)
            if m:
                current = [m.group(2).strip(), ""]
                steps.append(current)
            elif current is not None:
                current[1] += line + "\n"
        print(proc.stdout)
        return steps

    run.home = home
    return run


def _by_command(steps):
    """Check every step; return {command: output} (later duplicates win)."""
    for cmd, out in steps:
        assert "failed" not in out.lower(), f"`{cmd}` failed:\n{out}"
    return {cmd: out for cmd, out in steps}


def test_scripted_session(cadaver, server):
    steps = cadaver("\n".join([
        "mkcol coll",
        "cd coll",
        "put local.txt f.txt",
        'put local.txt "sp ace ü.txt"',
        "ls",
        "propset f.txt color blue",
        "propget f.txt color",
        "copy f.txt g.txt",
        "propget g.txt color",
        "move g.txt h.txt",
        "propget h.txt color",
        "lock f.txt",
        "discover f.txt",
        "put local2.txt f.txt",
        "unlock f.txt",
        "discover f.txt",
        "get f.txt back2.txt",
        "get h.txt back.txt",
        "delete f.txt",
        "mkcol sub",
        "copy h.txt sub/copied.txt",
        "propdel sub/copied.txt color",
        "ls",
    ]))
    out = _by_command(steps)
    assert [cmd for cmd, _ in steps][-1] == "quit"
    for cmd in ("mkcol coll", "put local.txt f.txt", "copy f.txt g.txt", "move g.txt h.txt",
                "lock f.txt", "put local2.txt f.txt", "unlock f.txt", "delete f.txt",
                "get h.txt back.txt", "propset f.txt color blue",
                "propdel sub/copied.txt color", "copy h.txt sub/copied.txt"):
        assert "succeeded" in out[cmd], f"`{cmd}`: {out[cmd]!r}"
    listings = [o for c, o in steps if c == "ls"]
    assert re.search(r"^\s+f\.txt\s+1900\s", listings[0], re.M), listings[0]
    assert "sp ace ü.txt" in listings[0]
    for name in ("f.txt", "g.txt", "h.txt"):
        assert "Value of color is: blue" in out[f"propget {name} color"], \
            (name, out[f"propget {name} color"])
    locks = [o for c, o in steps if c == "discover f.txt"]
    assert "Scope: exclusive" in locks[0] and "Depth 0" in locks[0], locks[0]
    assert not LOCKTOKEN.search(locks[1]), f"lock still there after unlock: {locks[1]}"
    assert (cadaver.home / "back.txt").read_bytes() == LOCAL
    assert (cadaver.home / "back2.txt").read_bytes() == LOCAL2

    # the server's state, over plain HTTP
    assert listing(server, "/coll") == {"h.txt", "sp ace ü.txt", "sub"}
    assert listing(server, "/coll/sub") == {"copied.txt"}
    assert get(server, "/coll/h.txt") == (200, LOCAL)
    assert get(server, "/coll/sp ace ü.txt") == (200, LOCAL)
    assert get(server, "/coll/sub/copied.txt") == (200, LOCAL)
    assert get(server, "/coll/f.txt")[0] == 404
    assert get(server, "/coll/g.txt")[0] == 404
    props = propfind(server, "/coll/", "infinity", [CADAVER_NS + "color",
                                                     "{DAV:}lockdiscovery"])
    assert props["/coll/h.txt"][CADAVER_NS + "color"].text == "blue"
    assert CADAVER_NS + "color" not in props["/coll/sub/copied.txt"]
    assert all(not list(p["{DAV:}lockdiscovery"]) for p in props.values())


def test_lock_outlives_session_and_restart_then_unlock_by_token(cadaver, server):
    out = _by_command(cadaver("mkcol d\nput local.txt d/held.txt\nlock d/held.txt"))
    assert "succeeded" in out["lock d/held.txt"]
    # cadaver quit without unlocking: the lock stays, even across a gateway restart
    assert server.stop() == 0
    server.start()
    found = propfind(server, "/d/held.txt", "0", ["{DAV:}lockdiscovery"])
    discovery = found["/d/held.txt"]["{DAV:}lockdiscovery"]
    tokens = [el.findtext("{DAV:}href") for el in discovery.iter("{DAV:}locktoken")]
    assert len(tokens) == 1 and LOCKTOKEN.fullmatch(tokens[0]), \
        f"lock lost over the restart: {tokens}"
    assert request(server, "PUT", "/d/held.txt", b"intruder")[0] == 423
    assert request(server, "DELETE", "/d")[0] == 423
    assert request(server, "MOVE", "/d/held.txt",
                   headers={"Destination": server.url + "/d/moved.txt"})[0] == 423

    # a second session: `unlock` asks for the token on stdin
    steps = cadaver(f"unlock d/held.txt\n{tokens[0]}")
    out = _by_command(steps)
    assert "Enter locktoken" in out["unlock d/held.txt"]
    assert "succeeded" in out["unlock d/held.txt"], out["unlock d/held.txt"]
    found = propfind(server, "/d/held.txt", "0", ["{DAV:}lockdiscovery"])
    assert not list(found["/d/held.txt"]["{DAV:}lockdiscovery"])
    assert request(server, "PUT", "/d/held.txt", b"free again")[0] in (200, 204)
    assert get(server, "/d/held.txt") == (200, b"free again")


def test_wrong_locktoken_is_refused(cadaver, server):
    cadaver("put local.txt w.txt\nlock w.txt")
    steps = cadaver("unlock w.txt\nopaquelocktoken:not-the-right-one")
    assert "failed" in steps[0][1].lower(), steps
    assert request(server, "PUT", "/w.txt", b"x")[0] == 423


def test_propnames_lists_dead_property(cadaver, server):
    """Regression (WsgiDAV 4.4 looked for <name/>): PROPFIND <propname/> lists property names.

    RFC 4918 9.1: ``<propname/>`` asks for the names of all properties; the gateway answers
    207 with an empty ``<response>`` (just the href, no propstat), so cadaver's
    ``propnames`` prints nothing. Cause: WsgiDAV 4.4.0 request_server.py matches the
    request element ``{DAV:}name`` instead of ``{DAV:}propname``, falls through to "named"
    mode with an empty list.
    """
    out = _by_command(cadaver("put local.txt p.txt\npropset p.txt color blue\npropnames p.txt"))
    body = ('<?xml version="1.0" encoding="utf-8"?>'
            '<D:propfind xmlns:D="DAV:"><D:propname/></D:propfind>').encode()
    status, _, data = request(server, "PROPFIND", "/p.txt", body,
                              {"Depth": "0", "Content-Type": "application/xml"})
    assert status == 207
    assert b"propstat" in data and b"getcontentlength" in data and b"color" in data, \
        f"PROPFIND <propname/> lists no property names; response: {data.decode()}"
    assert "color" in out["propnames p.txt"], out["propnames p.txt"]
