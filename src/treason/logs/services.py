"""Names of local services, so a report says "port 80 (http)" and not just a number."""

from __future__ import annotations

import socket
from functools import lru_cache

#: Used when the system has no services database (minimal containers).
_FALLBACK = {
    20: "ftp-data",
    21: "ftp",
    22: "ssh",
    23: "telnet",
    25: "smtp",
    53: "domain",
    80: "http",
    110: "pop3",
    119: "nntp",
    139: "netbios-ssn",
    143: "imap2",
    179: "bgp",
    389: "ldap",
    443: "https",
    445: "microsoft-ds",
    465: "submissions",
    563: "nntps",
    587: "submission",
    631: "ipp",
    873: "rsync",
    993: "imaps",
    995: "pop3s",
    1080: "socks",
    1194: "openvpn",
    1433: "ms-sql-s",
    1883: "mqtt",
    2049: "nfs",
    3128: "squid",
    3306: "mysql",
    3389: "ms-wbt-server",
    5060: "sip",
    5222: "xmpp-client",
    5432: "postgresql",
    5900: "vnc",
    6379: "redis",
    6881: "bittorrent",
    8080: "http-alt",
    8443: "https-alt",
    9100: "jetdirect",
}


@lru_cache(maxsize=4096)
def service_name(port: int | None) -> str | None:
    """The TCP service name of a port, or None when it has none (or was redacted)."""
    if port is None or not 0 < port <= 0xFFFF:
        return None
    try:
        return socket.getservbyport(port, "tcp")
    except OSError:
        return _FALLBACK.get(port)
