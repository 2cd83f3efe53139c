"""Whether ``trusted_proxies`` matches what the requests carry: a mismatch either way breaks the per-address
rate limits without a sound, so the server says so (once per kind, in its log and on the dashboard).

- ``trusted_proxies: 0`` but requests carry X-Forwarded-For: there is a proxy, and every participant
  counts as its address, so one participant's limit is everyone's.
- ``trusted_proxies: N`` but a request carries fewer than N forwarded addresses: it reached the server
  without passing the proxies, and any client can choose its address by sending the header itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping

log = logging.getLogger(__name__)


def proxy_mismatch(trusted: int, forwarded_for: str | None, peer: str | None) -> tuple[str, str] | None:
    """(kind, what to tell the experimenter) for a request that contradicts ``trusted``; None when it fits."""
    hops = [h.strip() for h in (forwarded_for or "").split(",") if h.strip()]
    if not trusted and hops:
        return (
            "proxy_not_trusted",
            f"requests come through a proxy (X-Forwarded-For: {', '.join(hops[-3:])}) but trusted_proxies is 0: every "
            f"participant counts as the proxy's address ({peer}), so one address's rate limits hold back everyone. "
            "Set trusted_proxies to the number of proxies in front of the server (docs/deploy.md's nginx: 1).",
        )
    if trusted and len(hops) < trusted:
        return (
            "proxy_bypassed",
            f"trusted_proxies is {trusted} but a request from {peer} came with {len(hops)} forwarded address(es): it "
            "reached the server without passing the proxy, and any such client can choose its address by sending "
            "X-Forwarded-For itself. Let only the proxy reach the server (bind it to 127.0.0.1), or set "
            "trusted_proxies to the proxies there really are.",
        )
    return None


class ProxyCheck:
    """WSGI middleware, outside ProxyFix (it reads the request as it arrived); it changes nothing."""

    def __init__(self, wsgi_app: Callable, trusted: int, notices: MutableMapping[str, str]):
        self.wsgi_app, self.trusted, self.notices = wsgi_app, trusted, notices

    def __call__(self, environ, start_response):
        if len(self.notices) < 2:  # both kinds said: nothing more to learn
            found = proxy_mismatch(self.trusted, environ.get("HTTP_X_FORWARDED_FOR"), environ.get("REMOTE_ADDR"))
            if found is not None and found[0] not in self.notices:
                self.notices[found[0]] = found[1]
                log.warning("%s", found[1])
        return self.wsgi_app(environ, start_response)
