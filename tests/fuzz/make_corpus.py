"""Write the seed corpus: small valid captures of every format and link type, damaged ones, and
kernel log lines of every wording in every container.

Run from the repository root (``python tests/fuzz/make_corpus.py``) after changing it; the
output is committed so the fuzzing pass starts from the same seeds everywhere. Mutations of
these seeds reach deep paths (options, extension headers, sections) far sooner than random
bytes would.
"""

from __future__ import annotations

import gzip
import json
import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from captures import (  # noqa: E402
    block,
    epb,
    ether,
    ext_header,
    fragment_header,
    idb,
    ipv4,
    ipv6,
    null,
    option,
    pb,
    pcap,
    shb,
    sll,
    sll2,
    spb,
    tcp,
)
from treason.kernel import kernel_lines  # noqa: E402
from tunnels import ENCAPSULATIONS  # noqa: E402

SYN, FIN, RST, PSH, ACK = 0x02, 0x01, 0x04, 0x08, 0x10
A4, B4 = "192.0.2.1", "198.51.100.7"
A6, B6 = "2001:db8::1", "2001:db8::2"
WS = b"\x02\x04\x05\xb4\x01\x03\x03\x07"  # MSS, NOP, WS 7
TS = b"\x01\x01\x08\x0a" + struct.pack("!II", 1000, 0)


def conversation(v6: bool = False) -> list[bytes]:
    """IP packets of a short connection whose receiver shrinks once, then closes."""
    a, b = (A6, B6) if v6 else (A4, B4)

    def ip(src: str, dst: str, seg: bytes, ident: int, plen: int = 0) -> bytes:
        if v6:
            return ipv6(src, dst, seg, plen=len(seg) + plen)
        return ipv4(src, dst, seg, ident=ident, total_len=20 + len(seg) + plen)

    return [
        ip(a, b, tcp(40000, 80, 1000, 0, SYN, 65535, WS), 1),
        ip(b, a, tcp(80, 40000, 5000, 1001, SYN | ACK, 65535, WS), 2),
        ip(a, b, tcp(40000, 80, 1001, 5001, ACK, 1000, TS), 3),
        ip(a, b, tcp(40000, 80, 1001, 5001, ACK | PSH, 1000, TS, b"x" * 8), 4, 992),
        ip(b, a, tcp(80, 40000, 5001, 2001, ACK, 100, TS), 5),
        ip(b, a, tcp(80, 40000, 5001, 2001, ACK, 0, TS), 6),
        ip(a, b, tcp(40000, 80, 2001, 5001, FIN | ACK, 1000), 7),
        ip(b, a, tcp(80, 40000, 5001, 2002, RST, 0), 8),
    ]


def records(frames: list[bytes]) -> list[tuple[int, bytes]]:
    return [(1_700_000_000 * 10**9 + i * 1_000_000, f) for i, f in enumerate(frames)]


def captures() -> dict[str, bytes]:
    v4, v6 = conversation(), conversation(v6=True)
    out = {
        "eth-v4.pcap": pcap(records([ether(p) for p in v4])),
        "eth-v6-be-nsec.pcap": pcap(records([ether(p, 0x86DD) for p in v6]), nano=True, order=">"),
        "vlan-qinq.pcap": pcap(records([ether(p, vlans=(10, 20)) for p in v4])),
        "sll.pcap": pcap(records([sll(p) for p in v4]), linktype=113),
        "sll2-v6.pcap": pcap(records([sll2(p, 0x86DD) for p in v6]), linktype=276),
        "raw.pcap": pcap(records(v4 + v6), linktype=101),
        "null-v6.pcap": pcap(records([null(p, 30) for p in v6]), linktype=0),
        "loop.pcap": pcap(records([null(p, 2, ">") for p in v4]), linktype=108),
        "ipv4-linktype.pcap": pcap(records(v4), linktype=228),
        "snap64.pcap": pcap(
            [(t, f[:64], len(f)) for t, f in records([ether(p) for p in v4])], snaplen=64
        ),
        "ipv6-ext-frag.pcap": pcap(
            records(
                [
                    ether(ipv6(A6, B6, tcp(flags=ACK), ext=[(0, ext_header(1))]), 0x86DD),
                    ether(
                        ipv6(A6, B6, tcp(flags=ACK), ext=[(44, fragment_header(0, True))]), 0x86DD
                    ),
                    ether(ipv4(A4, B4, tcp(flags=ACK), frag=0x2000)),
                    ether(ipv4(A4, B4, tcp(flags=ACK), options=b"\x01\x01\x01\x00")),
                ]
            )
        ),
    }
    # Tunnels: every encapsulation the decoder opens, grouped by carrier, both IP versions.
    groups = {
        "tunnels-udp.pcap": ("vxlan", "vxlan-8472-v6", "geneve-options", "geneve-ip", "gtpu"),
        "tunnels-gre.pcap": ("gre", "gre-key-seq-csum", "gre-teb", "erspan-1", "erspan-2"),
        "tunnels-erspan3-gtpext.pcap": ("erspan-3", "erspan-3-subheader", "gtpu-extension"),
        "tunnels-ip-pppoe-mpls.pcap": ("ip-in-ip4", "ip-in-ip6", "pppoe", "mpls", "mpls-over-gre"),
        "tunnels-nested.pcap": ("nested",),
    }
    for name, kinds in groups.items():
        wraps = [ENCAPSULATIONS[k][0] for k in kinds]
        out[name] = pcap(records([w(p) for w in wraps for p in v4[:3] + v6[3:6]]))
    eth = [ether(p) for p in v4]
    ng = shb() + idb(1, tsresol=9) + b"".join(epb(0, i, f) for i, f in enumerate(eth))
    out["eth-v4.pcapng"] = ng
    out["be-two-ifaces.pcapng"] = (
        shb(">")
        + idb(1, order=">")
        + idb(113, tsresol=0x80 | 20, tsoffset=5, order=">")
        + b"".join(
            epb(i % 2, i, ether(p) if i % 2 == 0 else sll(p), order=">") for i, p in enumerate(v4)
        )
    )
    out["spb-pb-sections.pcapng"] = (
        shb(options=option(4, b"fuzz") + option(0, b""))
        + idb(1, snaplen=128)
        + spb(eth[0])
        + pb(0, 1, eth[1])
        + block(0x0BAD, b"unknown block")
        + shb()
        + idb(101)
        + b"".join(epb(0, i, p) for i, p in enumerate(v4[2:]))
    )
    out["eth-v4.pcap.gz"] = gzip.compress(out["eth-v4.pcap"], mtime=0)
    out["two-members.pcapng.gz"] = gzip.compress(ng[:200], mtime=0) + gzip.compress(
        ng[200:], mtime=0
    )
    # Damaged seeds: the paths that report errors.
    good = out["eth-v4.pcap"]
    out["damaged-truncated-record.pcap"] = good[:-9]
    out["damaged-garbage-after.pcap"] = good + b"GARBAGE!" * 3
    out["damaged-huge-record.pcap"] = good + struct.pack("<IIII", 0, 0, 1 << 20, 1 << 20)
    out["damaged-short-header.pcap"] = good[:17]
    out["damaged-bad-block-length.pcapng"] = ng + struct.pack("<II", 6, 13) + b"\0" * 8
    out["damaged-no-shb.pcapng"] = idb() + epb(0, 0, eth[0])
    out["damaged-bad-interface.pcapng"] = shb() + idb() + epb(7, 0, eth[0])
    out["damaged-truncated.pcap.gz"] = out["eth-v4.pcap.gz"][:-30]
    out["not-a-capture.txt"] = b"this is not a capture\n"
    return out


def logs() -> dict[str, bytes]:
    lines = kernel_lines("192.0.2.1", 5001, 443, 3, 4)
    v6 = kernel_lines("2001:db8::1", 5001, 443, 4294967295, 0, recv_ms=12, lasting_ms=340)
    mapped = kernel_lines("::ffff:198.51.100.7", 80, 40000, 7, 9)
    out: dict[str, bytes] = {}
    syslog = []
    for text in lines.values():
        syslog.append(f"Mar  5 06:07:08 web1 kernel: [ 123.456789] {text}")
    syslog += [
        f"Mar  5 06:07:09 web1 kernel: {v6['6.6']}",
        f"Mar  5 06:07:09 web1 kernel: {mapped['2.6.29']}",
        "Mar  5 06:07:10 web1 kernel: net_ratelimit: 12 callbacks suppressed",
        "Mar  5 06:07:10 web1 last message repeated 3 times",
        "Mar  5 06:07:11 web1 kernel: nf_conntrack: SEQ is over the upper bound",
        "Mar  5 06:07:11 web1 app[42]: Treason uncloaked! just a quote",
    ]
    out["syslog.log"] = ("\n".join(syslog) + "\n").encode()
    out["rfc5424.log"] = (
        f"<7>1 2024-03-05T06:07:08.123456+01:00 web1 kernel - - - {lines['3.13']}\n"
    ).encode()
    out["dmesg.log"] = (
        f"[ 8123.456789] {lines['3.13']}\n[Tue Mar  5 06:07:08 2024] {v6['6.6']}\n"
    ).encode()
    out["kmsg.log"] = f"7,1234,8123456789,-;{lines['3.13']}\n".encode()
    out["dyndbg.log"] = (
        f"Mar  5 06:07:08 web1 kernel: [1234] tcp_timer:tcp_retransmit_timer:471: {lines['3.13']}\n"
    ).encode()
    journal = {
        "__REALTIME_TIMESTAMP": "1709618828000000",
        "_HOSTNAME": "web1",
        "_TRANSPORT": "kernel",
        "PRIORITY": "7",
        "MESSAGE": lines["3.13"],
    }
    binary = dict(journal, MESSAGE=list(lines["2.4.17"].encode()))
    out["journal.json"] = (json.dumps(journal) + "\n" + json.dumps(binary) + "\n").encode()
    out["journal.export"] = (
        b"__REALTIME_TIMESTAMP=1709618828000000\n_TRANSPORT=kernel\n_HOSTNAME=web1\n"
        b"MESSAGE\n" + struct.pack("<Q", len(lines["3.13"])) + lines["3.13"].encode() + b"\n\n"
    )
    out["kern.log.gz"] = gzip.compress(out["syslog.log"], mtime=0)
    out["hostile.log"] = (
        b"Mar  5 06:07:08 \x1b[2Jweb1\x07 kernel: " + lines["3.13"].encode() + b"\n"
        b"\xff\xfe\x00 invalid utf-8 and NUL\n"
        b"Mar  5 06:07:08 web1 kernel: Peer " + b"2001:" * 40 + b"1:1/2 unexpectedly shrunk "
        b"window 99999999999:1 (repaired)\n"
    )
    return out


def main() -> None:
    for sub, files in (("captures", captures()), ("logs", logs())):
        directory = HERE / "corpus" / sub
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.iterdir():
            old.unlink()
        for name, data in sorted(files.items()):
            (directory / name).write_bytes(data)
        print(f"{directory}: {len(files)} files, {sum(map(len, files.values()))} bytes")


if __name__ == "__main__":
    main()
