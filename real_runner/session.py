"""One measured run of a scenario on this rank: build the chunks, run the steps, write the trace.

`RunSession` is used once per scenario inside an initialised process group (the tests run many
scenarios in one group). It takes the model partition from simulator.layout and the action list
from simulator.schedule - nothing else from the simulator - builds this rank's chunks with the
reference model's weights, and runs `num_warmup_steps + num_steps` steps through the executor.
Rank 0 writes manifest.json with `complete: false` at the start and rewrites it with `complete:
true` once every rank has closed its trace.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.metadata
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor

from real_runner.chunks import ModelChunk, make_batch
from real_runner.distributed import DistEnv, max_memory_allocated, reset_peak_memory
from real_runner.executor import PipelineExecutor
from real_runner.model import TORCH_DTYPES, ModelSpec
from real_runner.p2p import Links
from real_runner.saved_tensors import SavedTensorTracker
from real_runner.tracing import Recorder
from simulator.errors import UserError
from simulator.layout import Layout, build_layout
from simulator.scenario import Scenario
from simulator.schedule import Action, build_schedule, check_schedule
from simulator.trace_schema import (
    SCHEMA_VERSION,
    RunFailure,
    RunManifest,
    StepRecord,
    rank_trace_name,
    write_manifest,
)

__all__ = ["RunnerOptions", "RunResult", "RunnerConfigError", "RunSession", "check_runnable",
           "model_spec", "build_chunks", "link_pairs", "run_manifest"]


class RunnerConfigError(UserError):
    """The scenario asks for something the real runner does not implement."""


@dataclass
class RunnerOptions:
    """How to run and measure (not part of the scenario)."""

    out_dir: Path
    num_steps: int | None = None
    """Measured steps; None takes run.num_steps from the scenario."""
    num_warmup_steps: int | None = None
    """Warm-up steps; None takes run.num_warmup_steps."""
    profile: bool = False
    """Also write PyTorch profiler traces (profile-rank-<r>.json, shapes recorded)."""
    timeout_s: float = 60.0
    """Bound on any wait for another rank, and on how long ranks outlive a failed one."""
    pseudo_query_init_std: float = 0.0
    """Test only: non-zero pseudo-queries make the depth softmax non-uniform (paper: 0)."""
    collect_grads: bool = False
    """Test only: return this rank's parameter gradients of the last step."""
    before_action: Callable[[int, Action], None] | None = None
    """Test only: called with (step, action) before each action (failure injection)."""


@dataclass
class RunResult:
    """What one rank's run returns."""

    losses: list[float | None]
    """Mean loss per step (warm-up included) on the last chunk's rank; None elsewhere."""
    grads: dict[str, Tensor] = field(default_factory=dict)
    """Parameter name -> gradient of the last step (with collect_grads)."""


def check_runnable(scenario: Scenario, world_size: int) -> None:
    """Raise RunnerConfigError unless the real runner can run `scenario` on `world_size` ranks."""
    p = scenario.pipeline
    if world_size != p.num_stages:
        raise RunnerConfigError(
            f"pipeline.num_stages = {p.num_stages} but {world_size} processes were started; the "
            f"runner uses one process per pipeline stage: start {p.num_stages} processes "
            f"(--nproc {p.num_stages} / --nproc-per-node {p.num_stages})")
    par = scenario.parallelism
    if par.data_parallel != 1 or par.tensor_parallel != 1:
        raise RunnerConfigError(
            f"parallelism = data_parallel {par.data_parallel}, tensor_parallel "
            f"{par.tensor_parallel}: the real runner implements pipeline parallelism only; "
            f"set both to 1 to measure the pipeline")
    if scenario.model.moe is not None:
        raise RunnerConfigError("model.moe is set: the real runner has dense MLPs only; remove "
                                "model.moe to measure a dense model of the same width")
    if scenario.training.recompute != "none":
        raise RunnerConfigError(
            f"training.recompute = {scenario.training.recompute!r}: the real runner keeps all "
            f"activations (no recomputation); set training.recompute: none to measure")


def model_spec(scenario: Scenario, pseudo_query_init_std: float = 0.0) -> ModelSpec:
    """The model the scenario describes, as the runner builds it."""
    m = scenario.model
    return ModelSpec(num_sublayers=m.num_sublayers, hidden_size=m.hidden_size,
                     num_heads=m.num_heads, ffn_hidden_size=m.ffn_hidden_size,
                     vocab_size=m.vocab_size, mlp=m.mlp, residual_kind=scenario.residual.kind,
                     block_size=scenario.block_size(), seed=scenario.run.seed,
                     pseudo_query_init_std=pseudo_query_init_std)


def build_chunks(spec: ModelSpec, layout: Layout, rank: int, device: torch.device,
                 dtype: torch.dtype) -> dict[int, ModelChunk]:
    """This rank's chunks (c = rank, rank + P, ...), weights as in the unsplit model."""
    last = layout.num_chunks - 1
    return {c: ModelChunk(spec, layout.chunk_sublayers(c), has_embedding=c == 0,
                          has_head=c == last).to(device=device, dtype=dtype)
            for c in layout.rank_chunks(rank)}


def link_pairs(layout: Layout) -> list[tuple[int, int]]:
    """Directed rank pairs that carry messages: forward c -> c+1 and backward c+1 -> c."""
    pairs = set()
    for c in range(layout.num_chunks - 1):
        src, dst = layout.chunk_rank(c), layout.chunk_rank(c + 1)
        pairs.update({(src, dst), (dst, src)})
    return sorted(pairs)


class RunSession:
    """One scenario on one rank."""

    def __init__(self, env: DistEnv, scenario: Scenario, options: RunnerOptions,
                 links: Links) -> None:
        check_runnable(scenario, env.world_size)
        self.env, self.scenario, self.options = env, scenario, options
        self.layout = build_layout(scenario)
        p = scenario.pipeline
        schedule = build_schedule(p.schedule, p.num_stages, p.num_virtual_stages,
                                  p.num_microbatches)
        check_schedule(schedule)
        self.spec = model_spec(scenario, options.pseudo_query_init_std)
        self.dtype = TORCH_DTYPES[scenario.model.dtype]
        self.chunks = build_chunks(self.spec, self.layout, env.rank, env.device, self.dtype)
        links.ensure(link_pairs(self.layout))
        options.out_dir.mkdir(parents=True, exist_ok=True)
        self.recorder = Recorder(options.out_dir / rank_trace_name(env.rank), rank=env.rank,
                                 world_size=env.world_size, backend=env.backend,
                                 device=env.device, scenario_name=scenario.name)
        params = [q for chunk in self.chunks.values() for q in chunk.parameters()]
        self.tracker = SavedTensorTracker(params)
        m = scenario.model
        self.executor = PipelineExecutor(
            rank=env.rank, layout=self.layout, actions=schedule.actions[env.rank],
            chunks=self.chunks, comm_mode=p.comm_mode, attnres=self.spec.attnres,
            activation_shape=(m.micro_batch_size, m.seq_len, m.hidden_size), dtype=self.dtype,
            device=env.device, links=links, recorder=self.recorder, tracker=self.tracker,
            num_microbatches=p.num_microbatches)
        run = scenario.run
        self.num_steps = run.num_steps if options.num_steps is None else options.num_steps
        self.num_warmup = (run.num_warmup_steps if options.num_warmup_steps is None
                           else options.num_warmup_steps)
        self.started_unix_s = time.time()

    @property
    def total_steps(self) -> int:
        """Warm-up plus measured steps."""
        return self.num_warmup + self.num_steps

    def run(self, on_step: Callable[[int], None] | None = None) -> RunResult:
        """Run warm-up and measured steps; close the trace as complete."""
        self.begin()
        losses = []
        profiler = self._profiler()
        with profiler if profiler is not None else contextlib.nullcontext():
            for step in range(self.total_steps):
                losses.append(self.step(step))
                if profiler is not None:
                    profiler.step()
                if on_step is not None:
                    on_step(step)
        if profiler is not None:
            profiler.export_chrome_trace(
                str(self.options.out_dir / f"profile-rank-{self.env.rank}.json"))
        return self.end(losses)

    def begin(self) -> None:
        """Write the initial manifest and start the clock (collective)."""
        if self.env.rank == 0:
            self._write_manifest(complete=False)
        dist.barrier()
        self.recorder.start_clock()

    def end(self, losses: list[float | None]) -> RunResult:
        """Close the trace as complete and, once every rank has, the manifest (collective)."""
        grads = self._grads() if self.options.collect_grads else {}
        self.recorder.close(complete=True, status="ok")
        dist.barrier()  # every rank's trace is in place
        if self.env.rank == 0:
            self._write_manifest(complete=True)
        return RunResult(losses=losses, grads=grads)

    def step(self, step: int) -> float | None:
        """Run one step (collective); returns the loss on the last chunk's rank.

        Python's cyclic garbage collector runs between steps, untimed, and is off during a
        step (as Megatron's manual GC): a full collection over the many tensors and autograd
        nodes of a step costs milliseconds at a random action, on one rank, which the rest
        of the pipeline then waits for.
        """
        gc.collect()
        dist.barrier()  # align the ranks' step starts; not part of the measured time
        self.recorder.step = step
        self.tracker.reset_peaks()
        reset_peak_memory(self.env.device)
        m = self.scenario.model
        inputs, targets = make_batch(self.spec, step, self.scenario.pipeline.num_microbatches,
                                     m.micro_batch_size, m.seq_len)
        hook = self.options.before_action
        gc.disable()
        try:
            start = self.recorder.now()
            loss = self.executor.run_step(
                step, inputs, targets,
                before_action=None if hook is None else (lambda action: hook(step, action)))
            end = self.recorder.now()
        finally:
            gc.enable()
        self.recorder.write(StepRecord(
            step=step, warmup=step < self.num_warmup, start_s=start, end_s=end,
            duration_s=end - start, loss=loss, peak_saved_bytes=self.tracker.peak_bytes,
            peak_saved_bytes_by_chunk={str(c): b for c, b in
                                       sorted(self.tracker.chunk_peak_bytes.items())},
            device_max_allocated_bytes=max_memory_allocated(self.env.device)))
        self.recorder.flush()
        return loss

    def _grads(self) -> dict[str, Tensor]:
        grads = {}
        for chunk in self.chunks.values():
            for name, param in chunk.named_parameters():
                assert param.grad is not None, f"{name} has no gradient"
                grads[name] = param.grad.detach().float().cpu().clone()
        return grads

    def _profiler(self) -> torch.profiler.profile | None:
        if not self.options.profile:
            return None
        activities = [torch.profiler.ProfilerActivity.CPU]
        if self.env.device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        return torch.profiler.profile(activities=activities, record_shapes=True)

    def manifest(self, *, complete: bool, failure: RunFailure | None = None) -> RunManifest:
        """The run manifest as this rank knows it."""
        return run_manifest(self.scenario, self.options, world_size=self.env.world_size,
                            backend=self.env.backend, device_type=self.env.device.type,
                            num_steps=self.num_steps, num_warmup_steps=self.num_warmup,
                            started_unix_s=self.started_unix_s, complete=complete,
                            failure=failure)

    def _write_manifest(self, *, complete: bool) -> None:
        write_manifest(self.options.out_dir, self.manifest(complete=complete))


def run_manifest(scenario: Scenario, options: RunnerOptions, *, world_size: int, backend: str,
                 device_type: str, num_steps: int, num_warmup_steps: int,
                 started_unix_s: float, complete: bool,
                 failure: RunFailure | None = None) -> RunManifest:
    """manifest.json of a measured run."""
    return RunManifest(
        schema_version=SCHEMA_VERSION, complete=complete, scenario_name=scenario.name,
        scenario=scenario.model_dump(mode="json"), world_size=world_size, backend=backend,
        device=device_type, versions=_versions(), num_steps=num_steps,
        num_warmup_steps=num_warmup_steps, started_unix_s=started_unix_s,
        finished_unix_s=time.time() if complete or failure else None,
        options={"profile": options.profile, "timeout_s": options.timeout_s,
                 "pseudo_query_init_std": options.pseudo_query_init_std},
        failure=failure, trace_files=[rank_trace_name(r) for r in range(world_size)])


def _versions() -> dict[str, str]:
    try:
        package = importlib.metadata.version("attnres-pipesim")
    except importlib.metadata.PackageNotFoundError:
        package = "not installed"
    return {"python": platform.python_version(), "torch": torch.__version__,
            "attnres-pipesim": package}
