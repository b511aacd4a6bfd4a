#!/usr/bin/env python3
"""Benchmark ``treason compare`` on a real two-point capture against doing it by hand.

Makes the captures: an iperf3 transfer from a sender namespace through a router namespace to
a receiver namespace, tcpdump (snap length 128) on both outer links. Then times, as whole
processes: ``treason compare NEAR FAR``; ``treason scan`` of both files (the events alone,
what compare adds its pairing to); and the manual method, tshark exporting the fields a
person pairs by hand (IP ID, TCP timestamps, window) from both files. Regenerates the
``compare`` section of docs/benchmarks.md. Needs root, iproute2, nftables, tcpdump, iperf3,
tshark.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from common import DOCS, Run, machine, timed, treason_argv, write_section  # noqa: E402

import netns  # noqa: E402
import netns_router  # noqa: E402

OUT = ROOT / "bench" / "out"
FIELDS = ["-e", "ip.id", "-e", "tcp.options.timestamp.tsval", "-e", "tcp.window_size_value"]


def make_captures(near: Path, far: Path, nbytes: str) -> None:
    opts: dict = {"snaplen": 128, "immediate": False, "buffer_kib": 65536}
    with (
        netns_router.router() as r,
        netns.Tcpdump(r, "a", near, **opts) as dn,
        netns.Tcpdump(r, "b", far, **opts) as df,
    ):
        netns.iperf3_exchange(r, streams=4, nbytes=nbytes)
        stats = dn.stop(settle=1.0), df.stop(settle=1.0)
    if any(s.dropped for s in stats):
        raise SystemExit(f"tcpdump dropped packets: {stats}")


def packets(path: Path) -> int:
    out = subprocess.run(["capinfos", "-c", "-M", str(path)], capture_output=True, text=True)
    return int(out.stdout.split(":")[-1].strip())


def median(runs: list[Run]) -> float:
    bad = [r.error for r in runs if r.error]
    if bad:
        raise SystemExit(f"failed run: {bad[0]}")
    return statistics.median(r.wall for r in runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bytes", default="200M", help="iperf3 transfer size (default 200M)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per command (default 3)")
    parser.add_argument("--reuse", action="store_true", help="reuse captures in bench/out")
    parser.add_argument("--docs", type=Path, default=DOCS, help="report to regenerate")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    near, far = OUT / f"compare-near-{args.bytes}.pcap", OUT / f"compare-far-{args.bytes}.pcap"
    if not (args.reuse and near.exists() and far.exists()):
        make_captures(near, far, args.bytes)
    n = packets(near) + packets(far)
    treason = treason_argv()
    commands = {
        "treason compare": [*treason, "compare", str(near), str(far)],
        "treason scan, both files": ["sh", "-c", f"{' '.join(treason)} scan {near} {far}"],
        "tshark field export, both files": [
            "sh",
            "-c",
            f"tshark -r {near} -T fields {' '.join(FIELDS)} >/dev/null && "
            f"tshark -r {far} -T fields {' '.join(FIELDS)} >/dev/null",
        ],
    }
    rows = []
    base = None
    for name, argv in commands.items():
        runs = [timed(argv, ok_status=(0, 1)) for _ in range(args.repeat)]
        t = median(runs)
        base = base or t
        rss = max(r.maxrss_kib for r in runs) / 1024
        rows.append(f"| {name} | {t:.2f} s | {n / t:,.0f} | {t / base:.2f} | {rss:.0f} MiB |")
    size = (near.stat().st_size + far.stat().st_size) / 1e6
    text = "\n".join(
        [
            "## Comparing two captures: treason compare, scan, tshark field export",
            "",
            "Made by `bench/compare.py`: an iperf3 transfer (4 streams) from a sender namespace "
            "through a router namespace to a receiver, tcpdump (snap length 128) on both outer "
            f"links; {n:,} packets in both files together, {size:.0f} MB. Whole-process wall "
            f"time, median of {args.repeat}; packets/s counts both files; the ratio is over "
            "`treason compare`. The tshark row only exports the fields a person would pair "
            "by hand; the pairing itself would still be left to do.",
            "",
            "| command | median time | packets/s | × compare | peak RSS |",
            "|---|---:|---:|---:|---:|",
            *rows,
            "",
            "### Machine",
            "",
            *(f"- {k}: {v}" for k, v in machine().items()),
        ]
    )
    write_section("compare", text, args.docs)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
