"""The WebDAV face: a WsgiDAV provider over the core, served by cheroot."""

from . import xmlsafe  # noqa: F401  first: WsgiDAV must parse XML with defusedxml
