"""keepalived.conf -> lvs.cf: ``lvsctl config import`` (docs/migrating.md).

Converts ``virtual_server`` / ``real_server`` with their checkers (TCP_CHECK, HTTP_GET,
SSL_GET, MISC_CHECK, DNS_CHECK, UDP_CHECK), ``vrrp_instance`` (VIPs: the virtual services'
addresses and the NAT router; this router, its unicast peers, priority, timers, notify
scripts) and what of ``global_defs`` lvs.cf can say. Strict where keepalived only warns:
an unknown keyword, or one whose meaning lvs.cf cannot carry, is an error as FILE:LINE;
keywords that change nothing on the data path (e-mail, SNMP names, the VRRP router id)
are dropped with a warning. Each file is one router's keepalived.conf; give the files of
all routers to get every router's priority (peers known only from ``unicast_peer`` get
lower priorities, with a warning). The result is lvs.cf text that our own reader accepts
and the routers can run (:func:`cluster.lvscf.parse` with ``runnable=True``), or errors.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cluster import lvscf
from cluster.model import SCHEDULERS, ConfigError, config_from_json

from .syntax import Stmt, SyntaxProblem, parse

# keepalived's defaults (keepalived.conf(5)).
DELAY_LOOP = 60.0
CONNECT_TIMEOUT = 5.0
RETRY = {"DNS_CHECK": 3, "MISC_CHECK": 0}  # others: 1
PERSISTENCE_TIMEOUT = 360
ADVERT_INT = 1.0

#: Dropped with a warning: nothing on the data path depends on them.
IGNORED = {
    "global_defs": {"notification_email", "notification_email_from", "smtp_server",
                    "smtp_connect_timeout", "smtp_helo_name", "enable_script_security",
                    "script_user", "max_auto_priority", "vrrp_skip_check_adv_addr",
                    "vrrp_strict", "snmp_socket", "enable_traps", "enable_snmp_vrrp",
                    "enable_snmp_checker", "enable_snmp_rfc", "checker_log_all_failures",
                    "vrrp_version"},
    "vrrp_instance": {"state", "virtual_router_id", "smtp_alert", "dont_track_primary",
                      "authentication", "version", "garp_lower_prio_repeat",
                      "garp_lower_prio_delay", "check_unicast_src", "debug"},
    "virtual_server": {"smtp_alert", "snmp_name", "alpha", "omega", "warmup",
                       "delay_before_retry"},
    "real_server": {"smtp_alert", "snmp_name", "alpha", "warmup", "delay_before_retry"},
    "checker": {"alpha", "warmup", "delay_before_retry", "log_all_failures",
                "http_protocol", "fast_recovery", "enable_sni", "user"},
}

#: Known to keepalived, with no equivalent in lvs.cf: errors, with the reason.
UNSUPPORTED = {
    "include": "include is not supported: give every file on the command line",
    "vrrp_script": "router health scripts have no equivalent (a router's fitness is its "
                   "agent's liveness; monitor_links watches its links)",
    "track_script": "router health scripts have no equivalent",
    "track_file": "tracking files has no equivalent", "track_process": "no equivalent",
    "track_bfd": "no equivalent (pulse's own heartbeat does this)",
    "virtual_server_group": "virtual server groups are not supported: one virtual_server "
                            "per address and port",
    "static_ipaddress": "static addresses are not pulse's: configure them on the host",
    "static_routes": "static routes are not pulse's: configure them on the host",
    "static_rules": "static rules are not pulse's: configure them on the host",
    "virtual_routes": "routes that follow the VIPs are not supported",
    "virtual_rules": "rules that follow the VIPs are not supported",
    "virtual_ipaddress_excluded": "excluded VIPs are not supported: list them in "
                                  "virtual_ipaddress",
    "notify": "notify scripts with a state argument are not supported: use notify_master "
              "and notify_backup (active_cmd, inactive_cmd)",
    "notify_fault": "there is no FAULT state", "notify_stop": "not supported",
    "notify_master_rx_lower_pri": "not supported",
    "notify_up": "per real server notify scripts are not supported",
    "notify_down": "per real server notify scripts are not supported",
    "quorum": "quorum is not supported", "quorum_up": "quorum is not supported",
    "quorum_down": "quorum is not supported", "hysteresis": "quorum is not supported",
    "ha_suspend": "not supported", "ops": "one-packet scheduling is not supported",
    "persistence_engine": "persistence engines are not supported",
    "sorry_server_inhibit": "not supported", "sorry_server_lvs_method": "not supported",
    "uthreshold": "connection thresholds are not supported",
    "lthreshold": "connection thresholds are not supported",
    "lvs_method": "a per real server forwarding method is not supported (lvs.cf has one "
                  "network for all)",
    "connect_ip": "checks connect to the real server's own address",
    "bindto": "a check's source address cannot be set", "bind_port": "cannot be set",
    "bind_if": "cannot be set", "fwmark": "marking check packets is not supported",
    "digest": "digests are not supported: use regex (lvs.cf check_body)",
    "regex_no_match": "not supported", "regex_options": "not supported",
    "SMTP_CHECK": "no SMTP check kind: use MISC_CHECK", "PING_CHECK": "no ICMP check kind",
    "BFD_CHECK": "no BFD check kind", "FILE_CHECK": "no file check kind",
    "payload": "UDP_CHECK payloads are not supported",
    "require_reply": "UDP_CHECK replies are not checked",
    "unicast_ttl": "not supported", "mcast_src_ip": "multicast VRRP has no equivalent: "
                                                    "use unicast_src_ip",
    "use_vmac": "virtual MACs are not supported", "vmac_xmit_base": "not supported",
    "native_ipv6": "not supported", "accept": "not supported", "no_accept": "not supported",
}

CHECKERS = {"TCP_CHECK": "tcp", "HTTP_GET": "http", "SSL_GET": "https",
            "MISC_CHECK": "external", "DNS_CHECK": "dns", "UDP_CHECK": "udp"}
NETWORKS = {"NAT": "nat", "DR": "direct", "TUN": "tunnel"}
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


@dataclass
class Result:
    """lvs.cf ``text`` (None on any error); ``errors`` and ``warnings`` as FILE:LINE: message."""

    text: str | None
    errors: list[str]
    warnings: list[str]


@dataclass
class Vip:
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    prefix: int
    device: str  # "eth0" or "eth0:1" (device and label)
    where: str


@dataclass
class RouterFile:
    """What one keepalived.conf says about its router."""

    file: str
    name: str | None = None
    address: str | None = None
    priority: int | None = None
    peers: list[str] = field(default_factory=list)
    where: str = ""
    given: str | None = None  # the address from the command line (multicast VRRP)


class Converter:
    def __init__(self) -> None:
        self.errors: list[tuple[str, int, str]] = []
        self.warnings: list[tuple[str, int, str]] = []
        self.globals: dict[str, Any] = {}
        self.globals_where: dict[str, str] = {}
        self.vips: dict[str, Vip] = {}
        self.virtuals: dict[str, tuple[dict[str, Any], Stmt]] = {}
        self.routers: list[RouterFile] = []
        self.networks: dict[str, str] = {}  # network -> where first seen

    # -- reporting -----------------------------------------------------------------------

    def error(self, st: Stmt, message: str) -> None:
        self.errors.append((st.file, st.line, message))

    def warn(self, st: Stmt, message: str) -> None:
        self.warnings.append((st.file, st.line, f"warning: {message}"))

    def unknown(self, st: Stmt, block: str) -> None:
        if st.key in UNSUPPORTED:
            self.error(st, f"'{st.key}' ({block}) is not supported: {UNSUPPORTED[st.key]}")
        elif st.key in IGNORED.get(block, ()):
            self.warn(st, f"'{st.key}' ({block}) ignored: nothing in lvs.cf depends on it")
        else:
            self.error(st, f"unknown keyword '{st.key}' in {block}")

    def nargs(self, st: Stmt, low: int, high: int | None = None) -> bool:
        n = len(st.args)
        if n < low or (high is not None and n > high):
            want = str(low) if high == low else f"{low}..{'' if high is None else high}"
            self.error(st, f"'{st.key}' takes {want} value(s), got {n}")
            return False
        return True

    def number(self, st: Stmt, value: str, kind: Callable[[str], Any] = float,
               low: float = 0) -> Any:
        try:
            out = kind(value)
        except ValueError:
            self.error(st, f"'{st.key}': not a number: {value!r}")
            return None
        if out < low:
            self.error(st, f"'{st.key}' must be at least {low:g}, got {value}")
            return None
        return out

    def ip(self, st: Stmt, value: str) -> str | None:
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            self.error(st, f"'{st.key}': not an IP address: {value!r} (hostnames are not "
                       "resolved)")
            return None

    def setglobal(self, st: Stmt, key: str, value: object) -> None:
        """One value of the whole lvs.cf; two files (or blocks) that disagree are an error."""
        if key in self.globals and self.globals[key] != value:
            self.error(st, f"'{st.key}' gives {key} = {value}, but {self.globals_where[key]} "
                       f"gave {self.globals[key]} (lvs.cf has one for all)")
            return
        self.globals[key] = value
        self.globals_where.setdefault(key, st.where)

    def block(self, st: Stmt) -> list[Stmt]:
        if st.block is None:
            self.error(st, f"'{st.key}' needs a block {{ ... }}")
            return []
        return st.block

    # -- files ---------------------------------------------------------------------------

    def file(self, text: str, name: str, address: str | None = None) -> None:
        """One router's file; ``address``: its address where the file has no
        ``unicast_src_ip`` (multicast VRRP)."""
        try:
            stmts = parse(text, name)
        except SyntaxProblem as exc:
            self.errors.append((exc.file, exc.line, exc.message))
            return
        router = RouterFile(name, given=address)
        self.routers.append(router)
        instances = []
        for st in stmts:
            if st.key.startswith(("@", "$")):
                self.error(st, "conditional lines and parameters (@..., $...) are not "
                           "supported: expand them first")
            elif st.key == "global_defs":
                self.global_defs(st, router)
            elif st.key == "vrrp_instance":
                instances.append(st)
            elif st.key == "vrrp_sync_group":
                self.sync_group(st)
            elif st.key == "virtual_server":
                self.virtual_server(st)
            else:
                self.unknown(st, "the top level")
        for st in instances:
            self.vrrp_instance(st, router)

    def global_defs(self, st: Stmt, router: RouterFile) -> None:
        for s in self.block(st):
            if s.key == "router_id" and self.nargs(s, 1, 1):
                if NAME.match(s.args[0]):
                    router.name = s.args[0]
                else:
                    self.warn(s, f"router_id {s.args[0]!r} is not an lvs.cf name: "
                              "the router gets a generated one")
            elif s.key == "lvs_sync_daemon" and self.nargs(s, 2, 4):
                self.setglobal(s, "syncdaemon", True)
                self.setglobal(s, "syncd_iface", s.args[0])
                if len(s.args) == 4 and s.args[2] == "id":
                    syncid = self.number(s, s.args[3], int)
                    if syncid is not None:
                        self.setglobal(s, "syncd_id", syncid)
                elif len(s.args) > 2:
                    self.error(s, "lvs_sync_daemon: expected 'IFACE INSTANCE [id N]'")
            elif s.key in ("vrrp_garp_master_delay", "vrrp_garp_master_repeat",
                           "vrrp_garp_master_refresh", "vrrp_garp_interval"):
                self.garp(s, s.key.removeprefix("vrrp_"))
            else:
                self.unknown(s, "global_defs")

    def garp(self, s: Stmt, key: str) -> None:
        if not self.nargs(s, 1, 1):
            return
        target = {"garp_master_delay": "garp_delay", "garp_master_repeat": "garp_count",
                  "garp_master_refresh": "garp_refresh", "garp_interval": "garp_interval"}[key]
        value = self.number(s, s.args[0], int if target == "garp_count" else float)
        if value is not None:
            self.setglobal(s, target, value)

    def sync_group(self, st: Stmt) -> None:
        """All VIPs move together in lvs.cf anyway: the group itself says nothing more."""
        for s in self.block(st):
            if s.key in ("notify_master", "notify_backup") and self.nargs(s, 1):
                target = "active_cmd" if s.key == "notify_master" else "inactive_cmd"
                self.setglobal(s, target, " ".join(s.args))
            elif s.key != "group" and (s.block is not None or s.args or s.key in UNSUPPORTED
                                       or not re.match(r"^[A-Za-z0-9_.-]+$", s.key)):
                self.unknown(s, "vrrp_sync_group")  # a bare word: an old-style member name

    # -- vrrp_instance -------------------------------------------------------------------

    def vrrp_instance(self, st: Stmt, router: RouterFile) -> None:
        interface: str | None = None
        body = self.block(st)
        for s in body:  # first: the interface the VIPs default to
            if s.key == "interface" and self.nargs(s, 1, 1):
                interface = s.args[0]
        preempt = True
        for s in body:
            k = s.key
            if k == "interface":
                continue
            if k == "priority" and self.nargs(s, 1, 1):
                prio = self.number(s, s.args[0], int, 1)
                if prio is not None:
                    if router.priority is not None and router.priority != prio:
                        self.error(s, f"priority {prio} differs from this router's other "
                                   f"vrrp_instance ({router.priority}): lvs.cf has one "
                                   "active router for every VIP")
                    router.priority = prio
            elif k == "advert_int" and self.nargs(s, 1, 1):
                advert = self.number(s, s.args[0])
                if advert is not None and advert > 0:
                    self.setglobal(s, "keepalive", advert)
                    self.setglobal(s, "deadtime", advert * 3)  # VRRP's master down interval
            elif k == "unicast_src_ip" and self.nargs(s, 1, 1):
                address = self.ip(s, s.args[0])
                if router.address not in (None, address):
                    self.error(s, f"unicast_src_ip {address} differs from this router's "
                               f"other vrrp_instance ({router.address})")
                router.address, router.where = address, s.where
            elif k == "unicast_peer":
                for p in self.block(s):
                    if len(p.words) != 1:
                        self.error(p, "unicast_peer: one address per line (min_ttl/max_ttl "
                                   "are not supported)")
                    elif (addr := self.ip(p, p.key)) and addr not in router.peers:
                        router.peers.append(addr)
            elif k == "virtual_ipaddress":
                for v in self.block(s):
                    self.vip(v, interface)
            elif k == "nopreempt" and self.nargs(s, 0, 0):
                preempt = False
            elif k == "preempt" and self.nargs(s, 0, 0):
                preempt = True
            elif k == "preempt_delay" and self.nargs(s, 1, 1):
                delay = self.number(s, s.args[0])
                if delay is not None:
                    self.setglobal(s, "hold_down", delay)
            elif k in ("notify_master", "notify_backup") and self.nargs(s, 1):
                target = "active_cmd" if k == "notify_master" else "inactive_cmd"
                self.setglobal(s, target, " ".join(s.args))
            elif k == "track_interface":
                self.block(s)
                self.setglobal(s, "monitor_links", True)
                self.warn(s, "track_interface: monitor_links = 1 watches all of the "
                          "router's links, not only these")
            elif k == "lvs_sync_daemon_interface" and self.nargs(s, 1, 1):
                self.setglobal(s, "syncdaemon", True)
                self.setglobal(s, "syncd_iface", s.args[0])
            elif k in ("garp_master_delay", "garp_master_repeat", "garp_master_refresh",
                       "garp_interval"):
                self.garp(s, k)
            else:
                self.unknown(s, "vrrp_instance")
        self.setglobal(st, "reservation_conflict_action", "preempt" if preempt else None)
        if router.address is None and router.given is not None:
            router.address, router.where = router.given, st.where
        if router.address is None:
            self.error(st, f"vrrp_instance {' '.join(st.args)}: no unicast_src_ip: lvs.cf "
                       "names every router by its address (multicast VRRP has none to "
                       "read): give it with --address, in the order of the files")

    def vip(self, v: Stmt, interface: str | None) -> None:
        address, _, prefix = v.key.partition("/")
        ip = self.ip(v, address)
        if ip is None:
            return
        addr = ipaddress.ip_address(ip)
        try:
            bits = int(prefix) if prefix else addr.max_prefixlen
            if not 0 < bits <= addr.max_prefixlen:
                raise ValueError
        except ValueError:
            self.error(v, f"bad prefix length {prefix!r}")
            return
        dev, label, words = interface, None, v.args
        i = 0
        while i < len(words):
            if words[i] in ("dev", "label", "brd", "scope") and i + 1 < len(words):
                if words[i] == "dev":
                    dev = words[i + 1]
                elif words[i] == "label":
                    label = words[i + 1]
                elif words[i] == "scope" and words[i + 1] != "global":
                    self.error(v, f"scope {words[i + 1]}: only global VIPs are supported")
                i += 2
            else:
                self.error(v, f"virtual_ipaddress: unknown option {words[i]!r}")
                return
        if dev is None:
            self.error(v, f"VIP {ip}: no device (no 'dev' and no interface in the instance)")
            return
        if label is not None and not label.startswith(dev + ":"):
            self.error(v, f"VIP {ip}: label {label!r} must be {dev}:SOMETHING")
            return
        if ip in self.vips:
            old = self.vips[ip]
            if (old.prefix, old.device) != (bits, label or dev):
                self.error(v, f"VIP {ip} differs from {old.where}")
            return
        self.vips[ip] = Vip(addr, bits, label or dev, v.where)

    # -- virtual_server ------------------------------------------------------------------

    def virtual_server(self, st: Stmt) -> None:
        if not st.args or st.args[0] in ("fwmark", "group"):
            self.error(st, f"virtual_server {' '.join(st.args)}: only 'virtual_server IP "
                       "PORT' is supported (a fwmark or group has no address for lvs.cf)")
            return
        if not self.nargs(st, 2, 2):
            return
        ip = self.ip(st, st.args[0])
        port = self.number(st, st.args[1], int, 1)
        if ip is None or port is None:
            return
        v: dict[str, Any] = {"name": f"vs_{ip.replace(':', '-')}_{port}", "port": port,
                             "address": {"ip": ip}}
        defaults: dict[str, Any] = {}  # checker settings given at the virtual level
        network = "nat"
        reals: list[Stmt] = []
        for s in self.block(st):
            k = s.key
            if k in ("lb_algo", "lvs_sched") and self.nargs(s, 1, 1):
                if s.args[0] not in SCHEDULERS:
                    self.error(s, f"scheduler {s.args[0]!r} is not supported "
                               f"({', '.join(SCHEDULERS)})")
                v["scheduler"] = s.args[0]
            elif k in ("lb_kind", "lvs_method") and self.nargs(s, 1):
                if s.args[0].upper() not in NETWORKS or len(s.args) > 1:
                    self.error(s, f"{k} {' '.join(s.args)}: NAT, DR or TUN (ipip) only")
                else:
                    network = NETWORKS[s.args[0].upper()]
            elif k in ("mh-port", "mh-fallback") and self.nargs(s, 0, 0):
                v.setdefault("scheduler_flags", []).append(k)
            elif k == "persistence_timeout" and self.nargs(s, 0, 1):
                secs = self.number(s, s.args[0], int, 1) if s.args else PERSISTENCE_TIMEOUT
                v["persistent"] = secs
            elif k == "persistence_granularity" and self.nargs(s, 1, 1):
                v["pmask"] = s.args[0]
            elif k == "protocol" and self.nargs(s, 1, 1):
                if s.args[0].upper() not in ("TCP", "UDP"):
                    self.error(s, f"protocol {s.args[0]}: TCP or UDP only")
                v["protocol"] = s.args[0].lower()
            elif k == "sorry_server" and self.nargs(s, 1, 2):
                v["sorry_server"] = self.ip(s, s.args[0])
                if len(s.args) == 2 and s.args[1] != str(port):
                    self.error(s, f"sorry_server port {s.args[1]}: lvs.cf sends the sorry "
                               f"server the virtual's port ({port})")
            elif k == "virtualhost" and self.nargs(s, 1, 1):
                defaults["virtualhost"] = s.args[0]
            elif k in ("delay_loop", "connect_timeout", "retry", "nb_get_retry") \
                    and self.nargs(s, 1, 1):
                defaults[k] = s
            elif k == "inhibit_on_failure":
                defaults["inhibit"] = s
            elif k == "real_server":
                reals.append(s)
            else:
                self.unknown(s, "virtual_server")
        if network not in self.networks:
            self.networks[network] = st.where
        if len(self.networks) > 1:
            self.error(st, f"virtual_server uses {network}, but lvs.cf has one network for "
                       f"all (also: {', '.join(n for n in self.networks if n != network)})")
        if "scheduler_flags" in v:
            v["scheduler_flags"] = ",".join(sorted(v["scheduler_flags"]))
        if not reals:
            self.error(st, "virtual_server with no real_server")
        servers, checks = [], []
        for r in reals:
            server, check = self.real_server(r, port, defaults)
            if server is not None:
                servers.append(server)
                checks.append((check, r))
        self.one_check(v, checks)
        v["servers"] = servers
        key = f"{v.get('protocol', 'tcp')} {ip} {port}"
        if key in self.virtuals and self.virtuals[key][0] != v:
            self.error(st, f"virtual_server {ip} {port} differs from "
                       f"{self.virtuals[key][1].where} (every router's file must describe "
                       "the same services)")
        self.virtuals.setdefault(key, (v, st))

    def real_server(self, st: Stmt, vport: int, defaults: dict[str, Any]
                    ) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        if not self.nargs(st, 1, 2):
            return None, {}
        ip = self.ip(st, st.args[0])
        port = self.number(st, st.args[1], int, 1) if len(st.args) == 2 else vport
        if ip is None or port is None:
            return None, {}
        server: dict[str, Any] = {"name": ip.replace(":", "-"), "address": ip}
        if port != vport:
            server["port"] = port
            server["name"] += f"_{port}"
        settings = dict(defaults, _server=(ip, port))
        checkers = []
        for s in self.block(st):
            k = s.key
            if k == "weight" and self.nargs(s, 1, 1):
                server["weight"] = self.number(s, s.args[0], int)
            elif k in CHECKERS:
                checkers.append(s)
            elif k == "virtualhost" and self.nargs(s, 1, 1):
                settings["virtualhost"] = s.args[0]
            elif k in ("delay_loop", "connect_timeout", "retry", "nb_get_retry") \
                    and self.nargs(s, 1, 1):
                settings[k] = s
            elif k == "inhibit_on_failure":
                settings["inhibit"] = s
            else:
                self.unknown(s, "real_server")
        if len(checkers) > 1:
            self.error(checkers[1], f"a second checker for real_server {ip}: lvs.cf runs "
                       "one check per virtual service")
        check = self.checker(checkers[0], settings) if checkers else {"check": "none"}
        inhibit = settings.get("inhibit")
        check["quiesce_server"] = inhibit is not None and (
            not inhibit.args or inhibit.args[0].lower() in ("on", "yes", "true", "1"))
        return server, check

    def checker(self, st: Stmt, settings: dict[str, Any]) -> dict[str, Any]:
        kind = CHECKERS[st.key]
        check: dict[str, Any] = {"check": kind}
        local = dict(settings)
        url: Stmt | None = None
        for s in self.block(st):
            k = s.key
            if k in ("delay_loop", "connect_timeout", "retry", "nb_get_retry") \
                    and self.nargs(s, 1, 1):
                local[k] = s
            elif k == "connect_port" and self.nargs(s, 1, 1):
                check["check_port"] = self.number(s, s.args[0], int, 1)
            elif k == "url" and kind in ("http", "https"):
                if url is not None:
                    self.error(s, "a second url: lvs.cf's http check asks one path")
                url = s
            elif k == "misc_path" and kind == "external" and self.nargs(s, 1):
                check["check_program"] = _program(s.args, *local["_server"])
            elif k == "misc_timeout" and kind == "external" and self.nargs(s, 1, 1):
                local["misc_timeout"] = s
            elif k == "misc_dynamic" and kind == "external":
                check["_dynamic"] = True
            elif k in ("type", "name") and kind == "dns" and self.nargs(s, 1, 1):
                check["dns_type" if k == "type" else "dns_name"] = s.args[0]
            else:
                self.unknown(s, "checker")
        if kind == "external" and "check_program" not in check:
            self.error(st, "MISC_CHECK without misc_path")
        if kind == "external" and not check.pop("_dynamic", False):
            self.warn(st, "MISC_CHECK without misc_dynamic: piranha-etcd reads exit codes "
                      "2-255 as 'up, with weight code - 2' (as misc_dynamic does); "
                      "keepalived would call them down")
        if kind in ("http", "https"):
            check["check_path"] = "/"
            if url is None:
                self.error(st, f"{st.key} without url {{ path ... }}")
            else:
                for s in self.block(url):
                    if s.key == "path" and self.nargs(s, 1, 1):
                        check["check_path"] = s.args[0]
                    elif s.key == "status_code" and self.nargs(s, 1):
                        check["check_status"] = ",".join(s.args)
                    elif s.key == "regex" and self.nargs(s, 1, 1):
                        check["check_body"] = s.args[0]
                    elif s.key == "virtualhost" and self.nargs(s, 1, 1):
                        local["virtualhost"] = s.args[0]
                    else:
                        self.unknown(s, "url")
            if "virtualhost" in local:
                check["check_host"] = local["virtualhost"]
        # timing: delay_loop -> interval, connect_timeout -> timeout, retry -> failures
        def value(key: str, default: float, kind: Callable[[str], Any] = float) -> Any:
            s = local.get(key)
            return default if s is None else self.number(s, s.args[0], kind)

        check["interval"] = value("delay_loop", DELAY_LOOP)
        if kind == "external":
            check["timeout"] = value("misc_timeout", check["interval"])
        else:
            check["timeout"] = value("connect_timeout", CONNECT_TIMEOUT)
        retry_key = "retry" if "retry" in local else "nb_get_retry"
        retries = value(retry_key, RETRY.get(st.key, 1), int)
        check["failures"] = None if retries is None else retries + 1
        check["reentry"] = 0  # keepalived puts a server back at its first good check
        return check

    def one_check(self, v: dict[str, Any], checks: list[tuple[dict[str, Any], Stmt]]) -> None:
        """lvs.cf has one check per virtual: every real server's must be the same."""
        if not checks:
            return
        first, where = checks[0]
        for check, st in checks[1:]:
            if check != first:
                diff = sorted(k for k in first.keys() | check.keys()
                              if first.get(k) != check.get(k))
                self.error(st, f"real_server {st.args[0]}: its check differs from "
                           f"{where.where}'s ({', '.join(diff)}); lvs.cf has one check per "
                           "virtual service")
        v.update({k: val for k, val in first.items() if val is not None})

    # -- the result ----------------------------------------------------------------------

    def result(self, serial_no: int) -> Result:
        cfg: dict[str, Any] = {"serial_no": serial_no, "heartbeat": True}
        cfg.update({k: v for k, v in self.globals.items() if v is not None})
        cfg["network"] = next(iter(self.networks), "nat")
        routers = self.router_blocks()
        cfg["routers"] = routers
        virtuals = []
        used: set[str] = set()
        for v, st in self.virtuals.values():
            vip = self.vips.get(v["address"]["ip"])
            if vip is None:
                self.error(st, f"virtual_server {v['address']['ip']} {v['port']}: its address "
                           "is in no vrrp_instance's virtual_ipaddress: lvs.cf floats "
                           "every virtual address on the active router")
                continue
            used.add(v["address"]["ip"])
            v["address"]["device"] = vip.device
            if vip.ip.version == 4:
                v["vip_nmask"] = str(ipaddress.IPv4Network(f"0.0.0.0/{vip.prefix}").netmask)
            virtuals.append(v)
        cfg["virtuals"] = virtuals
        spare = [vip for ip, vip in self.vips.items() if ip not in used]
        if spare and cfg["network"] == "nat" and len(spare) == 1 and spare[0].ip.version == 4:
            vip = spare[0]  # NAT: the real servers' gateway that follows the active
            cfg["nat_router"] = {"ip": str(vip.ip), "device": vip.device}
            cfg["nat_nmask"] = str(ipaddress.IPv4Network(f"0.0.0.0/{vip.prefix}").netmask)
            self.warnings.append((*_split(vip.where), f"warning: VIP {vip.ip} has no "
                                  "virtual_server: it becomes the nat_router (the real "
                                  "servers' gateway)"))
        else:
            for vip in spare:
                self.errors.append((*_split(vip.where), f"VIP {vip.ip} has no virtual_server: "
                                    "lvs.cf floats only virtual service addresses and, with "
                                    "NAT, one nat_router"))
        if self.errors:
            return self._done(None)
        try:
            model = config_from_json(cfg)
        except ConfigError as exc:
            self.errors += [("<converted>", 0, str(p)) for p in exc.problems]
            return self._done(None)
        text = lvscf.write(model)
        check = lvscf.parse(text, "<converted lvs.cf>", runnable=True)
        self.errors += [("<converted lvs.cf>", p.line, p.message) for p in check.errors]
        return self._done(None if self.errors else HEADER + text)

    def router_blocks(self) -> list[dict[str, Any]]:
        """Every file's router, then peers known only from unicast_peer (lower priorities)."""
        out: list[dict[str, Any]] = []
        known = {r.address for r in self.routers if r.address}
        lowest = min((r.priority for r in self.routers if r.priority is not None),
                     default=100)
        for r in self.routers:
            if r.address is None:
                continue
            out.append({"name": r.name or f"r{len(out) + 1}", "address": r.address,
                        "priority": r.priority if r.priority is not None else 100})
        for r in self.routers:
            for peer in r.peers:
                if peer in known:
                    continue
                known.add(peer)
                lowest = max(0, lowest - 1)
                out.append({"name": f"r{len(out) + 1}", "address": peer, "priority": lowest})
                self.warnings.append((*_split(r.where), f"warning: peer {peer} has no file "
                                      f"of its own: router r{len(out)} with priority "
                                      f"{lowest} (give its keepalived.conf for the real one)"))
        names = [r["name"] for r in out]
        for i, name in enumerate(names):
            if names.count(name) > 1:
                out[i]["name"] = f"{name}-{i + 1}"
        return out

    def _done(self, text: str | None) -> Result:
        def fmt(items: list[tuple[str, int, str]]) -> list[str]:
            return [f"{f}:{n}: {m}" for f, n, m in sorted(items, key=lambda x: (x[0], x[1]))]

        return Result(text, fmt(self.errors), fmt(self.warnings))


HEADER = ("# Converted from keepalived.conf by `lvsctl config import`: check it, then\n"
          "# `lvsctl config validate` and `lvsctl config push` (docs/migrating.md).\n")


def _program(args: list[str], ip: str, port: int) -> str:
    """misc_path as lvs.cf's check_program: the real server's own address and port, written
    literally in each server's keepalived checker, become ``%h`` and ``%p``, so that the
    servers of a virtual share one check."""
    words = " ".join(args).split()
    return " ".join("%h" if w == ip else "%p" if w == str(port) else w for w in words)


def _split(where: str) -> tuple[str, int]:
    file, _, line = where.rpartition(":")
    return file, int(line or 0)


def convert(files: Sequence[tuple[str, str]], serial_no: int = 1,
            addresses: Sequence[str] = ()) -> Result:
    """lvs.cf from ``(name, text)`` keepalived.conf files, one per router; ``addresses``:
    the routers' addresses in the order of the files, for files without unicast_src_ip."""
    conv = Converter()
    if len(addresses) > len(files):
        conv.errors.append(("<command line>", 0, f"{len(addresses)} addresses for "
                            f"{len(files)} files"))
    for i, (name, text) in enumerate(files):
        address = addresses[i] if i < len(addresses) else None
        if address is not None:
            try:
                address = str(ipaddress.ip_address(address))
            except ValueError:
                conv.errors.append(("<command line>", 0, f"--address {address!r}: not an "
                                    "IP address"))
                address = None
        conv.file(text, name, address)
    return conv.result(serial_no)
