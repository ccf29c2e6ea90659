"""Data-parallel training across processes, as multi-GPU Caffe splits a batch.

Caffe's ``P2PSync`` runs one solver per GPU on its own share of the data, sums the
gradients of all solvers and divides by their number (the loss layers already normalise per
solver), and before every iteration copies the root solver's blobs - BatchNorm statistics
included - to the others. ``DistributedDataParallel`` does the same: gradients are averaged
over ranks, and ``broadcast_buffers`` copies rank 0's buffers (the BatchNorm statistics) to
every rank before each forward pass. So R ranks x per-rank batch b x ``iter_size`` i train
exactly as one process with batch b and ``iter_size`` R x i.

``--sync-bn`` (:func:`sync_batchnorm`) instead normalises each training BatchNorm with the
statistics of the whole global batch (all ranks), keeping Caffe's blob semantics: the
mean/variance sums and the factor are updated with the global mean and the unbiased global
variance, ``m`` being the element count over all ranks.

Processes are started by ``torchrun`` (or :func:`launch_local`, which runs
``torch.distributed.run`` for a local multi-process job); each reads ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` from the environment.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import types
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from ..errors import ModelLibsError

# Rank 0 tests and snapshots while the other ranks wait in the next gradient exchange.
TIMEOUT = datetime.timedelta(hours=6)


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in a (possibly single-process) job."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @classmethod
    def from_env(cls) -> DistContext:
        """The job torchrun describes in the environment (one process when it does not)."""
        try:
            world = int(os.environ.get("WORLD_SIZE", "1"))
            rank = int(os.environ.get("RANK", "0"))
            local = int(os.environ.get("LOCAL_RANK", str(rank)))
        except ValueError as exc:
            raise ModelLibsError(f"torchrun environment: {exc}") from None
        return cls(rank, world, local)

    def device(self, kind: str) -> torch.device:
        """``cpu``, or this rank's GPU (``cuda:LOCAL_RANK``); refuses CUDA without CUDA."""
        if kind == "cpu":
            return torch.device("cpu")
        if kind != "cuda":
            raise ModelLibsError(f"--device {kind}: use cpu or cuda")
        if not torch.cuda.is_available():
            raise ModelLibsError(
                f"--device cuda: PyTorch {torch.__version__} sees no CUDA device "
                "(a CPU build of torch, or no GPU visible)"
            )
        n = torch.cuda.device_count()
        if self.local_rank >= n:
            raise ModelLibsError(f"local rank {self.local_rank} has no GPU: only {n} visible")
        return torch.device("cuda", self.local_rank)

    def init(self, device: torch.device) -> None:
        """Join the process group: NCCL between GPUs, gloo on the CPU."""
        if not self.distributed or dist.is_initialized():
            return
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend, rank=self.rank, world_size=self.world, timeout=TIMEOUT)

    def barrier(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.barrier()


def wrap(net: torch.nn.Module, ctx: DistContext, device: torch.device) -> torch.nn.Module:
    """``net`` in DistributedDataParallel (gradients averaged, rank 0's buffers broadcast)."""
    if not ctx.distributed:
        return net
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        net, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=True
    )


def _all_reduce(t: Tensor) -> Tensor:
    """Differentiable sum over ranks (its backward sums the gradients over ranks)."""
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(t, op=dist.ReduceOp.SUM)


def _sync_normalize(self, x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None) -> Tensor:
    """BatchNorm over the global batch of all ranks, with Caffe's statistics update."""
    if self.use_global_stats:
        return type(self).normalize(self, x, weight, bias)
    if x.dtype != torch.float32:
        x = x.float()
    with torch.autocast(x.device.type, enabled=False):
        dims = [d for d in range(x.dim()) if d != 1]
        shape = [1, -1] + [1] * (x.dim() - 2)
        # One exchange for the sums and the element count (a tensor: no host sync).
        n_local = x.new_tensor([float(x.numel() // x.shape[1])])
        sums = _all_reduce(torch.cat([x.sum(dims), n_local]))
        m = sums[-1].detach()
        mean = sums[:-1] / m
        centred = x - mean.view(shape)
        var = _all_reduce((centred * centred).sum(dims)) / m
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if weight is not None:
            y = y * weight.view(shape)
        if bias is not None:
            y = y + bias.view(shape)
        with torch.no_grad():
            self.blob2.mul_(self.maf).add_(1.0)
            self.blob0.mul_(self.maf).add_(mean.detach())
            unbiased = torch.where(m > 1, m / (m - 1).clamp(min=1), torch.ones_like(m))
            self.blob1.mul_(self.maf).add_(var.detach() * unbiased)
        return y


def sync_batchnorm(net: torch.nn.Module) -> int:
    """Make every training-mode BatchNorm of ``net`` use global-batch statistics; returns
    how many layers changed. Needs an initialised process group to run."""
    from .layers import BatchNorm

    n = 0
    for module in net.modules():
        if isinstance(module, BatchNorm) and not module.use_global_stats:
            module.normalize = types.MethodType(_sync_normalize, module)
            n += 1
    return n


def launch_local(nproc: int, argv: list[str], env: dict[str, str] | None = None) -> int:
    """Run ``python -m model_libs <argv>`` in ``nproc`` local processes through
    ``torch.distributed.run`` (torchrun); returns its exit status."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "model_libs",
        *argv,
    ]
    return subprocess.call(cmd, env={**os.environ, **(env or {})})
