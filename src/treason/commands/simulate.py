"""``treason simulate``: replay a receiver's ACKs through the reference model."""

from __future__ import annotations

import argparse
import itertools

from treason.commands.common import IntRange
from treason.simulate import SEED_ACKS, replay

#: ACK numbers count bytes from the sender's first; beyond 2^31 - 1 two of them could be more
#: than half the sequence space apart, where "before" and "after" lose their meaning.
MAX_ACK = 2**31 - 1
#: Windows are unscaled 16-bit TCP header fields.
MAX_WINDOW = 65_535

DESCRIPTION = """\
Replay a sequence of ACKs from a receiver through the reference model and show, for each,
the right edge it offers and whether it takes window back. Numbers are relative to the
sender's first data byte, windows are bytes (no scaling). Without ACKs, the worked example
from the original "Treason uncloaked?" discussion is replayed:

  treason simulate --window 1024 500:524 1024:900 1824:300 1974:100
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "simulate",
        help="replay ACKs through the reference model",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--window",
        type=IntRange(0, MAX_WINDOW, "an unscaled TCP window"),
        default=1024,
        help="window the receiver first offers (bytes)",
    )
    p.add_argument(
        "acks", nargs="*", metavar="ACK:WIN", type=_pair, help="acknowledged bytes and window"
    )
    p.set_defaults(func=run)


def _pair(text: str) -> tuple[int, int]:
    try:
        ack, win = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ACK:WIN, got {text!r}") from None
    if not 0 <= ack <= MAX_ACK or not 0 <= win <= MAX_WINDOW:
        raise argparse.ArgumentTypeError(
            f"{text!r}: ACK must be from 0 to {MAX_ACK} and WIN from 0 to {MAX_WINDOW}"
        )
    return ack, win


def run(args: argparse.Namespace) -> int:
    acks = args.acks or list(SEED_ACKS)
    if any(b[0] < a[0] for a, b in itertools.pairwise(acks)):
        print("note: ACKs that go backwards are old segments; the model ignores them")
    steps = replay(args.window, acks)
    found = 0
    for n, step in enumerate(steps, 1):
        mark = "  <-- " + step.event.cls.label if step.event else ""
        print(f"ACK {n}: {step.description}{mark}")
        found += step.event is not None
    print(
        f"\n{found} of {len(steps)} ACKs moved the right edge (ACK + window) to the left."
        if found
        else f"\nNone of the {len(steps)} ACKs moved the right edge (ACK + window) to the left."
    )
    return 1 if found else 0
