"""The real runner: the AttnRes model split into pipeline stages over torch.distributed.

What it does, and where:
- `model.py`, `residual.py`, `chunks.py`: a small pre-norm decoder whose residual is standard,
  Full AttnRes or Block AttnRes exactly as in the paper (pseudo-query per sublayer, zero-init;
  RMSNorm on keys only; no 1/sqrt(d); fp32 softmax over sources; b_0 = embedding as a permanent
  source; Fig. 2's block order; a final aggregation before the final norm and LM head), cut into
  chunks along simulator.layout, plus the unsplit reference model.
- `executor.py`: executes a rank's action list from simulator.schedule (GPipe, 1F1B,
  interleaved 1F1B). `block_store.py`: in the cached modes each rank keeps each micro-batch's
  blocks, sends only what the receiver lacks (from its own bookkeeping; a small int64 header
  tells the receiver what is on the wire and what to take from its store), and routes the
  gradients of reused blocks back to the chunk that holds them before that chunk's SEND_B.
- `p2p.py`: one process group per directed rank pair, async sends with completion times,
  blocking receives. `distributed.py`: device/backend (NCCL with CUDA, gloo otherwise).
- `saved_tensors.py`, `tracing.py`: bytes saved for backward (saved-tensor hooks), compute and
  p2p spans, steps; written in simulator.trace_schema's format (docs/trace-schema.md).
- `watchdog.py`, `worker.py`: a failed rank stops every other rank within the timeout, each
  naming it; traces are closed as incomplete, never half-written.
- `session.py` (one scenario on one rank), `launch.py` (`pipesim measure`: K local processes),
  `__main__.py` (torchrun entry), `summary.py` (figures from traces), `testing.py` (many
  scenarios in one local process group, for tests).

It takes only the scenario, the layout and the schedule from the simulator; what crosses each
boundary is decided from the runner's own state, so comparing its traces with the simulator's
predictions is a real check.

    torchrun --nproc-per-node 4 -m real_runner scenarios/fig3_toy.yaml --out runs/measure/fig3
    pipesim measure scenarios/fig3_toy.yaml --nproc 4
"""

__all__: list[str] = []
