"""The post-hoc closers on a million embeddings: seconds to fit and to
transform, as ratios to normalising the same rows once with numpy (the least
any closer does), run in the same process.

    python benchmarks/posthoc_speed.py              # 1,000,000 x 512 per modality
    python benchmarks/posthoc_speed.py --smoke      # 2,000 x 32: checks that it runs

The target: every closer fits on a million 512-d embeddings per modality,
and transforms both million-row modalities, in under 15 seconds each on two
CPU cores (the exit code says whether it did).
"""
from __future__ import annotations

import argparse
import time

TARGET_S = 15.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="embeddings per modality")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes; always exits 0")
    args = ap.parse_args(argv)
    if args.smoke:
        args.n, args.dim = 2000, 32

    import numpy as np

    from modgap.adapt import CLOSERS

    rng = np.random.default_rng(0)
    offset = np.zeros(args.dim, dtype=np.float32)
    offset[0] = 2.0
    image = rng.standard_normal((args.n, args.dim), dtype=np.float32) + offset
    text = rng.standard_normal((args.n, args.dim), dtype=np.float32) - offset

    t0 = time.perf_counter()
    image / np.linalg.norm(image, axis=1, keepdims=True)
    base = time.perf_counter() - t0
    print(f"{args.n:,} x {args.dim} float32 per modality; baseline (normalise the images once) {base:.2f} s\n")
    print(f"{'closer':16s} {'fit s':>7s} {'ratio':>6s} {'transform s':>12s} {'ratio':>6s}")
    ok = True
    for name, cls in CLOSERS.items():
        closer = cls()
        t0 = time.perf_counter()
        closer.fit(image, text)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        closer.transform(image, text)
        transform_s = time.perf_counter() - t0
        good = fit_s < TARGET_S and transform_s < TARGET_S
        ok &= good
        print(f"{name:16s} {fit_s:7.2f} {fit_s / base:6.1f} {transform_s:12.2f} {transform_s / base:6.1f}  "
              f"(target < {TARGET_S:.0f} s each: {'ok' if good else 'MISSED'})")
    return 0 if ok or args.smoke else 1


if __name__ == "__main__":
    raise SystemExit(main())
