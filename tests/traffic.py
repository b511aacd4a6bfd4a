"""Traffic programs run inside network namespaces: a slow reader and a small-segment writer.

Together they make a Linux receiver with ``net.ipv4.tcp_shrink_window=1`` take back window it
had offered: the writer sends many tiny segments (TCP_NODELAY), each costing the receiver far
more buffer memory (truesize) than the bytes it carries, while the reader leaves them queued.
The free space the kernel turns into a window then falls faster than the data arrives, and
with shrinking allowed the advertised right edge moves left.

Run as ``python traffic.py receiver ...`` / ``python traffic.py sender ...`` (inside
``ip netns exec``) or as ``python -m tests.traffic`` from the project root.
"""

from __future__ import annotations

import argparse
import select
import socket
import sys
import time


def receiver(port: int, pause: float, read_size: int, read_interval: float, slow_for: float) -> int:
    """Accept one connection, read nothing for ``pause`` s, then read slowly, then drain.

    The slow phase keeps the receive queue full of small segments (that is what makes the
    window shrink); the drain phase lets the sender finish with a clean FIN exchange instead
    of a reset, so the capture ends like an ordinary connection. Returns the bytes read.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", port))
    listener.listen(1)
    # The harness waits for this line before it starts the sender.
    print("listening", flush=True)
    conn, _ = listener.accept()
    listener.close()
    start = time.monotonic()
    time.sleep(pause)
    total = 0
    while time.monotonic() - start < slow_for:
        data = conn.recv(read_size)
        if not data:
            conn.close()
            return total
        total += len(data)
        time.sleep(read_interval)
    conn.settimeout(30)
    while data := conn.recv(1 << 16):
        total += len(data)
    conn.close()
    return total


def sender(host: str, port: int, size: int, duration: float, pace: float) -> int:
    """Write ``size``-byte chunks every ``pace`` s for ``duration`` s with Nagle off.

    TCP_NODELAY plus a pause between writes keeps each write its own small segment while the
    window is open; without the pause the stack would coalesce queued writes into large ones.
    Returns the bytes written.
    """
    sock = socket.create_connection((host, port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    chunk = b"x" * size
    written = 0
    deadline = time.monotonic() + duration
    while (left := deadline - time.monotonic()) > 0:
        _, writable, _ = select.select([], [sock], [], min(left, 0.2))
        if not writable:
            continue
        try:
            written += sock.send(chunk)
        except BlockingIOError:
            continue
        if pace:
            time.sleep(pace)
    sock.setblocking(True)
    sock.settimeout(60)
    # Let the receiver drain everything, then close in order: FIN, FIN, last ACK.
    sock.shutdown(socket.SHUT_WR)
    while sock.recv(1 << 16):
        pass
    sock.close()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="role", required=True)
    r = sub.add_parser("receiver", help="accept one connection and read it slowly")
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--pause", type=float, default=0.5, help="seconds before the first read")
    r.add_argument("--read-size", type=int, default=1000, help="bytes per slow read")
    r.add_argument("--read-interval", type=float, default=0.01, help="seconds between reads")
    r.add_argument("--slow-for", type=float, default=1.0, help="seconds of slow reading")
    s = sub.add_parser("sender", help="connect and write many small segments")
    s.add_argument("--host", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--size", type=int, default=100, help="bytes per write")
    s.add_argument("--duration", type=float, default=1.0, help="seconds of writing")
    s.add_argument("--pace", type=float, default=0.0002, help="seconds between writes")
    args = parser.parse_args(argv)
    if args.role == "receiver":
        n = receiver(args.port, args.pause, args.read_size, args.read_interval, args.slow_for)
    else:
        n = sender(args.host, args.port, args.size, args.duration, args.pace)
    print(f"{args.role} bytes {n}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
