"""Which XML parser WsgiDAV uses: defusedxml, always, whatever else is installed.

WsgiDAV 4.4 picks lxml when it can import it (``wsgidav.xml_tools``), and its lxml path
resolves entities: an entity bomb in a PROPFIND answered 207, an external entity in a
PROPPATCH was stored as a property that made later PROPFINDs fail. Its other path is
defusedxml, which refuses DTD entities and external references. ``xml_tools`` chooses
once, when it is first imported, and every WsgiDAV module copies its choice, so this
module imports it first with lxml hidden; importing it after WsgiDAV already chose lxml
is a bug in the import order and fails loudly rather than serve with the unsafe parser.

Owns nothing else; imported by ``razordav/dav/__init__.py`` and ``razordav/service``,
the two packages that import WsgiDAV.
"""

from __future__ import annotations

import sys


def _import_xml_tools_without_lxml():
    if "wsgidav.xml_tools" not in sys.modules:
        hidden = {name: sys.modules.pop(name) for name in list(sys.modules)
                  if name == "lxml" or name.startswith("lxml.")}
        sys.modules["lxml"] = None   # "import lxml" now raises ImportError
        try:
            import wsgidav.xml_tools  # noqa: F401
        finally:
            del sys.modules["lxml"]
            sys.modules.update(hidden)
    from wsgidav import xml_tools
    if xml_tools.use_lxml:
        raise ImportError("WsgiDAV was imported before razordav.dav and chose lxml, which "
                          "resolves XML entities; import razordav.dav first")
    return xml_tools


xml_tools = _import_xml_tools_without_lxml()
