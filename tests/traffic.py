"""Traffic programs run inside network namespaces: a slow reader and a small-segment writer.

Together they make a Linux receiver with ``net.ipv4.tcp_shrink_window=1`` take back window it
had offered: the writer sends many tiny segments (TCP_NODELAY), each costing the receiver far
more buffer memory (truesize) than the bytes it carries, while the reader leaves them queued.
The free space the kernel turns into a window then falls faster than the data arrives, and
with shrinking allowed the advertised right edge moves left.

The ``bulk`` writer hands one large buffer to the kernel and watches its own TCB through
``TCP_INFO``: whenever its send window is zero it prints ``snd_una`` and ``snd_nxt`` (relative
to the ISN), the ``X:Y`` its kernel would log if the window stayed shut until the
retransmission timer fired. That is the sender's own word, independent of any capture.

Run as ``python traffic.py receiver ...`` / ``python traffic.py sender ...`` /
``python traffic.py bulk ...`` (inside ``ip netns exec``) or as ``python -m tests.traffic`` from
the project root.
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import struct
import sys
import threading
import time


def receiver(
    port: int, pause: float, read_size: int, read_interval: float, slow_for: float, family: int = 4
) -> int:
    """Accept one connection, read nothing for ``pause`` s, then read slowly, then drain.

    The slow phase keeps the receive queue full of small segments (that is what makes the
    window shrink); the drain phase lets the sender finish with a clean FIN exchange instead
    of a reset, so the capture ends like an ordinary connection. Returns the bytes read.
    """
    inet = socket.AF_INET6 if family == 6 else socket.AF_INET
    listener = socket.socket(inet, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("::" if family == 6 else "0.0.0.0", port))
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


# Offsets in Linux's struct tcp_info (include/uapi/linux/tcp.h); stable ABI, append-only.
_BYTES_ACKED = 120  # __u64 tcpi_bytes_acked: counts the SYN, so ISN + bytes_acked = snd_una
_BYTES_SENT = 200  # __u64 tcpi_bytes_sent, then __u64 tcpi_bytes_retrans: payload only
_SND_WND = 228  # __u32 tcpi_snd_wnd (Linux 6.2+)
_TCP_INFO_LEN = 232


def zero_window_tcb(sock: socket.socket) -> tuple[int, int] | None:
    """(snd_una, snd_nxt) relative to the ISN while the send window is zero, else None.

    ``tcpi_bytes_sent - tcpi_bytes_retrans`` is every payload byte sent once, so the ISN + 1
    plus it is ``snd_nxt``; the SYN is the one byte ``tcpi_bytes_acked`` counts beyond data.
    """
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    if len(info) < _TCP_INFO_LEN:
        raise OSError("TCP_INFO without tcpi_snd_wnd: kernel older than 6.2")
    (snd_wnd,) = struct.unpack_from("I", info, _SND_WND)
    if snd_wnd:
        return None
    (acked,) = struct.unpack_from("Q", info, _BYTES_ACKED)
    sent, retrans = struct.unpack_from("QQ", info, _BYTES_SENT)
    return acked, 1 + sent - retrans


def bulk(host: str, port: int, size: int, sndbuf: int, cpu: int | None) -> int:
    """Hand ``size`` bytes to the kernel in one call, then close; report zero-window TCBs.

    The send buffer holds everything, so after the first burst the kernel sends from its ACK
    processing (softirq) and never while the application holds the socket: an ACK is then
    acted on as soon as it reaches the sender, and the capture's order is the sender's order.
    Each distinct (snd_una, snd_nxt) seen while the send window is zero is printed as
    ``zero-window UNA NXT`` on stdout, relative to the ISN. Returns the bytes written.
    """
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    sock.settimeout(60)
    sock.connect((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    seen: list[tuple[int, int]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            tcb = zero_window_tcb(sock)
            if tcb is not None and (not seen or seen[-1] != tcb):
                seen.append(tcb)
            time.sleep(0.001)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        sock.sendall(b"x" * size)
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(1 << 16):
            pass
    finally:
        done.set()
        watcher.join()
        sock.close()
    for una, nxt in seen:
        print(f"zero-window {una} {nxt}", flush=True)
    return size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="role", required=True)
    r = sub.add_parser("receiver", help="accept one connection and read it slowly")
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--pause", type=float, default=0.5, help="seconds before the first read")
    r.add_argument("--read-size", type=int, default=1000, help="bytes per slow read")
    r.add_argument("--read-interval", type=float, default=0.01, help="seconds between reads")
    r.add_argument("--slow-for", type=float, default=1.0, help="seconds of slow reading")
    r.add_argument("--family", type=int, choices=(4, 6), default=4, help="IPv4 or IPv6")
    s = sub.add_parser("sender", help="connect and write many small segments")
    s.add_argument("--host", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--size", type=int, default=100, help="bytes per write")
    s.add_argument("--duration", type=float, default=1.0, help="seconds of writing")
    s.add_argument("--pace", type=float, default=0.0002, help="seconds between writes")
    b = sub.add_parser("bulk", help="connect, write one large buffer, report zero windows")
    b.add_argument("--host", required=True)
    b.add_argument("--port", type=int, required=True)
    b.add_argument("--size", type=int, default=160_000, help="bytes to send")
    b.add_argument("--sndbuf", type=int, default=1 << 20, help="SO_SNDBUF (holds everything)")
    b.add_argument("--cpu", type=int, default=None, help="run on this CPU only")
    args = parser.parse_args(argv)
    if args.role == "receiver":
        n = receiver(
            args.port, args.pause, args.read_size, args.read_interval, args.slow_for, args.family
        )
    elif args.role == "bulk":
        n = bulk(args.host, args.port, args.size, args.sndbuf, args.cpu)
    else:
        n = sender(args.host, args.port, args.size, args.duration, args.pace)
    print(f"{args.role} bytes {n}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
