"""The cluster configuration model: Piranha's lvs.cf as frozen pydantic models.

Field names are lvs.cf directive names. Each directive's type carries a `Cf` marker saying
how it is spelled in lvs.cf; the reader and writer (cluster.lvscf) derive their tables from
these fields, so a new directive is one new field here. `check()` holds the cross-field
rules (in cluster.config_checks); `config_from_json()` runs pydantic and `check()` for JSON
(e.g. from etcd).
"""

from __future__ import annotations

import ipaddress
import re
import socket
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)

from cluster.given import share_given

IPAddress = IPv4Address | IPv6Address

#: Piranha's values for directives whose effective default the agent picks itself.
PIRANHA_DEFAULTS: dict[str, float] = {"keepalive": 2.0, "deadtime": 5.0}

SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh", "fo", "ovf")
#: Scheduler flags (ipvsadm -b / --sched-flags) and the scheduler each belongs to.
SCHEDULER_FLAGS = {"mh-fallback": "mh", "mh-port": "mh"}


@dataclass(frozen=True)
class Cf:
    """lvs.cf spelling of a model field.

    kind: int, float, bool (0/1), ip, netmask, addrdev ("IP dev:label"), port (number or
    service name), enum, text (rest of line or quoted), escaped (text with \\n etc. also
    when unquoted), word (one token), blocks (a tuple of child blocks named `block`).
    always: the writer emits it even when it equals the default.
    """

    kind: str
    block: str = ""
    always: bool = False


# ---- value types -------------------------------------------------------------------------

def parse_ip(text: str) -> IPAddress:
    """``ipaddress.ip_address(text)``; dotted IPv4 through ``inet_pton`` (the same
    addresses, 10x faster than ipaddress's parser: 40,000 real servers per config)."""
    if ":" not in text:
        try:
            return IPv4Address(socket.inet_pton(socket.AF_INET, text))
        except OSError:
            pass  # ipaddress says why
    return ipaddress.ip_address(text)


def _to_ip(value: Any) -> IPAddress:
    if isinstance(value, IPv4Address | IPv6Address):
        return value
    if isinstance(value, str):
        return parse_ip(value)
    raise ValueError("expected an IP address string")


def _to_netmask(value: Any) -> IPv4Address:
    mask = value if isinstance(value, IPv4Address) else None
    if isinstance(value, str):
        try:
            mask = IPv4Address(value)
        except ValueError:
            mask = None
    if mask is None:
        raise ValueError(f"bad netmask {value!r} (expected dotted quad like 255.255.255.0)")
    bits = int(mask)
    inverted = ~bits & 0xFFFFFFFF
    if inverted & (inverted + 1):
        raise ValueError(f"bad netmask {str(mask)!r} (ones must be contiguous)")
    return mask


def _printable(value: str) -> str:
    for ch in value:
        if ch not in "\t\n\r" and unicodedata.category(ch) in ("Cc", "Cs"):
            raise ValueError(f"control character {ch!r} is not allowed")
    return value


_JSON_STR = PlainSerializer(str, return_type=str, when_used="json")
_DEVICE_RE = r"^[A-Za-z0-9_.-]{1,15}(:[A-Za-z0-9_.-]{1,14})?$"


def _short_label(value: str) -> str:
    if len(value) > 15:
        raise ValueError(f"device label {value!r} is longer than 15 characters")
    return value


IPAddr = Annotated[IPAddress, PlainValidator(_to_ip), _JSON_STR, Cf("ip")]
Netmask = Annotated[IPv4Address, PlainValidator(_to_netmask), _JSON_STR, Cf("netmask")]
Flag = Annotated[bool, Strict(), Cf("bool")]
AlwaysFlag = Annotated[bool, Strict(), Cf("bool", always=True)]
Port = Annotated[int, Strict(), Field(ge=1, le=65535), Cf("port")]
Seconds = Annotated[float, Strict(), Field(gt=0, allow_inf_nan=False), Cf("float")]
Delay = Annotated[float, Strict(), Field(ge=0, allow_inf_nan=False), Cf("float")]
Text = Annotated[str, Strict(), AfterValidator(_printable), Cf("text")]
Escaped = Annotated[str, Strict(), AfterValidator(_printable), Cf("escaped")]
Word = Annotated[str, Strict(), Field(pattern=r"^[A-Za-z0-9_.:/+@-]+$"), Cf("word")]
Device = Annotated[str, Strict(), Field(pattern=_DEVICE_RE), AfterValidator(_short_label),
                   Cf("word")]
Name = Annotated[str, Strict(), Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")]
StatusRanges = Annotated[str, Strict(),
                         Field(pattern=r"^[1-5]\d\d(-[1-5]\d\d)?(,[1-5]\d\d(-[1-5]\d\d)?)*$"),
                         Cf("word")]


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"bad regular expression {value!r}: {exc}") from None
    return value


Regex = Annotated[str, Strict(), AfterValidator(_printable), AfterValidator(_regex), Cf("text")]


def _sched_flags(value: str) -> str:
    """'mh-port,mh-fallback' -> 'mh-fallback,mh-port': known flags, sorted, each once."""
    flags = [f.strip() for f in value.split(",")]
    for flag in flags:
        if flag not in SCHEDULER_FLAGS:
            valid = ", ".join(SCHEDULER_FLAGS)
            raise ValueError(f"unknown scheduler flag {flag!r} (valid: {valid}; "
                             "comma-separated, as ipvsadm -b)")
    return ",".join(sorted(set(flags)))


SchedFlags = Annotated[str, Strict(), AfterValidator(_sched_flags), Cf("word")]


def Int(lo: int, hi: int | None = None, always: bool = False) -> Any:
    """An integer directive with inclusive bounds."""
    return Annotated[int, Strict(), Field(ge=lo, le=hi), Cf("int", always=always)]


def Choice(*values: str) -> Any:
    """An enumerated directive."""
    return Annotated[Literal[values], Cf("enum")]  # type: ignore[valid-type]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def model_post_init(self, context: Any, /) -> None:
        """Models given the same fields share one set of their names (cluster.given)."""
        share_given(self)


class AddrDev(_Model):
    """An "IP dev:label" value; device is the full label ("eth0:1") or None."""

    ip: IPAddr
    device: Device | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: Any) -> Any:
        if isinstance(data, str):
            parts = data.split()
            if not 1 <= len(parts) <= 2:
                raise ValueError(f"expected 'IP [device]', got {data!r}")
            return {"ip": parts[0], "device": parts[1] if len(parts) == 2 else None}
        return data

    @property
    def interface(self) -> str | None:
        """The link the address goes on: "eth0" for "eth0:1"."""
        return self.device.split(":", 1)[0] if self.device else None

    @property
    def label(self) -> str | None:
        """The full address label ("eth0:1"), as given to `ip addr add ... label`."""
        return self.device

    def __str__(self) -> str:
        return f"{self.ip} {self.device}" if self.device else str(self.ip)


Addr = Annotated[AddrDev, Cf("addrdev")]


# ---- blocks ------------------------------------------------------------------------------

class Server(_Model):
    """`server NAME { }` inside a virtual: one real server."""

    name: Name
    address: IPAddr
    active: AlwaysFlag = True
    weight: Int(0, 65535) = 1
    port: Port | None = None  # None: the virtual's port


class Virtual(_Model):
    """`virtual NAME { }`: one virtual service (VIP:port or fwmark) and its real servers."""

    name: Name
    address: Addr
    vip_nmask: Netmask | None = None
    active: AlwaysFlag = True
    sorry_server: IPAddr | None = None
    fwmark: Int(1, 2**32 - 1) | None = None
    protocol: Choice("tcp", "udp") = "tcp"
    port: Port = 80
    scheduler: Choice(*SCHEDULERS) = "wlc"
    scheduler_flags: SchedFlags | None = None  # extension: ipvsadm -b, e.g. mh-fallback,mh-port
    persistent: Int(0) = 0
    pmask: Netmask | None = None
    send: Escaped | None = None
    expect: Escaped | None = None
    use_regex: Flag = False
    send_program: Text | None = None
    timeout: Seconds = 10.0
    reentry: Delay = 180.0
    load_monitor: Choice("uptime", "rup", "ruptime", "none") | None = None
    quiesce_server: Flag = False
    client_monitor: Text | None = None
    # -- extensions: more check kinds and nanny knobs (docs/nanny.md) --
    check: Choice("tcp", "send_expect", "http", "https", "udp", "dns", "external",
                  "none") | None = None  # None: Piranha's rules (send/expect/send_program)
    check_port: Port | None = None  # default: the real server's port
    check_path: Text | None = None  # http(s): request path (default /)
    check_host: Text | None = None  # http(s): Host header
    check_status: StatusRanges | None = None  # http(s): accepted codes (default 200-299)
    check_body: Regex | None = None  # http(s): a regex the body must contain
    check_program: Text | None = None  # external: argv with %h %p; exit 0 up, 1 down, 2+ weight
    dns_name: Word | None = None  # dns: the name to query (default .)
    dns_type: Word | None = None  # dns: the record type (default SOA)
    interval: Seconds | None = None  # between checks (default: timeout, as in Piranha)
    failures: Int(1, 100) = 1  # consecutive failures before a server is taken out
    servers: Annotated[tuple[Server, ...], Cf("blocks", block="server")] = ()

    def effective_port(self, server: Server) -> int:
        """The port traffic goes to on `server` (its own, else the virtual's)."""
        return server.port if server.port is not None else self.port

    @property
    def sched_flags(self) -> frozenset[str]:
        """The scheduler flags given (``scheduler_flags``), as a set."""
        return frozenset(self.scheduler_flags.split(",")) if self.scheduler_flags else frozenset()


class Failover(_Model):
    """`failover NAME { }`: a service that moves between routers (service = fos)."""

    name: Name
    address: Addr
    vip_nmask: Netmask | None = None
    active: AlwaysFlag = True
    port: Port = 80
    send: Escaped | None = None
    expect: Escaped | None = None
    timeout: Seconds = 10.0
    reentry: Delay = 180.0
    start_cmd: Text
    stop_cmd: Text


class Router(_Model):
    """`router NAME { }` (our extension): one LVS router; higher priority is preferred."""

    name: Name
    address: IPAddr
    private: IPAddr | None = None
    priority: Int(0, 65535) = 100
    active: AlwaysFlag = True


class LvsConfig(_Model):
    """The whole lvs.cf: global directives and the router, virtual and failover blocks."""

    serial_no: Int(0, always=True) = 0
    service: Choice("lvs", "fos") = "lvs"
    primary: IPAddr | None = None
    primary_private: IPAddr | None = None
    primary_shared: Text | None = None
    backup: IPAddr | None = None
    backup_private: IPAddr | None = None
    backup_shared: Text | None = None
    backup_active: Flag = False
    heartbeat: Flag = False
    heartbeat_port: Port = 539
    keepalive: Seconds | None = None  # None: not given (Piranha: 2)
    deadtime: Seconds | None = None  # None: not given (Piranha: 5)
    network: Choice("nat", "direct", "tunnel") = "nat"
    nat_router: Addr | None = None
    nat_nmask: Netmask | None = None
    reservation_conflict_action: Choice("nothing", "preempt") | None = None
    debug_level: Word = "NONE"
    rsh_command: Choice("rsh", "ssh") = "rsh"
    ipvsadm: Text = "/sbin/ipvsadm"
    monitor_links: Flag = False
    active_cmd: Text | None = None
    inactive_cmd: Text | None = None
    hard_shutdown: Flag = True
    syncdaemon: Flag = False
    syncd_iface: Device = "eth0"
    syncd_id: Int(0, 255) = 0
    tcp_timeout: Int(0) = 0
    tcpfin_timeout: Int(0) = 0
    udp_timeout: Int(0) = 0
    # -- extensions (pulse on etcd); see docs/lvs-cf.md and docs/protocol.md --
    lease_ttl: Int(1, 300) = 2  # etcd lease TTL, seconds
    ack_window: Seconds | None = None  # failsafe acknowledgement window (default deadtime)
    safety_margin: Seconds | None = None  # off every deadline (default min(0.25, deadtime/4))
    hold_down: Delay = 5.0  # preempt: healthy this long before taking over
    sync_warmup: Delay = 10.0  # preempt: connection sync received this long before taking over
    fast_eviction: Flag = False  # backups that all lost the active revoke its lease
    garp_count: Int(0, 100) = 5  # gratuitous ARPs / NAs in the burst at takeover
    garp_interval: Delay = 0.2  # spacing of the packets of a burst
    garp_delay: Delay = 5.0  # a second burst this long after takeover (0 = none)
    garp_refresh: Delay = 0.0  # periodic re-announcement while active (0 = off)
    health_policy: Choice("active", "majority") = "active"  # whose checks decide
    full_nat: Flag = False  # nftables: masquerade, for real servers not routed via us
    resume_connections: Flag = True  # nudge synced connections to retransmit at takeover
    routers: Annotated[tuple[Router, ...], Cf("blocks", block="router")] = ()
    virtuals: Annotated[tuple[Virtual, ...], Cf("blocks", block="virtual")] = ()
    failovers: Annotated[tuple[Failover, ...], Cf("blocks", block="failover")] = ()

    @field_validator("primary_private", "backup", "backup_private")
    @classmethod
    def _unset_if_unspecified(cls, value: IPAddress | None) -> IPAddress | None:
        """Piranha writes `backup = 0.0.0.0` for "no backup": read it as not set."""
        return None if value is not None and value.is_unspecified else value

    def virtual(self, name: str) -> Virtual:
        """The virtual named `name`; KeyError if there is none."""
        for v in self.virtuals:
            if v.name == name:
                return v
        raise KeyError(name)

    def floating(self) -> tuple[tuple[str, AddrDev, Netmask | None], ...]:
        """Every address the active router holds, once each: (what, address, netmask) of
        the active virtuals' VIPs and, with NAT, the nat_router."""
        out: dict[str, tuple[str, AddrDev, Netmask | None]] = {}
        if self.service == "lvs":
            for v in self.virtuals:
                if v.active:
                    out.setdefault(str(v.address.ip), (f"virtual {v.name}", v.address,
                                                       v.vip_nmask))
            if self.nat_router is not None and self.network == "nat":
                out.setdefault(str(self.nat_router.ip),
                               ("nat_router", self.nat_router, self.nat_nmask))
        return tuple(out.values())

    def effective_routers(self) -> tuple[Router, ...]:
        """The router blocks, or routers `primary` (200) and `backup` (100) from the globals."""
        if self.routers:
            return self.routers
        out: list[Router] = []
        if self.primary is not None:
            out.append(Router(name="primary", address=self.primary,
                              private=self.primary_private, priority=200))
        if self.backup is not None:
            out.append(Router(name="backup", address=self.backup, private=self.backup_private,
                              priority=100, active=self.backup_active))
        return tuple(out)


# ---- problems ----------------------------------------------------------------------------

Path = tuple[str | int, ...]


def dotted(path: Path) -> str:
    """('virtuals', 0, 'port') -> 'virtuals.0.port' ('<root>' for the empty path)."""
    return ".".join(str(p) for p in path) or "<root>"


@dataclass(frozen=True)
class Problem:
    """A problem at a model path; `other` is a related earlier path (e.g. the first duplicate)."""

    path: Path
    message: str
    other: Path | None = None

    def __str__(self) -> str:
        also = f" (first defined at {dotted(self.other)})" if self.other is not None else ""
        return f"config: {dotted(self.path)}: {self.message}{also}"


class ConfigError(Exception):
    """A configuration was rejected; `problems` lists every reason (str() gives one a line)."""

    def __init__(self, problems: Sequence[object]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def describe(err: dict[str, Any], name: str) -> str:
    """A readable message for one pydantic error on directive `name`."""
    kind, ctx, value = err.get("type", ""), err.get("ctx") or {}, err.get("input")
    if kind == "missing":
        return f"missing required directive '{name}'"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        words = {"greater_than_equal": "at least", "less_than_equal": "at most",
                 "greater_than": "greater than", "less_than": "less than"}[kind]
        limit = next(iter(ctx.values()), "?")
        return f"'{name}' must be {words} {limit}, got {value!r}"
    if kind == "literal_error":
        return f"bad {name} {value!r} (valid: {ctx.get('expected', '').replace(chr(39), '')})"
    if kind == "string_pattern_mismatch":
        return f"bad {name} {value!r}"
    if kind == "extra_forbidden":
        return f"unknown directive '{name}'"
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"'{name}': {msg}" if name else msg


def config_from_json(obj: Any) -> LvsConfig:
    """Validate decoded JSON (or a JSON str/bytes) into an LvsConfig; ConfigError on problems."""
    try:
        if isinstance(obj, str | bytes | bytearray):
            cfg = LvsConfig.model_validate_json(obj)
        else:
            cfg = LvsConfig.model_validate(obj)
    except ValidationError as exc:
        raise ConfigError([_pydantic_problem(e) for e in exc.errors(include_url=False)]) from None
    from .config_checks import check  # the checks need these models

    problems = check(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg


def virtual_from_json(obj: Any, index: int) -> Virtual:
    """Validate one virtual service (the ``index``-th of its config) on its own, so that a
    large config can be validated a virtual at a time; ConfigError with paths from the
    config's root (``virtuals.3.port``)."""
    try:
        return Virtual.model_validate(obj)
    except ValidationError as exc:
        problems = [_pydantic_problem(e) for e in exc.errors(include_url=False)]
        raise ConfigError([Problem(("virtuals", index, *p.path), p.message)
                           for p in problems]) from None


def config_from_virtuals(globals_: dict[str, Any], virtuals: Sequence[Virtual]) -> LvsConfig:
    """:func:`config_from_json` of ``globals_`` plus virtuals validated already."""
    return config_from_json({**globals_, "virtuals": list(virtuals)})


def _pydantic_problem(err: Any) -> Problem:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and re.match(r"^[a-z-]+\[", p)))
    name = next((p for p in reversed(loc) if isinstance(p, str)), "")
    return Problem(loc, describe(err, name))
