"""Port service names (`port = http`): a built-in table, then the system's services file."""

from __future__ import annotations

import re
import socket

#: Common names, so configs mean the same on every host whatever its /etc/services says.
SERVICES: dict[str, int] = {
    "ftp-data": 20, "ftp": 21, "ssh": 22, "telnet": 23, "smtp": 25, "domain": 53, "dns": 53,
    "tftp": 69, "gopher": 70, "finger": 79, "http": 80, "www": 80, "kerberos": 88,
    "pop3": 110, "nntp": 119, "ntp": 123, "imap": 143, "imap2": 143, "snmp": 161,
    "ldap": 389, "https": 443, "smtps": 465, "syslog": 514, "submission": 587, "ldaps": 636,
    "rsync": 873, "imaps": 993, "pop3s": 995, "ms-sql-s": 1433, "openvpn": 1194,
    "mysql": 3306, "rdp": 3389, "sip": 5060, "sips": 5061, "postgresql": 5432,
    "postgres": 5432, "amqp": 5672, "redis": 6379, "http-alt": 8080, "webcache": 8080,
    "memcached": 11211, "mongodb": 27017,
}

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.+-]{0,31}$")


def lookup_service(name: str) -> int | None:
    """The port number for a service name, or None if unknown."""
    port = SERVICES.get(name.lower())
    if port is not None:
        return port
    if not _NAME_RE.fullmatch(name):
        return None
    try:
        return socket.getservbyname(name)
    except (OSError, ValueError, UnicodeError):
        return None
