"""Executes one rank's action list of a schedule: forwards, backwards, sends and receives.

The schedule (simulator.schedule) says *when*; this module decides *what* from the rank's own
state. For each (chunk, micro-batch) between its F and its B the executor keeps a `_Pass`:
the inputs as leaves (received ones and ones read from the block store), the output state, the
tensors actually sent, and the loss on the last chunk. Receives may come earlier than their
compute action (the schedule moves them to keep each pair of ranks in send order), so received
data waits in an inbox keyed by (chunk, micro-batch).

Backward of (c, m): the roots are the tensors SEND_F sent, with the gradients RECV_B brought
back (or the loss on the last chunk), plus every stored block c owns with the gradients later
readers on this rank deposited (block_store.py). After backward, received leaves' gradients go
into SEND_B (in reverse wire order, as the simulator's manifest lists them) and store readers'
gradients are deposited for their owners.

Every receive is posted as early as the order of its peer's messages allows: at the step's start
and after each action, each peer's receives are posted in schedule order until one whose
buffers are not known yet (a RECV_B before its SEND_F: the gradients' shapes are those of what
was sent). On gloo a receive posted after its send costs a handshake through both ranks'
communication threads, milliseconds on a host whose cores all compute (docs/accuracy-report.md);
posted early, a message moves as soon as it is sent, and the action only waits for the data.
An AttnRes forward message is an int64 header (what the payload holds, block_store.py) and then
the payload. The receiver posts both at once from the inbound link's poster thread (real_runner/
p2p.py), sizing the payload from the layout (`expected_payload`), and checks the header against
that guess when the message has come. (Posting the payload only once its header had arrived left
the sender's send call waiting on the receiver's poster thread: on a host whose cores all
compute, 1.1-1.6 ms on average per forward message against 0.4-0.8 for the rest, up to 9 ms;
docs/accuracy-report.md.) Receive buffers thus exist from their posting, not from their action:
device_allocated_bytes counts them earlier, the saved-for-backward accounting (what validation
compares) does not change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from real_runner.block_store import (
    BlockStore,
    blocks_to_send,
    decode_header,
    encode_header,
    expected_payload,
    header_length,
)
from real_runner.chunks import ModelChunk
from real_runner.distributed import memory_allocated
from real_runner.p2p import Links, Receipt
from real_runner.residual import ResidualState
from real_runner.saved_tensors import SavedTensorTracker
from real_runner.tracing import Recorder
from simulator.layout import Layout
from simulator.schedule import Action, ActionKind
from simulator.trace_schema import MemoryRecord, P2PRecord

__all__ = ["PipelineExecutor"]


@dataclass
class _Inbound:
    """A received forward message waiting for its F."""

    wire: list[tuple[str, Tensor]]
    held: list[int]
    origins: dict[int, int]


@dataclass
class _Pass:
    """One (chunk, micro-batch) between its forward and its backward."""

    wire_inputs: list[tuple[str, Tensor]] = field(default_factory=list)
    store_inputs: list[tuple[int, Tensor]] = field(default_factory=list)
    origins: dict[int, int] = field(default_factory=dict)
    output: ResidualState | None = None
    loss: Tensor | None = None
    sent: list[tuple[str, Tensor]] = field(default_factory=list)
    has_sent: bool = False


class PipelineExecutor:
    """Runs the actions of one rank for one training step at a time."""

    def __init__(self, *, rank: int, layout: Layout, actions: list[Action],
                 chunks: dict[int, ModelChunk], comm_mode: str, attnres: bool,
                 activation_shape: tuple[int, int, int], dtype: torch.dtype,
                 device: torch.device, links: Links, recorder: Recorder,
                 tracker: SavedTensorTracker, num_microbatches: int) -> None:
        self.rank, self.layout, self.actions, self.chunks = rank, layout, actions, chunks
        self.mode = comm_mode if attnres else "standard"
        self.attnres = attnres
        self.shape, self.dtype, self.device = activation_shape, dtype, device
        self.links, self.recorder, self.tracker = links, recorder, tracker
        self.num_microbatches = num_microbatches
        self.last_chunk = layout.num_chunks - 1
        self.first_local_chunk = min(chunks)
        self.store = BlockStore()
        self.step = 0
        self.inputs = self.targets = torch.empty(0)
        self.loss_sum: Tensor | None = None
        self._passes: dict[tuple[int, int], _Pass] = {}
        self._inbox_f: dict[tuple[int, int], _Inbound] = {}
        self._inbox_b: dict[tuple[int, int], list[Tensor]] = {}
        self._grads_out: dict[tuple[int, int], list[tuple[str, Tensor]]] = {}
        self._expected = {c: expected_payload(layout, self.mode, c)
                          for c in chunks if c > 0} if attnres else {}
        """dst chunk -> (wire blocks, partial) its forward message should carry."""
        self._recv_order = self._receives_by_peer()
        self._recv_next: dict[int, int] = {}
        self._posted: dict[tuple[ActionKind, int, int], Receipt] = {}
        self._handlers = {
            ActionKind.FORWARD: self._forward, ActionKind.BACKWARD: self._backward,
            ActionKind.SEND_F: self._send_forward, ActionKind.RECV_F: self._recv_forward,
            ActionKind.SEND_B: self._send_backward, ActionKind.RECV_B: self._recv_backward,
        }

    def run_step(self, step: int, inputs: Tensor, targets: Tensor,
                 before_action: Callable[[Action], None] | None = None) -> float | None:
        """Run every action of the step; returns the mean loss on the last chunk's rank."""
        self.step, self.inputs, self.targets = step, inputs, targets
        self.loss_sum = None
        for chunk in self.chunks.values():
            chunk.zero_grad(set_to_none=True)
        self._recv_next = dict.fromkeys(self._recv_order, 0)
        self._post_receives()
        for action in self.actions:
            if before_action is not None:
                before_action(action)
            self.links.check()
            self._handlers[action.kind](action)
            self._post_receives()
        self.links.drain()
        assert not (self._passes or self._inbox_f or self._inbox_b or self._grads_out
                    or self._posted), \
            "state left over after the step"
        assert self.store.is_empty(), "block store not released after the step"
        return None if self.loss_sum is None else float(self.loss_sum)

    # ----- forward -------------------------------------------------------------------------

    def _forward(self, action: Action) -> None:
        c, m = action.stage_index, action.microbatch_index
        chunk = self.chunks[c]
        with self.recorder.compute(str(action), "F", c, m):
            if c == 0:
                run = _Pass(origins={0: self.rank} if self.attnres else {})
            else:
                run = self._take_inputs(c, m)
            with self.tracker.scope((c, m)):
                state = chunk.embed(self.inputs[m].to(self.device)) if c == 0 else \
                    self._input_state(run)
                had = set(state.blocks) if c != 0 else set()
                run.output = chunk.run_sublayers(state)
                if c == self.last_chunk:
                    loss = chunk.loss(run.output, self.targets[m].to(self.device))
                    run.loss = loss / self.num_microbatches
                    self._add_loss(run.loss.detach())
            produced = [j for j in run.output.blocks if j not in had]
            for j in produced:
                run.origins[j] = self.rank
            if self.mode in ("cached", "cached-own"):
                self._store_blocks(c, m, run, produced)
        self._passes[(c, m)] = run
        self._sample_memory("forward", c, m, self.tracker.key_bytes((c, m)))

    def _add_loss(self, loss: Tensor) -> None:
        self.loss_sum = loss.float().cpu() if self.loss_sum is None else \
            self.loss_sum + loss.float().cpu()

    def _take_inputs(self, c: int, m: int) -> _Pass:
        inbound = self._inbox_f.pop((c, m))
        run = _Pass(origins=dict(inbound.origins))
        for name, tensor in inbound.wire:
            run.wire_inputs.append((name, tensor.requires_grad_()))
        for block in inbound.held:
            leaf, origin = self.store.read(m, block)
            run.store_inputs.append((block, leaf))
            run.origins[block] = origin
        return run

    def _input_state(self, run: _Pass) -> ResidualState:
        state = ResidualState()
        for name, leaf in run.wire_inputs:
            if name == "hidden":
                state.hidden = leaf
            elif name == "partial":
                state.partial = leaf
            else:
                state.blocks[int(name[1:])] = leaf
        for block, leaf in run.store_inputs:
            state.blocks[block] = leaf
        return state

    def _store_blocks(self, c: int, m: int, run: _Pass, produced: list[int]) -> None:
        for name, leaf in run.wire_inputs:
            if name.startswith("b"):
                block = int(name[1:])
                self.store.put(m, block, leaf, c, run.origins[block])
        assert run.output is not None
        for block in produced:
            self.store.put(m, block, run.output.blocks[block], c, self.rank)

    def _send_forward(self, action: Action) -> None:
        c, m = action.stage_index, action.microbatch_index
        run = self._passes[(c, m)]
        assert run.output is not None
        peer = self.layout.chunk_rank(c + 1)
        if not self.attnres:
            run.sent, run.has_sent = [("hidden", run.output.hidden)], True
            self._isend(action, "forward", peer, c, c + 1, run.sent, header=None)
            return
        out = run.output
        wire, held = blocks_to_send(self.mode, list(out.blocks), run.origins, peer,
                                    self.store.sent_to(peer, m))
        run.sent, run.has_sent = [(f"b{j}", out.blocks[j]) for j in wire], True
        if out.partial is not None:
            run.sent.append(("partial", out.partial))
        if self.mode != "naive":
            self.store.mark_sent(peer, m, wire)
        header = encode_header(self._num_blocks, c, m, out.partial is not None, wire, held,
                               run.origins, self.device)
        self._isend(action, "forward", peer, c, c + 1, run.sent, header=header)

    def _recv_forward(self, action: Action) -> None:
        c, m = action.stage_index, action.microbatch_index
        peer = self.layout.chunk_rank(c - 1)
        start = self.recorder.now()
        received = self.links.wait_recv(peer, self._posted.pop((action.kind, c, m)))
        if not self.attnres:
            wire = [("hidden", received[0])]
            self._inbox_f[(c, m)] = _Inbound(wire, [], {})
            self._record(action, "recv", "forward", peer, c - 1, c, wire, 0, start)
            return
        header, payload = received[0], received[1:]
        info = decode_header(header)
        if (info.src_chunk, info.microbatch) != (c - 1, m):
            raise RuntimeError(f"rank {self.rank}: expected the forward of chunk {c - 1}, "
                               f"micro-batch {m} from rank {peer}, got chunk {info.src_chunk}, "
                               f"micro-batch {info.microbatch}: messages out of order")
        missing = [j for j in info.held if not self.store.holds(m, j)]
        if missing:
            raise RuntimeError(f"rank {self.rank}: rank {peer} did not send blocks {missing} "
                               f"of micro-batch {m} for chunk {c}, assuming this rank holds "
                               f"them, but its store lacks them")
        wire_blocks, partial = self._expected[c]
        if [j for j, _ in info.wire] != wire_blocks or info.has_partial != partial:
            raise RuntimeError(
                f"rank {self.rank}: the forward of chunk {c - 1}, micro-batch {m} from rank "
                f"{peer} carries blocks {[j for j, _ in info.wire]} (partial: "
                f"{info.has_partial}), but this rank posted receives for blocks {wire_blocks} "
                f"(partial: {partial}) from the layout: the ranks' block bookkeeping disagrees")
        names = [f"b{j}" for j, _ in info.wire] + (["partial"] if info.has_partial else [])
        wire = list(zip(names, payload))
        self._inbox_f[(c, m)] = _Inbound(wire, info.held, dict(info.wire))
        self._record(action, "recv", "forward", peer, c - 1, c, wire,
                     header.numel() * header.element_size(), start)

    def _receives_by_peer(self) -> dict[int, list[Action]]:
        """Each peer's receive actions in schedule order (the order it sends them)."""
        order: dict[int, list[Action]] = {}
        for action in self.actions:
            if action.kind in (ActionKind.RECV_F, ActionKind.RECV_B):
                order.setdefault(self._recv_peer(action), []).append(action)
        return order

    def _recv_peer(self, action: Action) -> int:
        offset = -1 if action.kind == ActionKind.RECV_F else 1
        return self.layout.chunk_rank(action.stage_index + offset)

    def _post_receives(self) -> None:
        """Post every receive whose buffers are known, per peer in order."""
        for peer, order in self._recv_order.items():
            index = self._recv_next[peer]
            while index < len(order):
                action = order[index]
                key = (action.kind, action.stage_index, action.microbatch_index)
                receipt = self._post_forward(peer, key[1]) if action.kind == ActionKind.RECV_F \
                    else self._post_backward(peer, key[1], key[2])
                if receipt is None:
                    break
                self._posted[key] = receipt
                index += 1
            self._recv_next[peer] = index

    def _post_forward(self, peer: int, c: int) -> Receipt:
        if not self.attnres:
            return self.links.post_recv(peer, [self._empty()])
        header = torch.empty(header_length(self._num_blocks), dtype=torch.int64,
                             device=self.device)
        wire_blocks, partial = self._expected[c]
        payload = [self._empty() for _ in range(len(wire_blocks) + int(partial))]
        return self.links.post_recv(peer, [header, *payload], background=True)

    def _post_backward(self, peer: int, c: int, m: int) -> Receipt | None:
        run = self._passes.get((c, m))
        if run is None or not run.has_sent:
            return None
        buffers = [torch.empty_like(tensor, memory_format=torch.contiguous_format)
                   for _, tensor in reversed(run.sent)]
        return self.links.post_recv(peer, buffers)

    # ----- backward ------------------------------------------------------------------------

    def _backward(self, action: Action) -> None:
        c, m = action.stage_index, action.microbatch_index
        run = self._passes.pop((c, m))
        with self.recorder.compute(str(action), "B", c, m):
            roots: dict[int, tuple[Tensor, Tensor | None]] = {}
            if c == self.last_chunk:
                assert run.loss is not None
                roots[id(run.loss)] = (run.loss, None)
            else:
                grads = self._inbox_b.pop((c, m))
                for (_, tensor), grad in zip(run.sent, grads):
                    _add_root(roots, tensor, grad)
            for entry in self.store.owned(m, c):
                if entry.deposit is not None:
                    _add_root(roots, entry.tensor, entry.deposit)
            tensors, grads_in = zip(*roots.values())
            torch.autograd.backward(list(tensors), list(grads_in))
            if c > 0:
                self._grads_out[(c, m)] = [(name, _grad_of(leaf)) for name, leaf
                                           in reversed(run.wire_inputs)]
            for block, leaf in run.store_inputs:
                self.store.deposit(m, block, _grad_of(leaf))
            if c == self.first_local_chunk:  # every owner on this rank has run its backward
                self.store.release(m)
        released = self.tracker.release((c, m))
        self._sample_memory("backward", c, m, released)

    def _send_backward(self, action: Action) -> None:
        c, m = action.stage_index, action.microbatch_index
        grads = self._grads_out.pop((c, m))
        self._isend(action, "backward", self.layout.chunk_rank(c - 1), c, c - 1, grads,
                    header=None)

    def _recv_backward(self, action: Action) -> None:
        c, m = action.stage_index, action.microbatch_index
        peer = self.layout.chunk_rank(c + 1)
        start = self.recorder.now()
        sent = self._passes[(c, m)].sent
        received = self.links.wait_recv(peer, self._posted.pop((action.kind, c, m)))
        wire = [(name, tensor) for (name, _), tensor in zip(reversed(sent), received)]
        self._inbox_b[(c, m)] = [t for _, t in reversed(wire)]
        self._record(action, "recv", "backward", peer, c + 1, c, wire, 0, start)

    # ----- helpers -------------------------------------------------------------------------

    @property
    def _num_blocks(self) -> int:
        assert self.layout.num_blocks is not None
        return self.layout.num_blocks

    def _empty(self) -> Tensor:
        return torch.empty(self.shape, dtype=self.dtype, device=self.device)

    def _isend(self, action: Action, direction: str, peer: int, src_chunk: int,
               dst_chunk: int, named: list[tuple[str, Tensor]], header: Tensor | None) -> None:
        wire = [(name, t.detach()) for name, t in named]
        tensors = ([header] if header is not None else []) + [t for _, t in wire]
        header_bytes = 0 if header is None else header.numel() * header.element_size()
        start, step = self.recorder.now(), self.step

        def on_complete(end_perf_s: float) -> None:
            self._record(action, "send", direction, peer, src_chunk, dst_chunk, wire,
                         header_bytes, start, self.recorder.to_trace_time(end_perf_s), step)

        self.links.isend(peer, tensors, on_complete)

    def _record(self, action: Action, op: str, direction: str, peer: int, src_chunk: int,
                dst_chunk: int, wire: list[tuple[str, Tensor]], header_bytes: int,
                start_s: float, end_s: float | None = None, step: int | None = None) -> None:
        sizes = [t.numel() * t.element_size() for _, t in wire]
        src_rank = self.rank if op == "send" else peer
        dst_rank = peer if op == "send" else self.rank
        self.recorder.write(P2PRecord(
            step=self.step if step is None else step, action=str(action), op=op,
            direction=direction, peer=peer, src_rank=src_rank, dst_rank=dst_rank,
            src_chunk=src_chunk, dst_chunk=dst_chunk, microbatch=action.microbatch_index,
            tensor_names=[name for name, _ in wire], tensor_bytes=sizes, total_bytes=sum(sizes),
            header_bytes=header_bytes, start_s=start_s,
            end_s=self.recorder.now() if end_s is None else end_s))

    def _sample_memory(self, event: str, c: int, m: int, chunk_bytes: int) -> None:
        self.recorder.write(MemoryRecord(
            step=self.step, t_s=self.recorder.now(), event=event, chunk=c, microbatch=m,
            saved_bytes=self.tracker.live_bytes, chunk_saved_bytes=chunk_bytes,
            device_allocated_bytes=memory_allocated(self.device)))


def _add_root(roots: dict[int, tuple[Tensor, Tensor | None]], tensor: Tensor,
              grad: Tensor) -> None:
    """Add a backward root, summing gradients when the same tensor is a root twice."""
    if id(tensor) in roots:
        _, previous = roots[id(tensor)]
        grad = grad if previous is None else previous + grad
    roots[id(tensor)] = (tensor, grad)


def _grad_of(leaf: Tensor) -> Tensor:
    return leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)
