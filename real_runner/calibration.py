"""Calibration measurements with the real runner's own code: one calibration process's work.

`pipesim calibrate` starts K of these processes (real_runner/calibration_launch.py), separate
from any run that is later validated. Each one:

1. times, at every shape of the plan, the runner's modules (real_runner/model.py,
   residual.py) the way the executor runs them: forward inside the runner's saved-tensor
   tracker, backward through `torch.autograd.backward`, fresh input leaves each repetition,
   warm-up first, trimmed means kept (a step is a sum of them; simulator.calibrate.trimmed_mean);
   the pieces take turns in rounds for at least `min_compute_seconds`, so a shared host's slow
   spells weigh on all of them alike. Pieces: an attention sublayer, an MLP sublayer, the
   embedding, the head (final norm, LM head, loss) and the AttnRes aggregation over k = 1..max
   sources;
2. records what each piece saves for backward, counted like the runner's tracker (storages,
   once, parameters excluded), with its inputs' storages set apart;
3. measures a matmul's FLOP/s and an elementwise add's bytes/s (the cost model's roofline);
4. sweeps point-to-point messages between every directed rank pair with the runner's own
   `Links` (one process group per direction, sends completed by a waiter thread), the way the
   runner's pipeline meets them: the receive posted first, the sender timing its send call and
   the round trip, plus the time to complete a receive whose data is in place
   (real_runner/calibration_p2p.py; simulator/calibrate.py says why);
5. probes what a receive posted after its send costs more when both ranks computed just before
   it (for programs that post receives late; the rendezvous protocol charges it);
6. probes how much traffic slows the compute of its two ends and what CPU its threads take (the
   host work of moving bytes runs on the cores that compute; real_runner/calibration_traffic.py).

All ranks time compute at the same time, as pipeline ranks compute at the same time; the
point-to-point sweep runs one pair at a time while the other ranks wait at a barrier.
Writes raw-rank-<r>.json (simulator.calibrate.RankMeasurements).

    python -m real_runner.calibration --plan PLAN.json --out DIR   # with RANK etc. set
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor

from real_runner.distributed import synchronize
from real_runner.model import TORCH_DTYPES, Embedding, ModelSpec, OutputHead, RMSNorm, Sublayer
from real_runner.calibration_p2p import measure_late_receive, measure_p2p
from real_runner.calibration_traffic import measure_traffic_load
from real_runner.p2p import Links
from real_runner.residual import depth_attention
from real_runner.saved_tensors import SavedTensorTracker
from simulator.calibrate import (
    AggregationPoint,
    CalibrationPlan,
    CalibrationShape,
    PieceTiming,
    RankMeasurements,
    SavedBytesRecord,
    ShapeMeasurements,
    trimmed_mean,
)

__all__ = ["measure_shape", "measure_roofline", "saved_storages", "main"]

Forward = Callable[[], Tensor]


class _PieceTimer:
    """Times one piece: forward inside the runner's tracker, backward through autograd."""

    def __init__(self, prepare: Callable[[], list[Tensor]],
                 forward: Callable[[list[Tensor]], Tensor], params: list[torch.nn.Parameter],
                 device: torch.device) -> None:
        self.prepare, self.forward, self.device = prepare, forward, device
        self.tracker = SavedTensorTracker(params)
        self.forward_s: list[float] = []
        self.backward_s: list[float] = []

    def sample(self, keep: bool) -> None:
        """One forward and backward on fresh inputs (made untimed)."""
        inputs = self.prepare()
        synchronize(self.device)
        t0 = time.perf_counter()
        with self.tracker.scope((0, 0)):
            out = self.forward(inputs)
        synchronize(self.device)
        t1 = time.perf_counter()
        torch.autograd.backward([out], None if out.dim() == 0 else [torch.ones_like(out)])
        synchronize(self.device)
        t2 = time.perf_counter()
        self.tracker.release((0, 0))
        if keep:
            self.forward_s.append(t1 - t0)
            self.backward_s.append(t2 - t1)

    def means(self) -> tuple[float, float, int]:
        """(forward, backward) trimmed means and the number of samples."""
        return (trimmed_mean(self.forward_s), trimmed_mean(self.backward_s),
                len(self.forward_s))


def _time_in_rounds(timers: list[_PieceTimer], plan: CalibrationPlan) -> None:
    """Sample every timer once per round, warm-up rounds first, until each has
    `num_repeats` samples and `min_compute_seconds` have passed (or `max_compute_seconds`).

    Taking turns, rather than timing one piece after another, exposes every piece to the same
    spells of a shared host; a median over a longer window is what a pipelined run's many
    micro-batches average to.
    """
    for _ in range(plan.num_warmup):
        for timer in timers:
            timer.sample(keep=False)
    started = time.perf_counter()
    rounds = 0
    while True:
        for timer in timers:
            timer.sample(keep=True)
        rounds += 1
        elapsed = time.perf_counter() - started
        if rounds >= 3 and elapsed > plan.max_compute_seconds:
            return
        if rounds >= plan.num_repeats and elapsed >= plan.min_compute_seconds:
            return


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def saved_storages(fn: Forward) -> tuple[Tensor, dict[int, int]]:
    """Run `fn` and return its output and {storage pointer: bytes} of what it saved."""
    seen: dict[int, int] = {}

    def pack(tensor: Tensor) -> Tensor:
        storage = tensor.untyped_storage()
        if storage.nbytes():
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = fn()
    return out, seen


def _split_saved(fn: Forward, params: list[torch.nn.Parameter],
                 inputs: list[Tensor]) -> tuple[int, list[bool]]:
    """(bytes saved besides parameters and inputs, whether each input's storage was saved)."""
    _, seen = saved_storages(fn)
    skip = {p.untyped_storage().data_ptr() for p in params}
    input_ptrs = [t.untyped_storage().data_ptr() for t in inputs]
    internal = sum(n for ptr, n in seen.items() if ptr not in skip and ptr not in input_ptrs)
    return internal, [ptr in seen for ptr in input_ptrs]


def measure_shape(shape: CalibrationShape, device: torch.device,
                  plan: CalibrationPlan) -> ShapeMeasurements:
    """Time and weigh every piece of the runner's model at one shape."""
    dtype = TORCH_DTYPES[shape.dtype]
    spec = ModelSpec(num_sublayers=2, hidden_size=shape.hidden_size, num_heads=shape.num_heads,
                     ffn_hidden_size=shape.ffn_hidden_size, vocab_size=shape.vocab_size,
                     mlp=shape.mlp, residual_kind="standard", block_size=None, seed=0)
    b, t, d = shape.micro_batch_size, shape.seq_len, shape.hidden_size
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(b, t, d, generator=gen).to(device=device, dtype=dtype)
    tokens = torch.randint(shape.vocab_size, (b, t), generator=gen).to(device)
    targets = torch.randint(shape.vocab_size, (b, t), generator=gen).to(device)

    def leaf() -> Tensor:
        return base.detach().clone().requires_grad_()

    attention = Sublayer(spec, 1).to(device=device, dtype=dtype)
    mlp = Sublayer(spec, 2).to(device=device, dtype=dtype)
    embedding = Embedding(spec).to(device=device, dtype=dtype)
    head = OutputHead(spec).to(device=device, dtype=dtype)
    modules = {"attention": attention, "mlp": mlp, "embedding": embedding, "head": head}
    calls: dict[str, Callable[[Tensor], Tensor]] = {
        "attention": attention, "mlp": mlp, "embedding": lambda _: embedding(tokens),
        "head": lambda h: head.loss(h, targets)}
    timers = {kind: _PieceTimer(lambda: [leaf()], lambda xs, call=calls[kind]: call(xs[0]),
                                list(module.parameters()), device)
              for kind, module in modules.items()}
    aggregation = _aggregation_timers(shape, base, device)
    _time_in_rounds([*timers.values(), *(timer for _, timer, _ in aggregation)], plan)
    pieces, saved = [], []
    for kind, module in modules.items():
        fwd_s, bwd_s, n = timers[kind].means()
        pieces.append(PieceTiming(kind=kind, forward_s=fwd_s, backward_s=bwd_s, num_samples=n))
        call, params = calls[kind], list(module.parameters())
        h = leaf()
        inputs = [tokens] if kind == "embedding" else [h, targets] if kind == "head" else [h]
        internal, kept = _split_saved(lambda: call(h), params, inputs)
        saved.append(SavedBytesRecord(kind=kind, saved_bytes=internal, input_saved=kept[0],
                                      second_input_saved=len(kept) > 1 and kept[1]))
    points = []
    for k, timer, weigh in aggregation:
        fwd_s, bwd_s, _ = timer.means()
        internal, all_kept = weigh()
        points.append(AggregationPoint(num_sources=k, forward_s=fwd_s, backward_s=bwd_s,
                                       saved_bytes=internal, sources_saved=all_kept))
    return ShapeMeasurements(shape=shape, pieces=pieces, saved=saved, aggregation=points,
                             index_bytes_per_token=tokens.element_size())


def _aggregation_timers(shape: CalibrationShape, base: Tensor, device: torch.device
                        ) -> list[tuple[int, _PieceTimer, Callable[[], tuple[int, bool]]]]:
    """Per k = 1..max_sources: a timer of depth_attention over k sources (block inverse RMS
    computed inside) and a function weighing what it saves (bytes, all sources kept)."""
    if shape.max_sources == 0:
        return []
    spec_query = torch.nn.Parameter(torch.zeros(shape.hidden_size, device=device,
                                                dtype=base.dtype))
    key_norm = RMSNorm(shape.hidden_size).to(device=device, dtype=base.dtype)
    params = [spec_query, *key_norm.parameters()]

    def aggregate(xs: list[Tensor]) -> Tensor:
        return depth_attention(xs, spec_query, key_norm)

    entries = []
    for k in range(1, shape.max_sources + 1):
        def prepare(k: int = k) -> list[Tensor]:
            return [base.detach().clone().requires_grad_() for _ in range(k)]

        def weigh(prepare: Callable[[], list[Tensor]] = prepare) -> tuple[int, bool]:
            sources = prepare()
            internal, kept = _split_saved(lambda: aggregate(sources), params, sources)
            return internal, all(kept)

        entries.append((k, _PieceTimer(prepare, aggregate, params, device), weigh))
    return entries


def measure_roofline(shape: CalibrationShape, device: torch.device,
                     plan: CalibrationPlan) -> tuple[float, float]:
    """(matmul FLOP/s at the MLP's shape, elementwise-add bytes/s on one plane)."""
    dtype = TORCH_DTYPES[shape.dtype]
    rows = shape.micro_batch_size * shape.seq_len
    x = torch.randn(rows, shape.hidden_size, device=device, dtype=dtype)
    w = torch.randn(shape.hidden_size, shape.ffn_hidden_size, device=device, dtype=dtype)
    matmul_s = _repeat(lambda: x @ w, device, plan)
    y = torch.randn_like(x)
    add_s = _repeat(lambda: x + y, device, plan)
    flops = 2.0 * rows * shape.hidden_size * shape.ffn_hidden_size
    return flops / matmul_s, 3.0 * x.numel() * x.element_size() / add_s


def _repeat(fn: Callable[[], Tensor], device: torch.device, plan: CalibrationPlan) -> float:
    times = []
    for i in range(plan.num_warmup + max(plan.num_repeats, 20)):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        if i >= plan.num_warmup:
            times.append(time.perf_counter() - t0)
    return _median(times)


def _init(plan: CalibrationPlan) -> tuple[int, int, torch.device]:
    env = os.environ
    rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
    store = dist.TCPStore(env["MASTER_ADDR"], int(env["MASTER_PORT"]), world, is_master=False,
                          timeout=timedelta(seconds=plan.timeout_s))
    if plan.backend == "nccl":
        device = torch.device("cuda", int(env.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", store=store, rank=rank, world_size=world,
                                timeout=timedelta(seconds=plan.timeout_s), device_id=device)
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo", store=store, rank=rank, world_size=world,
                                timeout=timedelta(seconds=plan.timeout_s))
    return rank, world, device


def main(argv: list[str] | None = None) -> int:
    """Measure on this rank and write raw-rank-<r>.json."""
    parser = argparse.ArgumentParser(prog="python -m real_runner.calibration")
    parser.add_argument("--plan", required=True, help="CalibrationPlan JSON file")
    parser.add_argument("--out", required=True, help="directory for raw-rank-<r>.json")
    args = parser.parse_args(argv)
    plan = CalibrationPlan.model_validate_json(Path(args.plan).read_text())
    rank, world, device = _init(plan)
    links = Links(rank, device)
    try:
        links.ensure([(a, b) for a in range(world) for b in range(world) if a != b])
        shapes = [measure_shape(shape, device, plan) for shape in plan.shapes]
        largest = max(plan.shapes, key=lambda s: s.hidden_size * s.ffn_hidden_size)
        flops_per_s, bytes_per_s = measure_roofline(largest, device, plan)
        dist.barrier()
        sweeps = measure_p2p(rank, world, links, device, plan)
        late = measure_late_receive(rank, links, device, plan)
        traffic = measure_traffic_load(rank, links, device, plan)
        result = RankMeasurements(
            rank=rank, world_size=world, backend=plan.backend, device=_describe(device),
            hostname=socket.gethostname(), num_threads=torch.get_num_threads(),
            device_memory_bytes=_device_memory_bytes(device), shapes=shapes,
            matmul_flops_per_s=flops_per_s, elementwise_bytes_per_s=bytes_per_s, p2p=sweeps,
            late_receive=[] if late is None else [late],
            traffic_load=[] if traffic is None else [traffic])
        out = Path(args.out) / f"raw-rank-{rank}.json"
        out.write_text(result.model_dump_json(indent=1))
        dist.barrier()
        return 0
    finally:
        links.close()
        if dist.is_initialized():
            dist.destroy_process_group()


def _device_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _describe(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads per rank)"


if __name__ == "__main__":
    sys.exit(main())
