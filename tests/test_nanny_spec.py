"""Pure parts of nanny: spec validation, expect matching, HTTP/DNS wire helpers, verdicts."""

import struct

import pytest

from agent.nanny import CheckSpec, SpecError, piranha_check
from agent.nanny.checks.dns import judge_answer
from agent.nanny.checks.external import judge_exit
from agent.nanny.checks.http import server_name
from agent.nanny.checks.load import parse_load, scale_weight
from agent.nanny.checks.proc import Ran
from agent.nanny.checks.program import judge_output
from agent.nanny.checks.send_expect import effective
from agent.nanny.checks.udp import judge_reply
from agent.nanny.dnswire import build_query, encode_name, parse_header, qtype_number
from agent.nanny.httpwire import dechunk, parse_head, parse_status_ranges, status_in
from agent.nanny.match import MAX_READ, Expect

# ---- CheckSpec ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "ping"}, "unknown check kind"),
        ({"host": "server1.example"}, "host must be an IP address"),
        ({"port": 0}, "port 0 out of range 1..65535"),
        ({"port": 70000}, "out of range"),
        ({"port": "80"}, "port must be an integer"),
        ({"timeout": 0}, "timeout must be"),
        ({"interval": -1}, "interval must be"),
        ({"weight": -1}, "weight must be"),
        ({"send": "GET /"}, "send must be bytes"),
        ({"expect": ""}, "expect must be a non-empty string"),
        ({"expect": "HTTP/1.[01", "use_regex": True}, "bad expect regex"),
        ({"kind": "program", "argv": ()}, "argv must be a non-empty tuple"),
        ({"kind": "external", "argv": ["/bin/true"]}, "argv must be a non-empty tuple"),
        ({"kind": "http", "http_status": "200-abc"}, "bad HTTP status range"),
        ({"kind": "http", "http_status": "299-200"}, "bad HTTP status range"),
        ({"kind": "http", "http_body": "(unclosed"}, "bad http_body regex"),
        ({"kind": "http", "http_path": "index.html"}, "http_path must start with '/'"),
        ({"kind": "http", "http_host": "a b"}, "bad http_host"),
        ({"kind": "dns", "dns_type": "BOGUS"}, "unknown DNS query type"),
        ({"kind": "dns", "dns_rcode": "WHATEVER"}, "unknown DNS rcode"),
        ({"kind": "dns", "dns_name": "a" * 64 + ".com"}, "bad DNS label"),
        ({"load_monitor": ("uptime",), "load_full": 0}, "load_full must be"),
    ],
)
def test_bad_specs_raise_a_clear_error_at_construction(kwargs, message):
    base = {"host": "127.0.0.1", "port": 80}
    with pytest.raises(SpecError, match=message):
        CheckSpec(**{**base, **kwargs})


def test_interval_defaults_to_timeout_as_in_piranha():
    assert CheckSpec(port=1, timeout=6).every == 6
    assert CheckSpec(port=1, timeout=6, interval=2).every == 2


def test_ipv6_host_gives_ipv6_socket_address():
    spec = CheckSpec(host="::1", port=22)
    assert spec.sockaddr == ("::1", 22, 0, 0)


def test_specs_compare_by_value_for_target_diffing():
    a = CheckSpec(kind="send_expect", port=25, expect="220", use_regex=True)
    b = CheckSpec(kind="send_expect", port=25, expect="220", use_regex=True)
    assert a == b
    assert hash(a) == hash(b)
    assert a != CheckSpec(kind="send_expect", port=25, expect="220")


def test_argv_template_substitutes_host_and_port_per_argument():
    argv = ("/bin/x", "%h:%p", "100%%", "%q")
    spec = CheckSpec(kind="program", host="10.0.0.7", port=8080, argv=argv)
    assert spec.expand(spec.argv) == ("/bin/x", "10.0.0.7:8080", "100%", "%q")


def test_piranha_rules_pick_the_check_kind():
    assert piranha_check("10.0.0.1", 443).kind == "tcp"
    http = piranha_check("10.0.0.1", 80)
    assert (http.kind, http.send, http.expect) == ("send_expect", b"GET / HTTP/1.0\r\n\r\n", "HTTP")
    smtp = piranha_check("10.0.0.1", 25, expect="220")
    assert (smtp.kind, smtp.send, smtp.expect) == ("send_expect", None, "220")
    assert piranha_check("10.0.0.1", 53, protocol="udp", send=b"x").kind == "udp"
    prog = piranha_check("10.0.0.1", 80, send_program=("/bin/check", "%h"), expect="OK")
    assert (prog.kind, prog.argv) == ("program", ("/bin/check", "%h"))


def test_port_80_without_send_or_expect_gets_the_http_probe():
    send, expect = effective(CheckSpec(kind="send_expect", port=80))
    assert send == b"GET / HTTP/1.0\r\n\r\n"
    assert expect.judge(b"HTTP/1.1 200 OK") is True
    assert effective(CheckSpec(kind="send_expect", port=81)) == (None, None)


# ---- expect matching --------------------------------------------------------------------


def test_literal_expect_is_a_prefix_match_like_nanny_strncmp():
    expect = Expect("220 ")
    assert expect.judge(b"220 mail ESMTP") is True
    assert expect.judge(b"22") is None  # could still match
    assert expect.judge(b"22", eof=True) is False
    assert expect.judge(b"5") is False  # diverged: no need to wait
    assert expect.judge(b"xx 220 ") is False


def test_star_expects_any_byte():
    assert Expect("*").judge(b"x") is True
    assert Expect("*").judge(b"") is None
    assert Expect("*").judge(b"", eof=True) is False


def test_regex_expect_searches_what_was_read():
    expect = Expect(r"OK \d+", regex=True)
    assert expect.judge(b"+banner\r\nOK 42") is True
    assert expect.judge(b"+banner") is None
    assert expect.judge(b"+banner", eof=True) is False
    assert expect.judge(b"x" * MAX_READ) is False


# ---- HTTP wire --------------------------------------------------------------------------


def test_tls_server_name_from_host_header():
    assert server_name("www.example.com:8443") == "www.example.com"
    assert server_name("www.example.com") == "www.example.com"
    assert server_name("[2001:db8::1]:443") == "2001:db8::1"
    assert server_name("[2001:db8::1]") == "2001:db8::1"


def test_status_ranges():
    ranges = parse_status_ranges("200-299, 301")
    assert ranges == ((200, 299), (301, 301))
    assert status_in(204, ranges) and status_in(301, ranges)
    assert not status_in(302, ranges)


def test_parse_head_and_chunked_body():
    head = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nX-A:  b \r\n\r\n"
    assert parse_head(head) == (503, {"content-type": "text/plain", "x-a": "b"})
    assert parse_head(b"SSH-2.0-OpenSSH\r\n\r\n") is None
    assert dechunk(b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n") == b"hello world"
    assert dechunk(b"5\r\nhel") == b"hel"  # truncated: what there is


# ---- DNS wire ---------------------------------------------------------------------------


def test_dns_query_bytes():
    query = build_query(0x1234, "example.com", qtype_number("a"))
    assert query == (
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
        b"\x07example\x03com\x00\x00\x01\x00\x01"
    )
    assert encode_name(".") == b"\x00"
    assert qtype_number("TYPE99") == 99


def _answer(qid, rcode=0, answers=1, qr=True):
    flags = (0x8000 if qr else 0) | 0x0080 | rcode
    return struct.pack("!HHHHHH", qid, flags, 1, answers, 0, 0)


def test_dns_verdicts():
    spec = CheckSpec(kind="dns", port=53, dns_need_answer=True)
    assert parse_header(b"\x00") is None
    assert judge_answer(spec, 7, _answer(8)) is None  # another query's answer: ignored
    assert judge_answer(spec, 7, _answer(7, qr=False)) is None  # not a response
    assert judge_answer(spec, 7, _answer(7)).ok
    nx = judge_answer(spec, 7, _answer(7, rcode=3))
    assert (nx.ok, nx.reason) == (False, "rcode NXDOMAIN, expected NOERROR")
    empty = judge_answer(spec, 7, _answer(7, answers=0))
    assert (empty.ok, empty.reason) == (False, "rcode NOERROR but no answer")
    want_nx = CheckSpec(kind="dns", port=53, dns_rcode="NXDOMAIN")
    assert judge_answer(want_nx, 7, _answer(7, rcode=3, answers=0)).ok


# ---- other verdicts -----------------------------------------------------------------------


def test_external_exit_codes_map_like_keepalived_misc_dynamic():
    assert (judge_exit(0).ok, judge_exit(0).weight) == (True, None)
    assert not judge_exit(1).ok
    assert (judge_exit(2).ok, judge_exit(2).weight) == (True, 0)
    assert (judge_exit(255).ok, judge_exit(255).weight) == (True, 253)
    killed = judge_exit(-9)
    assert (killed.ok, killed.reason) == (False, "killed by signal 9")


def test_program_output_verdicts():
    with_expect = CheckSpec(kind="program", argv=("/x",), expect="OK")
    assert judge_output(with_expect, Ran(1, b"OK\n")).ok  # exit code ignored, as nanny
    assert not judge_output(with_expect, Ran(0, b"FAIL\n")).ok
    bare = CheckSpec(kind="program", argv=("/x",))
    assert judge_output(bare, Ran(0, b"")).ok
    assert judge_output(bare, Ran(3, b"")).reason == "exit 3"


def test_udp_reply_verdicts():
    assert judge_reply(CheckSpec(kind="udp", port=9), b"anything").ok
    spec = CheckSpec(kind="udp", port=9, expect="PONG")
    assert judge_reply(spec, b"PONG 1").ok
    assert not judge_reply(spec, b"PON").ok


def test_load_figure_and_weight_scaling():
    assert parse_load(" 10:01:02 up 3 days,  2 users,  load average: 2.50, 1.00, 0.50") == 2.5
    assert parse_load("0,75 0,5 0,25") == 0.75
    assert parse_load("no numbers") is None
    assert scale_weight(8, 0.5) == 8
    assert scale_weight(8, 2.0) == 4
    assert scale_weight(8, 4.0, full=2.0) == 4
    assert scale_weight(3, 100.0) == 1
    assert scale_weight(0, 100.0) == 0
