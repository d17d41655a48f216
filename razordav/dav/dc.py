"""The WsgiDAV domain controller of a tenant's WebDAV app behind the gate.

The gate (``service/gate.py``) authenticates every request before WsgiDAV sees it and puts
the user name under the app's ``trusted_auth_header``; WsgiDAV binds lock tokens to it. This
module is only the WsgiDAV side of that arrangement; checking passwords is the service's.
"""

from __future__ import annotations

from wsgidav.dc.base_dc import BaseDomainController

REALM = "razordav"


class TrustedDC(BaseDomainController):
    """The domain controller of a tenant's WsgiDAV app: every request is authenticated, and
    WsgiDAV takes the user name the gate put under its ``trusted_auth_header``. A request
    that reached the app without one (impossible through the gate) fails Basic auth."""

    def __init__(self, wsgidav_app=None, config=None):
        super().__init__(wsgidav_app, config)

    def get_domain_realm(self, path_info, environ):
        return REALM

    def require_authentication(self, realm, environ):
        return True

    def supports_http_digest_auth(self):
        return False      # digest needs the password in clear or an MD5 of it: not stored

    def basic_auth_user(self, realm, user_name, password, environ):
        return False
