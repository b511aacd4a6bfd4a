"""The minimal dpkt baseline: parse every packet down to the TCP header, nothing more.

This is what a quick script written for the job would do before any analysis, so its time is
a floor for Python tools built on dpkt. Prints the packet and TCP segment counts.
"""

from __future__ import annotations

import sys

import dpkt


def main(path: str) -> int:
    packets = segments = 0
    window_sum = 0
    with open(path, "rb") as f:
        for _ts, buf in dpkt.pcap.Reader(f):
            packets += 1
            try:
                ip = dpkt.ethernet.Ethernet(buf).data
            except (dpkt.UnpackError, IndexError):
                continue
            tcp = getattr(ip, "data", None)
            if isinstance(tcp, dpkt.tcp.TCP):
                segments += 1
                window_sum += tcp.win + (tcp.ack & 1)
    print(f"{packets} packets {segments} tcp")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
