"""HTTP plumbing every face shares (WebDAV, the REST API, metrics, the gate): the cheroot
server and its connection manager, strict HTTP/1.1 framing, and small WSGI wrappers.

Owns nothing about WebDAV (that is ``dav/``) or users and tenants (``service/``); it sits
above ``core`` (it raises ``core.errors.BadBody``) and below every face.
"""
