"""How to check one real server: a frozen, validated value.

A :class:`CheckSpec` is checked once at construction: a bad regex, port or address raises
:class:`SpecError` there, never later inside a check. The agent maps lvs.cf to these values
(:func:`piranha_check` applies Piranha's own rules for that).
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from dataclasses import dataclass, field
from typing import Literal

from agent.nanny.dnswire import encode_name, qtype_number, rcode_number
from agent.nanny.httpwire import parse_status_ranges
from agent.nanny.match import Expect

Kind = Literal[
    "tcp", "send_expect", "http", "https", "udp", "dns", "program", "external", "none"
]
KINDS: tuple[str, ...] = Kind.__args__  # type: ignore[attr-defined]
_SOCKET_KINDS = frozenset({"tcp", "send_expect", "http", "https", "udp", "dns"})
_ARGV_KINDS = frozenset({"program", "external"})
HTTP_DEFAULT_SEND = b"GET / HTTP/1.0\r\n\r\n"  # Piranha's probe for port 80
HTTP_DEFAULT_EXPECT = "HTTP"


class SpecError(ValueError):
    """A check specification that cannot work, with a message fit for an operator."""


@dataclass(frozen=True, slots=True)
class CheckSpec:
    """How to check one real server.

    ``timeout`` bounds one check (connect plus read). ``interval`` is the pause between the end
    of one check and the start of the next; ``None`` means ``timeout``, as in Piranha where the
    one ``timeout`` setting is both. ``weight`` is the configured weight: the weight reported
    while up unless a dynamic check (``external`` exit codes, ``load_monitor``) changes it.
    ``argv`` is the command of ``program`` and ``external`` checks; ``%h`` and ``%p`` in any
    argument become the host and port (``%%`` is a literal ``%``). No shell is involved.
    """

    kind: Kind = "tcp"
    host: str = "127.0.0.1"
    port: int = 0
    timeout: float = 10.0
    interval: float | None = None
    weight: int = 1
    # send_expect, udp, program
    send: bytes | None = None
    expect: str | None = None
    use_regex: bool = False
    # program, external
    argv: tuple[str, ...] = ()
    # http, https
    http_path: str = "/"
    http_host: str | None = None
    http_status: str = "200-299"
    http_body: str | None = None
    tls_verify: bool = False
    # dns
    dns_name: str = "."
    dns_type: str = "SOA"
    dns_rcode: str = "NOERROR"
    dns_need_answer: bool = False
    # load monitor (any kind): argv template whose output holds a load average
    load_monitor: tuple[str, ...] | None = None
    load_interval: float = 20.0
    load_full: float = 1.0
    # derived at construction
    family: int = field(init=False, repr=False, compare=False)
    sockaddr: tuple = field(init=False, repr=False, compare=False)
    matcher: Expect | None = field(init=False, repr=False, compare=False)
    status_ranges: tuple[tuple[int, int], ...] = field(init=False, repr=False, compare=False)
    body_regex: re.Pattern[bytes] | None = field(init=False, repr=False, compare=False)
    qtype: int = field(init=False, repr=False, compare=False)
    rcode: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_basics(self)
        derived = {
            "family": socket.AF_INET,
            "sockaddr": (self.host, self.port),
            "matcher": None,
            "status_ranges": (),
            "body_regex": None,
            "qtype": 0,
            "rcode": 0,
        }
        if self.kind != "none":
            ip = _ip(self.host)
            if ip.version == 6:
                derived["family"] = socket.AF_INET6
                derived["sockaddr"] = (self.host, self.port, 0, 0)
        if self.expect is not None:
            derived["matcher"] = _compile_expect(self.expect, self.use_regex)
        if self.kind in ("http", "https"):
            derived.update(_http_parts(self))
        if self.kind == "dns":
            derived.update(_dns_parts(self))
        for name, value in derived.items():
            object.__setattr__(self, name, value)

    @property
    def every(self) -> float:
        """Seconds from the end of one check to the start of the next."""
        return self.timeout if self.interval is None else self.interval

    def expand(self, template: tuple[str, ...]) -> tuple[str, ...]:
        """``template`` with ``%h``, ``%p`` and ``%%`` replaced in every argument."""
        return tuple(_expand(arg, self.host, self.port) for arg in template)


def _check_basics(spec: CheckSpec) -> None:
    if spec.kind not in KINDS:
        raise SpecError(f"unknown check kind {spec.kind!r} (one of {', '.join(KINDS)})")
    if isinstance(spec.port, bool) or not isinstance(spec.port, int):
        raise SpecError(f"port must be an integer, not {spec.port!r}")
    low = 1 if spec.kind in _SOCKET_KINDS else 0
    if not low <= spec.port <= 65535:
        raise SpecError(f"port {spec.port} out of range {low}..65535 for a {spec.kind} check")
    _positive("timeout", spec.timeout)
    if spec.interval is not None:
        _positive("interval", spec.interval)
    if isinstance(spec.weight, bool) or not isinstance(spec.weight, int) or spec.weight < 0:
        raise SpecError(f"weight must be an integer >= 0, not {spec.weight!r}")
    if spec.send is not None and not isinstance(spec.send, bytes):
        raise SpecError(f"send must be bytes (escapes decoded), not {type(spec.send).__name__}")
    if spec.expect is not None and (not isinstance(spec.expect, str) or spec.expect == ""):
        raise SpecError("expect must be a non-empty string or None")
    if spec.kind in _ARGV_KINDS:
        _argv("argv", spec.argv)
    if spec.load_monitor is not None:
        _argv("load_monitor", spec.load_monitor)
        _positive("load_interval", spec.load_interval)
        _positive("load_full", spec.load_full)


def _positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise SpecError(f"{name} must be a number of seconds > 0, not {value!r}")


def _argv(name: str, argv: object) -> None:
    if not isinstance(argv, tuple) or not argv or not all(isinstance(a, str) for a in argv):
        raise SpecError(f"{name} must be a non-empty tuple of strings, not {argv!r}")
    if argv[0] == "":
        raise SpecError(f"{name}: empty program name")


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        raise SpecError(f"host must be an IP address, not {host!r}") from None


@functools.lru_cache(maxsize=1024)
def _compile_expect(text: str, regex: bool) -> Expect:
    """The compiled expect string, one shared by every check that expects the same (it has
    no state): 40,000 servers of a few virtuals compile a few."""
    try:
        return Expect(text, regex)
    except re.error as exc:
        raise SpecError(f"bad expect regex {text!r}: {exc}") from None


def _http_parts(spec: CheckSpec) -> dict[str, object]:
    if not spec.http_path.startswith("/") or any(c in spec.http_path for c in " \r\n\t"):
        raise SpecError(f"http_path must start with '/' and hold no blanks: {spec.http_path!r}")
    host = spec.http_host
    if host is not None and (not host or any(c in host for c in " \r\n\t")):
        raise SpecError(f"bad http_host {spec.http_host!r}")
    try:
        ranges = parse_status_ranges(spec.http_status)
    except ValueError as exc:
        raise SpecError(str(exc)) from None
    body = None
    if spec.http_body is not None:
        try:
            body = re.compile(spec.http_body.encode("utf-8"))
        except re.error as exc:
            raise SpecError(f"bad http_body regex {spec.http_body!r}: {exc}") from None
    return {"status_ranges": ranges, "body_regex": body}


def _dns_parts(spec: CheckSpec) -> dict[str, object]:
    try:
        encode_name(spec.dns_name)
        return {"qtype": qtype_number(spec.dns_type), "rcode": rcode_number(spec.dns_rcode)}
    except ValueError as exc:
        raise SpecError(str(exc)) from None


def _expand(arg: str, host: str, port: int) -> str:
    out = []
    i = 0
    while i < len(arg):
        if arg[i] == "%" and i + 1 < len(arg) and arg[i + 1] in "hp%":
            out.append({"h": host, "p": str(port), "%": "%"}[arg[i + 1]])
            i += 2
        else:
            out.append(arg[i])
            i += 1
    return "".join(out)


def piranha_check(
    host: str,
    port: int,
    timeout: float = 10.0,
    *,
    protocol: Literal["tcp", "udp"] = "tcp",
    send: bytes | None = None,
    expect: str | None = None,
    use_regex: bool = False,
    send_program: tuple[str, ...] | None = None,
    weight: int = 1,
    load_monitor: tuple[str, ...] | None = None,
) -> CheckSpec:
    """The check Piranha's nanny would run for a real server of lvs.cf.

    ``send_program`` wins (its output is matched against ``expect``); UDP services get a
    datagram check; TCP services with neither ``send`` nor ``expect`` get a plain connect,
    except on port 80 where nanny sent ``GET / HTTP/1.0`` (here expecting ``HTTP`` back).
    """
    if send_program:
        kind: Kind = "program"
    elif protocol == "udp":
        kind = "udp"
    elif send is None and expect is None and port != 80:
        kind = "tcp"
    else:
        kind = "send_expect"
    if kind == "send_expect" and send is None and expect is None:
        send, expect = HTTP_DEFAULT_SEND, HTTP_DEFAULT_EXPECT
    return CheckSpec(
        kind=kind, host=host, port=port, timeout=timeout, weight=weight, send=send,
        expect=expect, use_regex=use_regex, argv=tuple(send_program or ()),
        load_monitor=load_monitor,
    )
