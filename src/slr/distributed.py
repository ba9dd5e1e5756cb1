"""Data-parallel training with torchrun: who this process is, summing scores across processes, and the relaunch
that lets one DVC stage start several processes.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them this is the single process of an ordinary run, and
every helper here degrades to a no-op, so the training loop has one code path.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from slr.cli import RELAUNCHED
from slr.errors import UserError


@dataclass(frozen=True)
class Process:
    rank: int
    world_size: int
    device: torch.device
    local_world_size: int = 1  # processes of the run on this machine (torchrun's LOCAL_WORLD_SIZE)

    @property
    def is_main(self) -> bool:
        """Rank 0 is the one writer of checkpoints, metrics and logs."""
        return self.rank == 0

    def log(self, message: str) -> None:
        """Print on rank 0 only, so an N-process run logs each line once."""
        if self.is_main:
            print(message, flush=True)

    @property
    def loader_workers(self) -> int:
        """DataLoader workers: on a GPU box they keep batches coming while the GPU computes, sharing the cores this
        process may use with the other processes of the run on this machine (not of every machine); on CPU they
        would only take cores from the model (augmentation is seeded per clip, so the count never changes results)."""
        if self.device.type != "cuda":
            return 0
        return max(1, min(8, len(os.sched_getaffinity(0)) // self.local_world_size))


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ


def start(device_type: str) -> Process:
    """Join the process group if launched by torchrun (NCCL on GPUs, gloo on CPU) and pick this process's device of
    `device_type`, the one `slr.devices.decide` chose (never asked of torch again: it may disagree with the driver)."""
    if not under_torchrun():
        return Process(0, 1, torch.device(device_type))
    local_rank, local_world = int(os.environ["LOCAL_RANK"]), int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if device_type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(
                f"process {local_rank} has no GPU ({torch.cuda.device_count()} visible); "
                "lower train.nproc_per_node to the number of GPUs"
            )
        torch.cuda.set_device(local_rank)
        device, backend = torch.device("cuda", local_rank), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    dist.init_process_group(backend)
    return Process(dist.get_rank(), dist.get_world_size(), device, local_world)


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def gather(value: Any) -> list[Any]:
    """`value` of every process, in rank order (a list of one in a single-process run): small picklable values."""
    if not dist.is_initialized():
        return [value]
    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def send_from(source: int, value: Any) -> Any:
    """Process `source`'s `value`, received by every process (the value itself in a single-process run)."""
    if not dist.is_initialized():
        return value
    box = [value if dist.get_rank() == source else None]
    dist.broadcast_object_list(box, src=source)
    return box[0]


def share_buffers(model: nn.Module) -> None:
    """Give every process rank 0's buffers (BatchNorm statistics). DDP sends them at the start of each forward pass,
    but each process's last training batch then updated its own copy: validation must score, on every process, the
    model that rank 0 saves."""
    if dist.is_initialized():
        for buffer in model.buffers():
            dist.broadcast(buffer, 0)


def sum_across(values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum of `values` over every process (the tensor itself in a single-process run)."""
    if dist.is_initialized():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def relaunch(nproc_per_node: int, argv: Sequence[str], threads: int) -> int:
    """Run this same command as `nproc_per_node` processes under torchrun on this machine; return its exit code.

    torchrun runs in this process, so a failed rank ends in one line, not in torchrun's traceback: the message of a
    rank that stopped on bad input (exit 2, `cli.report_error`), else which rank failed and how. Multi-node runs
    start torchrun on each node themselves (see docs/training.md); this covers the one-machine case that `dvc repro` launches.
    The processes inherit the devices this one holds (`slr.devices.claimed`): CUDA_VISIBLE_DEVICES names exactly the
    run's GPUs, or on CPU the cores it holds, `threads` per process.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    options = ["--standalone", f"--nproc-per-node={nproc_per_node}", *argv]
    print(f"train: launching {nproc_per_node} processes: torchrun {' '.join(options)}", flush=True)
    os.environ[RELAUNCHED] = "1"  # the workers inherit it: they leave reporting their errors to this process
    # torchrun would set 1 thread per process and print a banner saying so; each process computes with `threads`
    os.environ["OMP_NUM_THREADS"] = str(threads)
    # torchrun logs each failure over several lines (the signals it sends, the exit codes); the one line below says
    # what happened, and a crashed worker's own traceback is in its output
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        run(get_args_parser().parse_args(options))
    except ChildFailedError as exc:
        failures = sorted(exc.failures.items())
        # Every rank meets the same bad input, but torchrun stops the others when the first exits, so any of them
        # may be the one that wrote it down.
        said = [f for _, f in failures if f.exitcode == 2 and f.error_file_data.get("slr") == "user_error"]
        if said:
            raise UserError(said[0].message) from None
        rank, first = exc.get_first_failure()
        raise UserError(f"training process {rank} of {nproc_per_node} failed with exit code {first.exitcode}; "
                        "its output above says why") from None
    finally:
        os.environ.pop(RELAUNCHED, None)
    return 0
