"""Where a secret may be sent: https, or this machine. Used by the remote backend and the settings checks."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1 (bracketed or not) or localhost."""
    host = host.strip("[]").rstrip(".").lower()
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def is_private_channel(url: str) -> bool:
    """True when a secret sent to ``url`` cannot be read on the way: https, or a loopback host."""
    parts = urlsplit(url)
    return parts.scheme == "https" or is_loopback_host(parts.hostname or "")


def url_origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: what logs and /status may show. The user:password part, the
    path (it may name a deployment) and the query (it may carry a key) stay out."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 address keeps its brackets
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:  # a malformed port: show the host alone
        port = None
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")
