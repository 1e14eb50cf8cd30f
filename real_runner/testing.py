"""Run many scenarios in one local process group: the harness of the multi-process tests.

Starting processes costs seconds on a small CPU machine, so `run_scenarios` starts `world_size`
gloo processes once (torch.multiprocessing, spawn; the store on a free port the OS picks) and
runs every scenario in that group, one after the other. Each scenario writes its normal run
directory (`out_dir/<index>`), and each rank saves its losses and parameter gradients to
`out_dir/<index>/result-rank-<r>.pt`; the caller compares them with the unsplit reference
(`reference_result`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from real_runner.chunks import ReferenceModel, make_batch, reference_step
from real_runner.distributed import init_distributed, shutdown
from real_runner.model import TORCH_DTYPES
from real_runner.p2p import Links
from real_runner.session import RunnerOptions, RunSession, model_spec
from simulator.scenario import load_scenario

__all__ = ["ScenarioResult", "run_scenarios", "reference_result"]


@dataclass
class ScenarioResult:
    """One scenario's outcome, gathered over every rank."""

    run_dir: Path
    loss: float
    """Loss of the last step, from the rank of the last chunk."""
    grads: dict[str, torch.Tensor]
    """Every parameter's gradient of the last step, from the rank that owns it."""


def _worker(rank: int, world_size: int, port: int, scenarios: list[dict[str, Any]],
            out_dir: str, pseudo_query_init_std: float, num_steps: int) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), PIPESIM_LAUNCHER_STORE="1")
    torch.set_num_threads(1)
    env = init_distributed(timeout_s=120)
    links = Links(env.rank, env.device)
    try:
        for index, data in enumerate(scenarios):
            run_dir = Path(out_dir) / str(index)
            options = RunnerOptions(out_dir=run_dir, num_steps=num_steps, num_warmup_steps=0,
                                    pseudo_query_init_std=pseudo_query_init_std,
                                    collect_grads=True)
            result = RunSession(env, load_scenario(data), options, links).run()
            torch.save({"losses": result.losses, "grads": result.grads},
                       run_dir / f"result-rank-{rank}.pt")
    finally:
        links.close()
        shutdown()


def run_scenarios(scenarios: list[dict[str, Any]], world_size: int, out_dir: str | Path, *,
                  pseudo_query_init_std: float = 0.0, num_steps: int = 1) -> list[ScenarioResult]:
    """Run every scenario (as mappings) on `world_size` local gloo ranks; gather the results."""
    store = dist.TCPStore("127.0.0.1", 0, world_size, is_master=True, wait_for_workers=False,
                          timeout=timedelta(seconds=120))
    mp.start_processes(_worker, args=(world_size, store.port, scenarios, str(out_dir),
                                      pseudo_query_init_std, num_steps),
                       nprocs=world_size, start_method="spawn")
    results = []
    for index in range(len(scenarios)):
        run_dir = Path(out_dir) / str(index)
        parts = [torch.load(run_dir / f"result-rank-{r}.pt") for r in range(world_size)]
        grads: dict[str, torch.Tensor] = {}
        for part in parts:
            assert not set(grads) & set(part["grads"]), "a parameter on two ranks"
            grads.update(part["grads"])
        losses = [part["losses"][-1] for part in parts if part["losses"][-1] is not None]
        assert len(losses) == 1, "exactly one rank computes the loss"
        results.append(ScenarioResult(run_dir, losses[0], grads))
    return results


def reference_result(scenario: dict[str, Any], *, pseudo_query_init_std: float = 0.0,
                     step: int = 0) -> tuple[float, dict[str, torch.Tensor]]:
    """Loss and gradients of the unsplit model on the same data, in one process."""
    loaded = load_scenario(scenario)
    spec = model_spec(loaded, pseudo_query_init_std)
    model = ReferenceModel(spec).to(TORCH_DTYPES[loaded.model.dtype])
    m = loaded.model
    inputs, targets = make_batch(spec, step, loaded.pipeline.num_microbatches,
                                 m.micro_batch_size, m.seq_len)
    loss = reference_step(model, inputs, targets)
    grads = {}
    for name, param in model.named_parameters():
        assert param.grad is not None, f"{name} got no gradient in the reference"
        grads[name] = param.grad.detach().float().clone()
    return float(loss), grads
