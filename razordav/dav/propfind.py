"""PROPFIND with Depth 0 or 1, streamed: the multistatus document is written response by
response, in flat memory whatever the size of the collection.

WsgiDAV builds the whole multistatus tree in memory and serialises it before sending a
byte (100 000 entries: 1.2 GB of RSS and 12 s). Here the edge answers such a PROPFIND
itself, with WsgiDAV's own per-resource machinery (``get_properties``,
``util.add_property_response``), so the properties and their statuses are the ones WsgiDAV
would send; only the assembly differs:

- the members come from the volume a page at a time (``FolderResource.member_pages``),
  all of them from one read transaction of the metadata (``Volume.snapshot``), so the
  listing is one consistent state even while others write;
- each ``<response>`` is serialised on its own and sent at once; the body has no
  Content-Length, so cheroot sends it chunked (HTTP/1.1) and the connection stays open;
- a member whose properties fail midway gets a ``<response>`` with a 500 status, and a
  listing that fails midway ends with a ``<responsedescription>``: the document is always
  well-formed, never cut off.

What is left to WsgiDAV (``None`` from ``streamed_propfind``): Depth infinity (bounded by
the edge), requests with an ``If`` header (WsgiDAV evaluates it), a missing resource (404)
and a body it must refuse (400), so those answers stay its own.

Threading: one request per call; the generator runs in the worker thread that serves it.
"""

from __future__ import annotations

import io
import logging
from xml.etree.ElementTree import tostring

from wsgidav import util
from wsgidav.dav_error import DAVError

from .xmlsafe import xml_tools

log = logging.getLogger(__name__)

PAGE = 500          # members read from the metadata at a time
_HEAD = b'<?xml version="1.0" encoding="utf-8" ?>\n<D:multistatus xmlns:D="DAV:">'
_TAIL = b"</D:multistatus>"


def streamed_propfind(provider, config: dict, volume, environ, start_response):
    """Answer a Depth 0/1 PROPFIND streamed, or return None to let WsgiDAV answer it.
    ``config`` is the WsgiDAV app's: resources read it (content types)."""
    depth = environ.get("HTTP_DEPTH", "infinity").strip().lower()
    if depth not in ("0", "1") or environ.get("HTTP_IF"):
        return None
    request = _request(environ)
    if request is None:
        return None
    mode, names = request
    environ["wsgidav.provider"], environ["wsgidav.config"] = provider, config
    try:
        res = provider.get_resource_inst(environ["PATH_INFO"], environ)
    except DAVError:
        return None
    if res is None:
        return None
    start_response("207 Multi-Status", [("Content-Type", "application/xml; charset=utf-8"),
                                        ("Date", util.get_rfc1123_time())])
    return _document(volume, res, depth, mode, names)


def _request(environ) -> tuple[str, list[str]] | None:
    """(mode, property names) of the body, as WsgiDAV reads it; None if it is not a valid
    propfind (WsgiDAV then answers the 400). The body stays readable for WsgiDAV."""
    body = environ["wsgi.input"].read()
    environ["wsgi.input"] = io.BytesIO(body)
    if not body.strip():
        return "allprop", []
    try:
        root = xml_tools.etree.XML(body)
    except Exception:
        return None
    if root.tag != "{DAV:}propfind":
        return None
    mode, names = None, []
    for node in root:
        if node.tag == "{DAV:}allprop":
            if mode:
                return None
            mode = "allprop"
        elif node.tag == "{DAV:}name":          # the edge turns <propname/> into this
            if mode:
                return None
            mode = "name"
        elif node.tag == "{DAV:}prop":
            if mode not in (None, "named"):
                return None
            mode = "named"
            names += [child.tag for child in node]
    return mode or "allprop", names


def _document(volume, res, depth: str, mode: str, names: list[str]):
    yield _HEAD
    with volume.snapshot():               # one consistent listing, however long it takes
        yield _response(res, mode, names)
        if depth == "1" and res.is_collection:
            try:
                for page in res.member_pages(PAGE):
                    for member in page:
                        yield _response(member, mode, names)
            except Exception as exc:       # the status line has gone: say it in the body
                log.exception("PROPFIND listing of %s failed midway", res.path)
                yield _element("{DAV:}responsedescription",
                               f"the listing stopped early: {type(exc).__name__}")
    yield _TAIL


def _response(res, mode: str, names: list[str]) -> bytes:
    """One ``<response>``: WsgiDAV's properties of ``res``, or a 500 for the resource."""
    try:
        props = res.get_properties(mode, name_list=names) if mode == "named" else \
            res.get_properties(mode)
        holder = xml_tools.etree.Element("{DAV:}multistatus")
        util.add_property_response(holder, res.get_href(), props)
        return tostring(holder[0], encoding="unicode").encode("utf-8")
    except Exception:
        log.exception("PROPFIND of %s failed", res.path)
        el = xml_tools.etree.Element("{DAV:}response")
        xml_tools.etree.SubElement(el, "{DAV:}href").text = res.get_href()
        xml_tools.etree.SubElement(el, "{DAV:}status").text = \
            "HTTP/1.1 500 Internal Server Error"
        return tostring(el, encoding="unicode").encode("utf-8")


def _element(tag: str, text: str) -> bytes:
    el = xml_tools.etree.Element(tag)
    el.text = text
    return tostring(el, encoding="unicode").encode("utf-8")
