"""Device and process-group handling: the only file that touches torch.cuda.

Backend follows device: one GPU per local rank with NCCL when CUDA is available, gloo on the CPU
otherwise. The rendezvous store is kept (the watchdog uses it as a side channel):
- under torchrun, `dist.rendezvous("env://")` connects to torchrun's store;
- under `pipesim measure` (PIPESIM_LAUNCHER_STORE=1) the launcher process hosts the TCPStore, so
  it outlives any rank, and every rank connects as a client;
- a plain single process (no RANK in the environment) hosts its own store, world size 1.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

__all__ = [
    "DistEnv",
    "init_distributed",
    "shutdown",
    "synchronize",
    "memory_allocated",
    "max_memory_allocated",
    "reset_peak_memory",
    "wait_until_complete",
    "connect_store",
]

LAUNCHER_STORE_ENV = "PIPESIM_LAUNCHER_STORE"


@dataclass
class DistEnv:
    """This process's place in the run."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device
    backend: str
    store: dist.Store
    store_host: str
    store_port: int
    run_id: str


def _device_for(local_rank: int) -> torch.device:
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def connect_store(host: str, port: int, world_size: int, timeout_s: float) -> dist.TCPStore:
    """A client connection to an existing TCPStore."""
    return dist.TCPStore(host, port, world_size, is_master=False,
                         timeout=timedelta(seconds=timeout_s))


def init_distributed(timeout_s: float) -> DistEnv:
    """Join the process group described by the environment (torchrun's variables).

    `timeout_s` bounds the rendezvous and every collective or point-to-point wait.
    """
    env = os.environ
    timeout = timedelta(seconds=timeout_s)
    if "RANK" not in env:
        store = dist.TCPStore("127.0.0.1", 0, 1, is_master=True, timeout=timeout)
        rank, world_size, host, port = 0, 1, "127.0.0.1", store.port
    else:
        rank, world_size = int(env["RANK"]), int(env["WORLD_SIZE"])
        host, port = env["MASTER_ADDR"], int(env["MASTER_PORT"])
        if env.get(LAUNCHER_STORE_ENV) == "1":
            store = connect_store(host, port, world_size, timeout_s)
        else:
            store, rank, world_size = next(dist.rendezvous("env://", rank, world_size,
                                                           timeout=timeout))
    local_rank = int(env.get("LOCAL_RANK", rank))
    local_world_size = int(env.get("LOCAL_WORLD_SIZE", world_size))
    device = _device_for(local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size,
                            timeout=timeout, **kwargs)
    run_id = env.get("PIPESIM_RUN_ID") or env.get("TORCHELASTIC_RUN_ID") or "local"
    return DistEnv(rank, world_size, local_rank, local_world_size, device, backend, store,
                   host, port, run_id)


def shutdown() -> None:
    """Leave the process group if one is up."""
    if dist.is_initialized():
        dist.destroy_process_group()


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work (span edges); nothing to do on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def memory_allocated(device: torch.device) -> int | None:
    """torch.cuda.memory_allocated on GPU, None on the CPU."""
    return int(torch.cuda.memory_allocated(device)) if device.type == "cuda" else None


def max_memory_allocated(device: torch.device) -> int | None:
    """torch.cuda.max_memory_allocated since the last reset, None on the CPU."""
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def reset_peak_memory(device: torch.device) -> None:
    """Start a new max_memory_allocated window (each step)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def wait_until_complete(work: dist.Work, device: torch.device) -> None:
    """Block the calling thread until `work` is done.

    gloo's wait() blocks until the transfer finished. NCCL's wait() only orders streams, so on
    GPU the thread polls is_completed(), which queries the operation's CUDA end event.
    """
    if device.type != "cuda":
        work.wait()
        return
    while not work.is_completed():
        time.sleep(50e-6)
