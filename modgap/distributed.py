"""modgap on several processes: torch.distributed, as open_clip trains.

Launch any job with ``torchrun`` (``torchrun --nproc_per_node 4 -m modgap
refine ...``) or initialise a process group yourself and call modgap from
Python on every rank with the same arguments. Then:

- embedding (:func:`modgap.embed.encode_pixels`, so ``Clip.encode_images``
  and every method's passes) gives each rank a contiguous share of the
  images and gathers the rows back in the input's order, so every rank
  holds the whole result, the same as one process computes;
- :class:`~modgap.adapt.CLIPRefine` and :class:`~modgap.adapt.ReCLIP` split
  each global batch (``batch_size`` is the batch over all ranks) across the
  ranks, gather the features the losses compare (with gradient, so the
  contrastive and HyCD logits span the global batch), and sum the gradients
  over the ranks before each step: the weights after a step are those of
  one process on the same global batch;
- only rank 0 shows progress bars and writes files (:func:`is_main`).

Without an initialised process group every function here is the
single-process identity, so the rest of modgap calls them unconditionally.

Gradients are summed by :func:`sum_gradients`, the reduction
``DistributedDataParallel`` performs, done explicitly: modgap's losses are
computed on the encoders' outputs outside the model's ``forward`` (DDP's
hooks expect every rank to run ``forward``), and a rank whose share of a
batch is empty (ReCLIP trains only where its branches agree) still has to
take part in the reduction.
"""
from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

__all__ = [
    "all_gather_objects",
    "barrier",
    "broadcast_",
    "broadcast_object",
    "gather_rows",
    "gather_with_grad",
    "init_from_env",
    "is_distributed",
    "is_main",
    "rank",
    "shard_bounds",
    "shutdown",
    "sum_gradients",
    "sum_value",
    "world_size",
]


def is_distributed() -> bool:
    """Whether a process group of more than one rank is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """The number of ranks (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Whether this process writes files, logs and shows progress bars."""
    return rank() == 0


def init_from_env(backend: str | None = None, timeout_s: float = 1800.0) -> bool:
    """Initialise the process group that ``torchrun`` describes in the
    environment (``WORLD_SIZE``, ``RANK``, ``MASTER_ADDR``, ...), once;
    ``backend`` defaults to NCCL where CUDA is available, else gloo, and
    each rank takes the GPU of its ``LOCAL_RANK``. Returns whether this call
    started the group (so that its caller, and only it, ends it with
    :func:`shutdown`); a ``WORLD_SIZE`` of 1 or none, or a group already
    there, starts nothing (:func:`is_distributed` says whether one runs)."""
    if dist.is_available() and dist.is_initialized():
        return False
    size = os.environ.get("WORLD_SIZE")
    if size is None or int(size) <= 1:
        return False
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE is set but this torch build has no torch.distributed")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return True


def shard_bounds(n: int, of_rank: int | None = None) -> tuple[int, int]:
    """``(start, stop)`` of a rank's contiguous share of ``n`` items: the
    first ``n % world_size`` ranks take one more, so shares differ by at
    most one and, concatenated in rank order, give ``0 .. n`` back."""
    r = rank() if of_rank is None else of_rank
    base, extra = divmod(n, world_size())
    start = r * base + min(r, extra)
    return start, start + base + (r < extra)


def _comm_device() -> torch.device:
    # gloo moves CPU tensors, NCCL CUDA ones
    if dist.get_backend() == "gloo":
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())


def _gather_padded(x: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's ``x`` (first dimensions may differ), in rank order,
    without gradient."""
    dev = _comm_device()
    n = torch.tensor([x.shape[0]], device=dev)
    sizes = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(sizes, n)
    sizes = [int(s) for s in sizes]
    # gloo has no bf16 or fp16 collectives everywhere: those rows travel as fp32
    wire = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    padded = torch.zeros((max(sizes), *x.shape[1:]), dtype=wire, device=dev)
    padded[:x.shape[0]] = x.detach().to(dev, wire)
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return [p[:s].to(x.device, x.dtype) for p, s in zip(parts, sizes)]


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """The rows of every rank's ``x``, concatenated in rank order (shares
    may differ in length); ``x`` itself without a process group."""
    if not is_distributed():
        return x
    return torch.cat(_gather_padded(x))


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """:func:`gather_rows` with this rank's own rows still attached to the
    autograd graph (open_clip's scheme for the global-batch contrastive
    loss): a loss on the result sends gradient to this rank's rows only, and
    :func:`sum_gradients` adds up the ranks' shares."""
    if not is_distributed():
        return x
    parts = _gather_padded(x)
    parts[rank()] = x
    return torch.cat(parts)


def sum_gradients(params) -> None:
    """Sum the gradients of ``params`` over the ranks, in place, in one
    flat buffer; a parameter without a gradient on a rank counts as zeros
    there (and has the sum afterwards)."""
    if not is_distributed():
        return
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    wire = torch.float64 if any(g.dtype == torch.float64 for g in grads) else torch.float32
    flat = torch.cat([g.reshape(-1).to(wire) for g in grads]).to(_comm_device())
    dist.all_reduce(flat)
    flat = flat.to(params[0].device)
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(p).to(p.dtype)
        offset += n


def sum_value(value: float) -> float:
    """A number summed over the ranks."""
    if not is_distributed():
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return float(t)


def broadcast_(x: torch.Tensor) -> torch.Tensor:
    """Rank 0's ``x``, written into ``x`` on every rank (a computation
    repeated on every rank need not give the same bits on a GPU: atomic
    adds, for one, sum in any order)."""
    if not is_distributed():
        return x
    buf = x.detach().to(_comm_device())
    dist.broadcast(buf, src=0)
    x.copy_(buf.to(x.device))
    return x


def broadcast_object(obj):
    """Rank 0's picklable ``obj`` on every rank (``obj`` alone)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_objects(obj) -> list:
    """Every rank's picklable ``obj``, in rank order (``[obj]`` alone)."""
    if not is_distributed():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def shutdown() -> None:
    """Destroy the process group :func:`init_from_env` started."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (nothing without a process group)."""
    if is_distributed():
        dist.barrier()
