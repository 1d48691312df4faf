"""Every check kind against real servers on loopback (and real programs)."""

import asyncio
import contextlib
import datetime
import ipaddress
import os
import signal
import socket
import ssl
import struct
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.nanny import CheckSpec, run_check
from agent.nanny.checks import start_check

LO = "127.0.0.1"
T = 0.3  # check timeout in these tests

# ---- servers ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def tcp_server(handler, host=LO, port=0, ssl_ctx=None):
    async def guarded(reader, writer):
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(guarded, host, port, ssl=ssl_ctx)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def echo_line(reader, writer):
    writer.write(await reader.readline())
    await writer.drain()


async def silent(reader, writer):
    await reader.read()  # never answers; returns when the client goes away


def http_handler(status=200, body=b"hello world", chunked=False):
    async def handler(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        if chunked:
            payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:3], body[3:]))
            writer.write(b"HTTP/1.1 %d X\r\nTransfer-Encoding: chunked\r\n\r\n%s0\r\n\r\n"
                         % (status, payload))
        else:
            head = b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n" % (status, len(body))
            writer.write(head + body)
        await writer.drain()

    return handler


@pytest.fixture
def refused_port():
    """A port with a bound socket that does not listen: connects are refused."""
    with socket.socket() as sock:
        sock.bind((LO, 0))
        yield sock.getsockname()[1]


@pytest.fixture
def blackhole_port():
    """A listener whose accept queue is full: SYNs are dropped and connects hang."""
    listener = socket.socket()
    listener.bind((LO, 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex((LO, port))
        fillers.append(sock)
    time.sleep(0.05)
    yield port
    for sock in fillers:
        sock.close()
    listener.close()


def spec(**kwargs):
    return CheckSpec(**{"host": LO, "timeout": T, **kwargs})


# ---- tcp ---------------------------------------------------------------------------------


async def test_tcp_connect_ok_refused_and_timeout(refused_port, blackhole_port):
    async with tcp_server(silent) as port:
        ok = await run_check(spec(port=port))
    assert (ok.ok, ok.reason, ok.weight) == (True, "connected", None)
    refused = await run_check(spec(port=refused_port))
    assert (refused.ok, refused.reason) == (False, "connect refused")
    hung = await run_check(spec(port=blackhole_port))
    assert (hung.ok, hung.reason) == (False, f"timeout after {T:g}s")
    assert hung.elapsed >= T


async def test_tcp_and_http_over_ipv6_loopback():
    try:
        server = tcp_server(http_handler(), host="::1")
        port = await server.__aenter__()
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    try:
        connect = await run_check(CheckSpec(host="::1", port=port, timeout=T))
        http = await run_check(CheckSpec(kind="http", host="::1", port=port, timeout=T))
    finally:
        await server.__aexit__(None, None, None)
    assert (connect.ok, http.ok, http.reason) == (True, True, "status 200")


async def test_start_check_calls_back_once_and_cancel_silences_it(blackhole_port):
    results = []
    running = start_check(spec(port=blackhole_port, timeout=0.2), results.append)
    assert running is not None  # still connecting
    running.cancel()
    await asyncio.sleep(0.3)
    assert results == []


# ---- send/expect -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expect", "use_regex", "ok", "reason"),
    [
        ("PING", False, True, "expect matched"),
        ("*", False, True, "expect matched"),
        (r"P.NG\r\n$", True, True, "expect matched"),
        ("PONG", False, False, "expect not matched: got b'PING\\r\\n'"),
    ],
)
async def test_send_expect_against_an_echo_server(expect, use_regex, ok, reason):
    async with tcp_server(echo_line) as port:
        result = await run_check(spec(kind="send_expect", port=port, send=b"PING\r\n",
                                      expect=expect, use_regex=use_regex))
    assert (result.ok, result.reason) == (ok, reason)


async def test_send_expect_failures(refused_port):
    async with tcp_server(silent) as port:
        hung = await run_check(spec(kind="send_expect", port=port, send=b"x\n", expect="y"))
    assert (hung.ok, hung.reason) == (False, f"timeout after {T:g}s")

    async def hang_up(reader, writer):
        await reader.readline()  # then close without a word

    async with tcp_server(hang_up) as port:
        closed = await run_check(spec(kind="send_expect", port=port, send=b"x\n", expect="y"))
    assert (closed.ok, closed.reason) == (False, "connection closed without a response")
    refused = await run_check(spec(kind="send_expect", port=refused_port, expect="y"))
    assert (refused.ok, refused.reason) == (False, "connect refused")


async def test_port_80_gets_piranhas_http_probe():
    got = []

    async def web(reader, writer):
        got.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.0 200 OK\r\n\r\n")

    try:
        server = tcp_server(web, host="127.80.80.80", port=80)
        port = await server.__aenter__()
    except OSError as exc:
        pytest.skip(f"cannot listen on port 80 here: {exc}")
    try:
        result = await run_check(CheckSpec(kind="send_expect", host="127.80.80.80", port=port,
                                           timeout=T))
    finally:
        await server.__aexit__(None, None, None)
    assert result.ok
    assert got == [b"GET / HTTP/1.0\r\n\r\n"]


# ---- http / https --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("handler", "kwargs", "ok", "reason"),
    [
        (http_handler(), {}, True, "status 200"),
        (http_handler(301), {"http_status": "200-299,301"}, True, "status 301"),
        (http_handler(503), {}, False, "status 503"),
        (http_handler(), {"http_body": "wor.d"}, True, "status 200, body matched"),
        (http_handler(), {"http_body": "^bye"}, False, "status 200, body not matched"),
        (http_handler(chunked=True), {"http_body": "o w"}, True, "status 200, body matched"),
        (echo_line, {}, False, "not an HTTP response: b'GET / HTTP/1.1\\r\\n'"),
        (silent, {}, False, f"timeout after {T:g}s"),
    ],
)
async def test_http_check(handler, kwargs, ok, reason):
    async with tcp_server(handler) as port:
        result = await run_check(spec(kind="http", port=port, **kwargs))
    assert (result.ok, result.reason) == (ok, reason)


async def test_http_request_carries_path_and_host_header():
    heads = []

    async def record(reader, writer):
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")

    async with tcp_server(record) as port:
        result = await run_check(spec(kind="http", port=port, http_path="/health?x=1",
                                      http_host="www.example.com"))
    assert result.ok
    assert heads[0].startswith(b"GET /health?x=1 HTTP/1.1\r\nHost: www.example.com\r\n")


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1, made here with `cryptography`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nanny-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(LO))]),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return ctx


async def test_https_with_a_self_signed_certificate(self_signed):
    async with tcp_server(http_handler(body=b"secure"), ssl_ctx=self_signed) as port:
        lenient = await run_check(spec(kind="https", port=port, http_body="secure"))
        strict = await run_check(spec(kind="https", port=port, tls_verify=True))
    assert (lenient.ok, lenient.reason) == (True, "status 200, body matched")
    assert not strict.ok
    assert strict.reason == "tls: certificate verify failed: self-signed certificate"


# ---- udp / dns --------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def udp_server(reply):
    """A UDP server answering each datagram with reply(data) (None: stay silent)."""

    class Responder(asyncio.DatagramProtocol):
        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            for answer in reply(data) or ():
                self.transport.sendto(answer, addr)

    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Responder, local_addr=(LO, 0))
    try:
        yield transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


async def test_udp_check(refused_port):
    async with udp_server(lambda data: [b"PONG " + data]) as port:
        ok = await run_check(spec(kind="udp", port=port, send=b"PING", expect="PONG"))
        wrong = await run_check(spec(kind="udp", port=port, send=b"PING", expect="PING"))
        default = await run_check(spec(kind="udp", port=port))
    assert (ok.ok, ok.reason) == (True, "expect matched")
    assert (wrong.ok, wrong.reason) == (False, "expect not matched: got b'PONG PING'")
    assert (default.ok, default.reason) == (True, "reply received")
    async with udp_server(lambda data: None) as port:
        quiet = await run_check(spec(kind="udp", port=port, send=b"PING"))
    assert (quiet.ok, quiet.reason) == (False, f"timeout after {T:g}s")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
        closed.bind((LO, 0))
        closed_port = closed.getsockname()[1]
    unreachable = await run_check(spec(kind="udp", port=closed_port, send=b"PING"))
    assert (unreachable.ok, unreachable.reason) == (False, "port unreachable")


def dns_reply(rcode=0, answers=1, stale_first=True):
    """A DNS responder: echoes the id and question, sets rcode and the answer count."""

    def reply(query):
        qid, = struct.unpack("!H", query[:2])
        header = lambda i: struct.pack("!HHHHHH", i, 0x8180 | rcode, 1, answers, 0, 0)  # noqa: E731
        out = [header(qid ^ 0xFFFF) + query[12:]] if stale_first else []
        return [*out, header(qid) + query[12:]]

    return reply


@pytest.mark.parametrize(
    ("reply", "kwargs", "ok", "reason"),
    [
        (dns_reply(), {}, True, "rcode NOERROR, 1 answer(s)"),
        (dns_reply(rcode=3, answers=0), {}, False, "rcode NXDOMAIN, expected NOERROR"),
        (dns_reply(answers=0), {"dns_need_answer": True}, False, "rcode NOERROR but no answer"),
        (dns_reply(3, 0), {"dns_rcode": "NXDOMAIN"}, True, "rcode NXDOMAIN, 0 answer(s)"),
        (lambda q: None, {}, False, f"timeout after {T:g}s"),
    ],
)
async def test_dns_check(reply, kwargs, ok, reason):
    questions = []

    def recording(query):
        questions.append(query[12:])
        return reply(query)

    async with udp_server(recording) as port:
        result = await run_check(spec(kind="dns", port=port, dns_name="example.com",
                                      dns_type="A", **kwargs))
    assert (result.ok, result.reason) == (ok, reason)
    assert questions == [b"\x07example\x03com\x00\x00\x01\x00\x01"]


# ---- program / external --------------------------------------------------------------------


def script(tmp_path, name, body):
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


async def test_program_check_matches_output(tmp_path):
    prog = script(tmp_path, "check", 'echo "server $1 port $2"\n')
    ok = await run_check(spec(kind="program", port=8080, argv=(prog, "%h", "%p"),
                              expect=f"server {LO} port 8080"))
    regex = await run_check(spec(kind="program", port=8080, argv=(prog, "%h", "%p"),
                                 expect=r"port \d+$", use_regex=True))
    wrong = await run_check(spec(kind="program", port=8080, argv=(prog, "%h", "%p"),
                                 expect="OK"))
    assert (ok.ok, regex.ok) == (True, True)
    assert not wrong.ok
    assert wrong.reason == f"expect not matched: got b'server {LO} port 8080\\n' (exit 0)"
    missing = await run_check(spec(kind="program", argv=(str(tmp_path / "nope"),)))
    assert not missing.ok
    assert missing.reason == f"cannot run {tmp_path / 'nope'}: no such file or directory"


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_program_timeout_kills_its_whole_process_group(tmp_path):
    pids = tmp_path / "pids"
    # a background child that does not hold the output pipe: only a group kill reaches it
    body = f"sleep 300 >/dev/null 2>&1 &\necho $! > {pids}\necho $$ >> {pids}\nsleep 300\n"
    prog = script(tmp_path, "hang", body)
    result = await run_check(spec(kind="program", argv=(prog,), expect="never", timeout=0.5))
    children = [int(p) for p in pids.read_text().split()]
    try:
        assert (result.ok, result.reason) == (False, "timeout after 0.5s")
        assert len(children) == 2
        for _ in range(50):  # the orphaned sleep is reaped by someone else: give it a moment
            if not any(alive(pid) for pid in children):
                break
            await asyncio.sleep(0.02)
        assert not any(alive(pid) for pid in children)
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize(
    ("code", "ok", "weight", "reason"),
    [(0, True, None, "exit 0"), (1, False, None, "exit 1"), (7, True, 5, "exit 7: weight 5"),
     (2, True, 0, "exit 2: weight 0")],
)
async def test_external_exit_code_gives_state_and_weight(tmp_path, code, ok, weight, reason):
    prog = script(tmp_path, "misc", f"exit {code}\n")
    result = await run_check(spec(kind="external", argv=(prog, "%h")))
    assert (result.ok, result.weight, result.reason) == (ok, weight, reason)


async def test_external_timeout_is_down(tmp_path):
    prog = script(tmp_path, "slow", "exec sleep 30\n")
    result = await run_check(spec(kind="external", argv=(prog,), timeout=0.2))
    assert (result.ok, result.reason) == (False, "timeout after 0.2s")


async def test_kind_none_is_always_up():
    result = await run_check(CheckSpec(kind="none", host="anything", port=0))
    assert (result.ok, result.reason) == (True, "not checked")


def test_no_check_kind_uses_a_shell():
    """The product runs programs with exec, never through /bin/sh -c."""
    import agent.nanny

    root = os.path.dirname(agent.nanny.__file__)
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(folder, name)) as f:
                    text = f.read()
                assert "create_subprocess_shell" not in text
                assert "shell=True" not in text
