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


# Descriptors kept out of the connection limit's reach: the database, the image cache, logs, the trigger pipe.
RESERVED_DESCRIPTORS = 64


def descriptor_limit() -> int:
    """The process's limit on open descriptors, first raised to its hard limit (up to 65,536) where it is lower."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):  # a container that forbids it: keep the soft limit
            pass
    return 65536 if soft == resource.RLIM_INFINITY else soft


def safe_connection_limit(descriptors: int, requested: int | None = None) -> int:
    """At most half the descriptors left after the reserve: a flood of held connections is turned away at the
    door (the kernel's backlog) long before the process runs out of descriptors."""
    ceiling = max(8, (descriptors - RESERVED_DESCRIPTORS) // 2)
    return ceiling if requested is None else min(requested, ceiling)


def create_server(app, host: str, port: int, threads: int = 16, connection_limit: int | None = None):
    """A bound waitress server (not yet running); a busy port is a clear error. ``port=0`` takes a free one.

    waitress waits on poll(), not select(): select() cannot watch a descriptor numbered 1024 or more, and a
    thousand held connections ended the process with "filedescriptor out of range in select()". Waitress
    refuses request bodies over the app's MAX_CONTENT_LENGTH itself, before Flask reads them.
    """
    import waitress

    descriptors = descriptor_limit()
    try:
        server = waitress.create_server(
            app,
            host=host,
            port=port,
            threads=threads,
            connection_limit=safe_connection_limit(descriptors, connection_limit),
            asyncore_use_poll=True,
            backlog=2048,
            ident="psychinterp",
            max_request_body_size=app.config.get("MAX_CONTENT_LENGTH") or 1_073_741_824,
            # X-Forwarded-* reach the app, whose ProxyFix trusts exactly trusted_proxies hops (none: it ignores
            # them) and whose ProxyCheck says when the headers contradict that setting.
            clear_untrusted_proxy_headers=False,
            channel_timeout=60,
        )
    except OSError as exc:
        raise PsychinterpError(
            f"cannot serve on {host}:{port} ({exc.strerror}): is another server running there? Choose one with --port"
        ) from None
    server.descriptor_limit = descriptors
    return server


def start_up_line(server, requested: int | None = None) -> str:
    """What the server will hold, for its start-up output."""
    limit = server.adj.connection_limit
    line = (
        f"waitress: {server.adj.threads} threads, poll(), up to {limit} open connections "
        f"(the process may open {server.descriptor_limit} descriptors)"
    )
    if requested is not None and requested > limit:
        line += f"; --connection-limit {requested} was lowered to stay well under the descriptor limit"
    return line


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
