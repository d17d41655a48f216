"""The WebDAV face: a WsgiDAV provider over the core, served by cheroot."""
