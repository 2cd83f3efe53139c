"""One waitress set-up for `psychinterp serve` and the demo: the settings the load benchmark measured."""

from __future__ import annotations

import threading

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
    """Let the worker threads finish, then close every socket from inside the event loop (the trigger runs
    the thunk there), which ends it.

    Closing them from this thread races the loop's select(): EBADF in the server's thread. A worker that
    finishes a response pulls the trigger, so workers stop first: one that pulled it after the close wrote
    to a closed descriptor, whose number the next pipe or file may already hold."""
    from waitress import wasyncore

    server.task_dispatcher.shutdown()
    server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
    thread.join(timeout=10)
    if thread.is_alive():  # the loop did not answer its trigger: close from here after all
        server.close()
        thread.join(timeout=10)
