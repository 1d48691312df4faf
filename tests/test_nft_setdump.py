"""The traffic sets' counters dumped over raw netlink (setdump.py): pure parsing of the
kernel's replies, and against a real kernel the same counters as `nft list set` gives."""

from __future__ import annotations

import struct

import pytest
from support import netlab

from agent.dataplane.nft import elements, nfbatch, setdump, traffic

NEWSETELEM = (nfbatch.NFNL_SUBSYS_NFTABLES << 8) | setdump.NFT_MSG_NEWSETELEM


def counter_expr(packets: int, nbytes: int) -> bytes:
    data = (nfbatch.attr(setdump.COUNTER_BYTES, struct.pack("!Q", nbytes))
            + nfbatch.attr(setdump.COUNTER_PACKETS, struct.pack("!Q", packets)))
    return (nfbatch.attr(setdump.EXPR_NAME, b"counter\0")
            + nfbatch.attr(setdump.EXPR_DATA | nfbatch.NLA_F_NESTED, data))


def reply(seq: int, elems: list[bytes], flags: int = 2) -> bytes:
    body = (nfbatch.attr(nfbatch.LIST_TABLE, b"lvs\0") + nfbatch.attr(nfbatch.LIST_SET, b"ti4\0")
            + nfbatch.attr(nfbatch.LIST_ELEMENTS | nfbatch.NLA_F_NESTED, b"".join(elems)))
    return nfbatch.message(NEWSETELEM, flags, seq, nfbatch.NFPROTO_INET, body)


def done(seq: int) -> bytes:
    return struct.pack("=IHHII", 20, setdump.NLMSG_DONE, 2, seq, 0) + b"\0\0\0\0"


def error(seq: int, code: int) -> bytes:
    return struct.pack("=IHHII", 36, setdump.NLMSG_ERROR, 0, seq, 0) + struct.pack(
        "=i", -code) + b"\0" * 16


KEY = elements.key("ti4", {"concat": ["10.0.0.100", "tcp", 80, "10.0.1.1", 8080]})


def test_parse_reads_keys_and_counters_in_either_form() -> None:
    one = nfbatch.element(KEY, nfbatch.attr(setdump.ELEM_EXPR | nfbatch.NLA_F_NESTED,
                                            counter_expr(5, 500)))
    listed = nfbatch.attr(nfbatch.LIST_ELEM | nfbatch.NLA_F_NESTED, counter_expr(7, 70))
    two = nfbatch.element(KEY[::-1], nfbatch.attr(
        setdump.ELEM_EXPRESSIONS | nfbatch.NLA_F_NESTED, listed))
    bare = nfbatch.element(KEY)
    data = reply(9, [one, two, bare]) + reply(8, [one]) + done(9)  # seq 8: not ours
    found, finished, interrupted = setdump.parse(data, 9)
    assert found == [(KEY, 5, 500), (KEY[::-1], 7, 70), (KEY, None, None)]
    assert finished and not interrupted
    _, finished, interrupted = setdump.parse(reply(9, [one], flags=2 | setdump.NLM_F_DUMP_INTR), 9)
    assert interrupted and not finished
    with pytest.raises(setdump.DumpError) as err:
        setdump.parse(error(9, 2), 9)
    assert err.value.errno == 2


@pytest.mark.parametrize("name, value", [
    ("ti4", ["10.0.0.100", "tcp", 80, "10.0.1.1", 8080]),
    ("to6", ["2001:db8::1", "udp", 53, "2001:db8::2", 5353]),
    ("tv4", ["10.0.0.100", "udp", 53, "reply", "established"]),
    ("tv6", ["2001:db8::1", "tcp", 443, "original", "new"]),
])
def test_fields_undo_what_elements_key_encodes(name: str, value: list[object]) -> None:
    raw = elements.key(name, {"concat": value})
    assert setdump.fields(raw, traffic.key_shape(name), traffic.SETS[name]) == tuple(value)
    for bad in (raw[:-1], raw + b"\0\0\0\0"):
        with pytest.raises(ValueError):
            setdump.fields(bad, traffic.key_shape(name), traffic.SETS[name])


class Scripted:
    """A socket answering each dump request with the next of ``answers``."""

    def __init__(self, answers: list[list[bytes]]) -> None:
        self.answers, self.sent, self.pending = answers, 0, []

    def send(self, data: bytes) -> None:
        seq = struct.unpack_from("=I", data, 8)[0]
        self.pending = [part(seq) for part in self.answers[self.sent]]
        self.sent += 1

    def recv(self, size: int) -> bytes:
        return self.pending.pop(0)


def test_an_interrupted_dump_is_read_again_a_few_times_at_most() -> None:
    one = nfbatch.element(KEY, nfbatch.attr(setdump.ELEM_EXPR | nfbatch.NLA_F_NESTED,
                                            counter_expr(1, 10)))
    cut = [lambda s: reply(s, [one], 2 | setdump.NLM_F_DUMP_INTR), done]
    whole = [lambda s: reply(s, [one, one]), done]
    sock = Scripted([cut, whole])
    assert len(setdump.dump(sock, "lvs", "ti4")) == 2 and sock.sent == 2  # type: ignore[arg-type]
    sock = Scripted([cut] * setdump.TRIES)
    assert len(setdump.dump(sock, "lvs", "ti4")) == 1  # type: ignore[arg-type]
    assert sock.sent == setdump.TRIES  # then what was read is used


SETS_TEXT = """table inet lvs {{
  set tv4 {{ type ipv4_addr . inet_proto . inet_service . ct_dir . ct_state; counter;
    elements = {{ 10.0.0.100 . tcp . 80 . original . new counter packets 3 bytes 180,
      10.0.0.100 . tcp . 80 . original . established counter packets 10 bytes 1000,
      10.0.0.100 . tcp . 80 . reply . established counter packets 8 bytes 9000 }}
  }}
  set ti4 {{ type ipv4_addr . inet_proto . inet_service . ipv4_addr . inet_service; counter;
    elements = {{ {many} }}
  }}
  set tv6 {{ type ipv6_addr . inet_proto . inet_service . ct_dir . ct_state; counter;
    elements = {{ 2001:db8::1 . udp . 53 . reply . established counter packets 1 bytes 64 }}
  }}
}}
"""


def dump_both(table: str, names: list[str]) -> tuple[traffic.Raw, traffic.Raw | None]:
    """Run in the namespace: the counters dumped, and listed by libnftables."""
    return traffic.dumped(table, names), traffic.listed(table, names)


async def test_dumped_counters_are_the_listed_ones() -> None:
    many = ", ".join(f"10.0.{i // 250}.{i % 250 + 1} . tcp . 80 . 10.1.{i // 250}.{i % 250} "
                     f". {1000 + i} counter packets {i} bytes {i * 100}" for i in range(20000))
    with netlab.Lab("sdump") as lab:
        ns = lab.add_ns("r")
        netlab.sh("ip", "netns", "exec", ns, "nft", "-f", "-",
                  input=SETS_TEXT.format(many=many))
        dumped, listed = await lab.call("r", "test_nft_setdump:dump_both", "lvs",
                                        list(traffic.SETS))
    assert listed is not None and len(dumped) == 3 + 20000 + 1  # to4, tn4...: no such set
    assert dumped == listed  # (several replies: 20,000 elements do not fit in one)
    assert dumped[("ti4", ("10.0.79.250", "tcp", 80, "10.1.79.249", 20999))] == (
        19999, 1999900)
    assert dumped[("tv6", ("2001:db8::1", "udp", 53, "reply", "established"))] == (1, 64)
