"""The long fuzzing pass, by hand: random mutations of the seed corpus through every target.

    python tests/fuzz/run.py --minutes 30            # all targets, in turn
    python tests/fuzz/run.py --target capture --seed 7 --minutes 5

Plain ``random`` instead of hypothesis: no shrinking, but several times more inputs per second.
Every failing input is written to ``tests/fuzz/regressions/<target>-<sha1>`` (where
``test_fuzz_regressions.py`` replays it from then on) with the traceback printed; the pass goes
on. Exit status 1 if anything failed.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import fuzz_targets as targets  # noqa: E402
from fuzz_mutate import N_OPS, mutate  # noqa: E402

SEEDS = {
    "capture": "captures",
    "packet": "captures",
    "logs": "logs",
    "grammar": "logs",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=sorted(targets.TARGETS), action="append")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: time)")
    args = parser.parse_args()
    names = args.target or sorted(targets.TARGETS)
    seed = args.seed if args.seed is not None else time.time_ns()
    rnd = random.Random(seed)
    corpus = {
        name: [p.read_bytes() for p in sorted((HERE / "corpus" / sub).iterdir())]
        for name, sub in SEEDS.items()
    }
    end = time.monotonic() + args.minutes * 60
    runs = failures = 0
    print(f"fuzzing {', '.join(names)} for {args.minutes} min, seed {seed}", flush=True)
    while time.monotonic() < end:
        name = names[runs % len(names)]
        seeds = corpus[name]
        ops = [
            (rnd.randrange(N_OPS), rnd.getrandbits(32), rnd.getrandbits(32))
            for _ in range(rnd.randrange(1, 9))
        ]
        data = mutate(rnd.choice(seeds), ops, rnd.choice(seeds))
        if name == "packet":
            data = bytes([rnd.randrange(256)]) + data[40:200]
        runs += 1
        try:
            targets.TARGETS[name](data)
        except Exception:
            failures += 1
            path = HERE / "regressions" / f"{name}-{hashlib.sha1(data).hexdigest()[:16]}"
            path.write_bytes(data)
            print(f"FAILED {path.name}", flush=True)
            traceback.print_exc()
        if runs % 5000 == 0:
            print(f"{runs} inputs, {failures} failures", flush=True)
    print(f"done: {runs} inputs, {failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
