"""One waitress set-up for `psychinterp serve` and the demo: the settings the load benchmark measured."""

from __future__ import annotations

import threading
import time

from contracts.errors import PsychinterpError

PUBLIC_WARNING = (
    "warning: serving on {host}, which other machines can reach. A public study belongs behind the reverse "
    "proxy of docs/deploy.md (TLS, HSTS, connection limits per client); waitress alone cannot fend off "
    "thousands of trickling connections."
)


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _trusted_proxies(app) -> int:
    config = app.config.get("PSYCHINTERP")
    return config.trusted_proxies if config is not None else 0


def create_server(app, host: str, port: int, threads: int = 16, connection_limit: int = 1000):
    """A bound waitress server (not yet running); a busy port is a clear error. ``port=0`` takes a free one.

    Waitress refuses request bodies over the app's MAX_CONTENT_LENGTH itself, before Flask reads them.
    """
    import waitress

    try:
        return waitress.create_server(
            app,
            host=host,
            port=port,
            threads=threads,
            connection_limit=connection_limit,
            backlog=2048,
            ident="psychinterp",
            max_request_body_size=app.config.get("MAX_CONTENT_LENGTH") or 1_073_741_824,
            # waitress strips X-Forwarded-* from clients it does not trust; behind the documented proxy
            # (trusted_proxies) they must reach the app, whose ProxyFix trusts exactly that many hops.
            clear_untrusted_proxy_headers=not _trusted_proxies(app),
            channel_timeout=60,
        )
    except OSError as exc:
        raise PsychinterpError(
            f"cannot serve on {host}:{port} ({exc.strerror}): is another server running there? Choose one with --port"
        ) from None


def start_in_thread(server) -> threading.Thread:
    thread = threading.Thread(target=server.run, name="waitress", daemon=True)
    thread.start()
    return thread


def stop(server, thread: threading.Thread) -> None:
    """End the event loop by emptying its socket map (it stops at its next poll, within waitress's
    one-second loop timeout), then close every socket from here once the loop is gone.

    Closing sockets from this thread while the loop runs raced its select() (EBADF in the server's
    thread), and waking it through its trigger pipe raced too: the pipe could already be closed
    (EBADF here, on some CI runs). Workers stop first: one that finished a response after the close
    pulled the trigger of a closed pipe."""
    from waitress import wasyncore

    server.accepting = False  # no new connection from the next poll on
    server.task_dispatcher.shutdown()
    sockets: dict = {}
    deadline = time.monotonic() + 10
    while thread.is_alive() and time.monotonic() < deadline:
        sockets.update(server._map)
        server._map.clear()
        thread.join(timeout=0.5)
    sockets.update(server._map)
    wasyncore.close_all(sockets)
