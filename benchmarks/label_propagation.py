"""modgap's sparse label propagation against a dense implementation of the
same equations: are the labels the same, and what do time and memory cost?

    python benchmarks/label_propagation.py                     # 2k, 10k, 50k x 512
    python benchmarks/label_propagation.py --sizes 2000 --dense-max 2000
    python benchmarks/label_propagation.py --smoke     # N=200 x 32, both methods: checks that it runs

The dense version below is written the straightforward way, as ReCLIP's
reference code does it: the full affinity matrix, its top-k mask, the
symmetrised graph and its normalisation as N x N float32 matrices, then
scipy's conjugate gradient per class on ``I - alpha Wn`` (which scipy holds
in float64). It runs only up to ``--dense-max`` points.

Every run is a fresh subprocess on the same synthetic embeddings (clusters
on the sphere with a shared offset between images and class embeddings,
like a CLIP modality gap). Memory is the process's peak resident set while
the method runs, read from /proc/self/status after resetting the peak once
the inputs are in memory: "extra" is above the inputs, "total" the whole
process (Python, torch and the inputs included). Timings are wall-clock on
however many threads torch uses (``--threads``). The exit status is 1 when
a run fails (its child exits non-zero); the figures never change it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _status() -> dict:
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS", "VmHWM")):
                key, val = line.split(":")
                out[key] = int(val.split()[0]) / 1024.0  # MiB
    return out


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def make_inputs(n: int, dim: int, classes: int, seed: int = 0):
    """Image and class embeddings: ``classes`` clusters with a shared offset
    between the two modalities, generated a block at a time."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(classes, dim, generator=g), dim=-1)
    img_gap = F.normalize(torch.randn(dim, generator=g), dim=-1)
    txt_gap = F.normalize(torch.randn(dim, generator=g), dim=-1)
    labels = torch.randint(0, classes, (n,), generator=g)
    images = torch.empty(n, dim)
    for s in range(0, n, 8192):
        e = min(n, s + 8192)
        noise = torch.randn(e - s, dim, generator=g) / dim ** 0.5
        images[s:e] = F.normalize(centres[labels[s:e]] + 0.8 * img_gap + 5.0 * noise, dim=-1)
    cls = F.normalize(centres + 0.8 * txt_gap + torch.randn(classes, dim, generator=g) / dim ** 0.5, dim=-1)
    return images, cls, labels


def dense_label_propagation(image_emb, class_emb, k=20, alpha=0.99, max_iter=20, tol=1e-6):
    """The same equations with dense N x N matrices (see the module docstring)."""
    import numpy as np
    import scipy.sparse
    import scipy.sparse.linalg
    import torch
    import torch.nn.functional as F

    from modgap.adapt.graph import projection

    c = class_emb.shape[0]
    nodes = torch.cat([class_emb, image_emb]) @ projection(class_emb)
    nodes = F.normalize(nodes, dim=-1)
    n = nodes.shape[0]
    a = (nodes @ nodes.T + 1) / 2
    a = a * (1 - torch.eye(n))
    val, idx = torch.topk(a, k, dim=1)
    top = torch.zeros_like(a).scatter_(1, idx, val)
    del a
    w = (top + top.T) / 2
    del top
    d = torch.diag(w.sum(dim=1) ** -0.5)
    wn = (d @ (w @ d)).numpy()
    del w, d
    system = scipy.sparse.eye(n) - alpha * wn
    del wn
    scores = []
    for j in range(c):
        y = np.zeros(n)
        y[j] = 1.0
        f, _ = scipy.sparse.linalg.cg(system, y, rtol=tol, maxiter=max_iter)
        scores.append(f)
    scores = np.stack(scores, axis=1)
    labels = scores.argmax(1)
    # as modgap does: nodes the propagation never reached take the nearest seed's class
    unreached = np.abs(scores).max(1) == 0
    if unreached.any():
        labels[unreached] = (nodes[torch.from_numpy(unreached)] @ nodes[:c].T).argmax(1).numpy()
    return torch.from_numpy(labels[c:])


def child(method: str, n: int, dim: int, classes: int, k: int, threads: int, out: str) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from modgap.adapt.graph import label_propagation

    images, cls, truth = make_inputs(n, dim, classes)
    base = _status()["VmRSS"]
    reset = _reset_peak()
    t0 = time.perf_counter()
    if method == "sparse":
        labels = label_propagation(images, cls, k=k, progress=False)
    else:
        labels = dense_label_propagation(images, cls, k=k)
    seconds = time.perf_counter() - t0
    st = _status()
    peak = st["VmHWM"] if reset else st["VmRSS"]
    np.save(out, labels.numpy())
    print(json.dumps({
        "method": method, "n": n, "seconds": seconds, "extra_mib": peak - base, "total_mib": peak,
        "peak_reset": reset, "accuracy": float((labels == truth).float().mean()),
    }))


def run_one(method, n, args, folder):
    out = str(Path(folder) / f"{method}-{n}.npy")
    cmd = [sys.executable, __file__, "--child", method, "--n", str(n), "--dim", str(args.dim),
           "--classes", str(args.classes), "--k", str(args.k), "--threads", str(args.threads), "--out", out]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        return {"method": method, "n": n, "error": res.stderr.strip().splitlines()[-1:]}, None
    import numpy as np

    return json.loads(res.stdout.strip().splitlines()[-1]), np.load(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000, 50000])
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--dense-max", type=int, default=10000,
                   help="largest N the dense version runs at (it needs ~5 N^2 x 4 bytes plus N^2 x 8)")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--child", choices=["sparse", "dense"], help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--smoke", action="store_true",
                   help="N=200, 32 dims, k=10, both methods, one thread: checks that it runs")
    args = p.parse_args(argv)
    if args.child:
        child(args.child, args.n, args.dim, args.classes, args.k, args.threads, args.out)
        return 0
    if args.smoke:
        args.sizes, args.dim, args.k, args.dense_max, args.threads = [200], 32, 10, 200, 1

    print(f"label propagation, {args.dim} dims, {args.classes} classes, k={args.k}, {args.threads} threads")
    header = f"{'N':>7}  {'method':<7} {'seconds':>8} {'extra MiB':>10} {'total MiB':>10} {'accuracy':>9}  labels"
    print(header)
    print("-" * len(header))
    failed = 0
    with tempfile.TemporaryDirectory() as folder:
        for n in args.sizes:
            sparse, s_labels = run_one("sparse", n, args, folder)
            dense, d_labels = (run_one("dense", n, args, folder) if n <= args.dense_max else (None, None))
            for r in (sparse, dense):
                if r is None:
                    continue
                if "error" in r:
                    print(f"{n:>7}  {r['method']:<7} failed: {r['error']}")
                    failed += 1
                    continue
                note = ""
                if r["method"] == "dense" and s_labels is not None:
                    diff = int((s_labels != d_labels).sum())
                    note = "identical" if diff == 0 else f"{diff} of {n} differ"
                print(f"{n:>7}  {r['method']:<7} {r['seconds']:>8.2f} {r['extra_mib']:>10.0f} "
                      f"{r['total_mib']:>10.0f} {r['accuracy']:>9.3f}  {note}")
            if dense is None:
                print(f"{n:>7}  {'dense':<7} {'skipped':>8} (needs about {9 * n * n * 4 / 2 ** 30:.0f} GiB)")
            elif "error" not in dense and "error" not in sparse:
                print(f"{'':>7}  ratio   {dense['seconds'] / sparse['seconds']:>8.1f}x "
                      f"{dense['extra_mib'] / max(sparse['extra_mib'], 1):>9.1f}x  (dense / sparse)")
    if failed:
        print(f"{failed} run(s) failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
