"""Images per second of the generated sets, on one core.

    python benchmarks/data_speed.py [--n 5000] [--repeats 3]
    python benchmarks/data_speed.py --smoke     # 200 images, one repeat: checks that it runs

The shapes world must render at least 5,000 images a second at 32x32 on one
core (every domain); the rendered digits are reported beside it. The exit
status is 1 when the target is missed (never with ``--smoke``).
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

TARGET = 5000.0


def main(argv=None) -> int:
    import torch

    from modgap import data

    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="200 images, one repeat: checks that it runs")
    args = ap.parse_args(argv)
    if args.smoke:
        args.n, args.repeats = 200, 1
    ok = True
    for name in ("shapes", "glyphs"):
        for domain in data.DOMAINS:
            data.load(name, n=64, domain=domain)  # warm caches (glyph masks)
            best = min(_time(data.load, name, n=args.n, domain=domain, seed=s) for s in range(args.repeats))
            rate = args.n / best
            if name == "shapes":
                good = rate >= TARGET
                ok &= good
                note = f"  (target >= {TARGET:.0f}: {'ok' if good else 'MISSED'})"
            else:
                note = ""
            print(f"{name:7s} {domain:7s} {rate:9.0f} images/s{note}")
    print("shapes target met on every domain" if ok else "shapes target MISSED")
    if args.smoke:
        return 0
    return 0 if ok else 1


def _time(fn, *args, **kwargs) -> float:
    t = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t


if __name__ == "__main__":
    raise SystemExit(main())
