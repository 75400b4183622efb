"""Time a UMAP map of 5,000 image + 5,000 text embeddings (D=128) through
``modgap.viz.fit_2d``, the path every modgap map takes.

Prints, in seconds:

* the import of umap-learn (and numba, pynndescent);
* the first fit in this process, which includes numba's compilation of
  UMAP's and pynndescent's kernels;
* a second fit of the same data, which reuses them (the steady cost);
* their difference, the first-compile overhead.

numba keeps some compiled kernels in an on-disk cache between processes;
``--cold-cache`` points ``NUMBA_CACHE_DIR`` at a fresh temporary folder so
that the first fit compiles everything, as on a fresh install.

Usage::

    .venv/bin/python benchmarks/umap_time.py [--n 5000] [--dim 128] [--seed 0] [--cold-cache]
    .venv/bin/python benchmarks/umap_time.py --smoke     # 100 + 100 embeddings, D=16: checks that it runs

The data are synthetic: ten classes, each a Gaussian cloud, with the text
cloud of every class offset from its image cloud along one common direction
(a modality gap), L2-normalised as CLIP embeddings are.
"""
from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import tempfile
import time


def make_embeddings(n: int, dim: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(10, dim))
    gap = rng.normal(size=dim)
    gap *= 2.0 / np.linalg.norm(gap)
    labels = rng.integers(0, 10, size=n)
    img = centers[labels] + 0.6 * rng.normal(size=(n, dim)) + gap
    txt = centers[labels] + 0.6 * rng.normal(size=(n, dim)) - gap
    x = np.vstack([img, txt])
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5000, help="embeddings per modality (default 5000)")
    ap.add_argument("--dim", type=int, default=128, help="embedding width (default 128)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the data and of UMAP")
    ap.add_argument("--cold-cache", action="store_true", help="compile into an empty numba cache")
    ap.add_argument("--smoke", action="store_true", help="100 + 100 embeddings, D=16: checks that it runs")
    args = ap.parse_args(argv)
    if args.smoke:
        args.n, args.dim = 100, 16
    if args.n < 10 or args.dim < 2:
        ap.error("--n must be at least 10 and --dim at least 2")
    cache_dir = None
    if args.cold_cache:
        cache_dir = tempfile.mkdtemp(prefix="modgap-numba-")
        os.environ["NUMBA_CACHE_DIR"] = cache_dir
    try:
        return run(args)
    finally:
        if cache_dir is not None:
            shutil.rmtree(cache_dir, ignore_errors=True)


def run(args) -> int:
    x = make_embeddings(args.n, args.dim, args.seed)
    from modgap import viz

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3

    t0 = time.perf_counter()
    importlib.import_module("umap")  # fit_2d's own import of it then finds it loaded
    t_import = time.perf_counter() - t0

    t0 = time.perf_counter()
    first = viz.fit_2d(x, "umap", random_state=args.seed)
    t_first = time.perf_counter() - t0

    t0 = time.perf_counter()
    second = viz.fit_2d(x, "umap", random_state=args.seed)
    t_second = time.perf_counter() - t0

    knn = "exact, blocked matrix products" if 2 * args.n <= viz.EXACT_KNN_MAX else "pynndescent"
    print(f"UMAP of {args.n} + {args.n} embeddings, D={args.dim}, random_state={args.seed}, "
          f"fit_2d defaults (n_epochs=200, neighbours: {knn})")
    print(f"cores: {os.cpu_count()}, load average before the fits: {load[0]:.2f}, "
          f"numba cache: {'cold (fresh folder)' if args.cold_cache else 'as installed'}")
    print(f"import umap:                   {t_import:7.2f} s")
    print(f"first fit (with numba compile): {t_first:7.2f} s")
    print(f"second fit (compiled):          {t_second:7.2f} s")
    print(f"first-compile overhead:         {t_first - t_second:7.2f} s")
    print(f"same map both times: {bool((first == second).all())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
