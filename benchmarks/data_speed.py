"""Images per second of the generated sets, on one core.

    python benchmarks/data_speed.py [--n 5000]

The shapes world must render at least 5,000 images a second at 32x32 on one
core (every domain); the rendered digits are reported beside it.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main(argv=None) -> int:
    import torch

    from modgap import data

    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    ok = True
    for name in ("shapes", "glyphs"):
        for domain in data.DOMAINS:
            data.load(name, n=64, domain=domain)  # warm caches (glyph masks)
            best = min(_time(lambda: data.load(name, n=args.n, domain=domain, seed=s)) for s in range(args.repeats))
            rate = args.n / best
            target = name == "shapes"
            ok &= (rate >= 5000) if target else True
            print(f"{name:7s} {domain:7s} {rate:9.0f} images/s" + ("  (target >= 5000)" if target else ""))
    print("shapes target met on every domain" if ok else "shapes target NOT met")
    return 0


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


if __name__ == "__main__":
    raise SystemExit(main())
