"""The interactive map's set-up time against the static UMAP figure's, on
the same embeddings, at 10,000 and 100,000 points, in the same process.

    python benchmarks/explore_setup.py              # 10,000 and 100,000 points, images and texts half each
    python benchmarks/explore_setup.py --smoke      # 2,000 points: checks that it runs

Both start from the same UMAP coordinates (fitted once per size, and
timed on their own, since both pay it): ``viz.explore(..., xy=...)``
builds the widget (the points table, jupyter-scatter's data, the side
panel), ``viz.draw_map`` draws the static figure and renders it to a PNG.
The explorer sends no thumbnail until a point is hovered, so its set-up
does not grow with the images; the ratio printed is explorer / static.
"""
from __future__ import annotations

import argparse
import io
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], help="points on the map")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--smoke", action="store_true", help="2,000 points")
    args = ap.parse_args(argv)
    if args.smoke:
        args.sizes = [2000]

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from modgap import viz

    print(f"{'points':>8s} {'UMAP s':>7s} {'static s':>9s} {'explorer s':>11s} {'ratio':>6s}")
    for n in args.sizes:
        rng = np.random.default_rng(0)
        half = n // 2
        offset = np.zeros(args.dim, dtype=np.float32)
        offset[0] = 1.5
        image = rng.standard_normal((half, args.dim), dtype=np.float32) + offset
        text = rng.standard_normal((n - half, args.dim), dtype=np.float32) - offset
        labels = rng.integers(0, 10, half)
        images = rng.integers(0, 256, (half, 32, 32, 3), dtype=np.uint8)
        texts = [f"caption {i}" for i in range(n - half)]

        t0 = time.perf_counter()
        xy = viz.fit_2d(np.vstack([image, text]), "umap", random_state=0)
        umap_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        ax = viz.draw_map(xy[:half], xy[half:], labels=labels)
        ax.figure.savefig(io.BytesIO(), format="png", dpi=100)
        static_s = time.perf_counter() - t0
        plt.close(ax.figure)

        t0 = time.perf_counter()
        explorer = viz.explore(image, text, images=images, texts=texts, labels=labels, xy=xy)
        explorer_s = time.perf_counter() - t0
        assert len(explorer.points) == n

        print(f"{n:8,d} {umap_s:7.1f} {static_s:9.2f} {explorer_s:11.2f} {explorer_s / static_s:6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
