"""gloo path, end to end: two real gloo processes send tensors of known sizes under the profiler
(record_shapes=True) and with Flight Recorder on; the traces they write are ingested and must
report exactly the bytes, peers, ops and steps that were sent.

Expected bytes come from torch itself (numel x element_size of the tensors sent), not from the
dtype tables the readers use.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

from simulator.ingest import load_trace  # noqa: E402

NUM_STEPS = 3  # step 0 is the profiler's warm-up and is not recorded
RECORDED_STEPS = (1, 2)


def _transfers(step: int) -> list[tuple[str, int, tuple[int, ...], torch.dtype]]:
    """(kind, source rank, shape, dtype) of every transfer in one step, in issue order."""
    return [
        ("blocking", 0, (1000 + step,), torch.float32),
        ("async", 1, (3, 512), torch.bfloat16),
        ("batch", 0, (100,), torch.int64),
        ("batch", 1, (7, 11), torch.float16),
    ]


def _nbytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    return torch.empty(shape, dtype=dtype).nelement() * torch.empty(0, dtype=dtype).element_size()


def _step(rank: int, step: int) -> None:
    peer = 1 - rank
    batch = []
    for kind, src, shape, dtype in _transfers(step):
        tensor = torch.full(shape, float(step), dtype=dtype)
        if kind == "blocking":
            dist.send(tensor, dst=peer) if rank == src else dist.recv(tensor, src=peer)
        elif kind == "async":
            (dist.isend(tensor, dst=peer) if rank == src else dist.irecv(tensor, src=peer)).wait()
        else:
            batch.append(dist.P2POp(dist.isend if rank == src else dist.irecv, tensor, peer))
    for request in dist.batch_isend_irecv(batch):
        request.wait()
    dist.all_reduce(torch.ones(256))


def _worker(rank: int, port: int, out_dir: str) -> None:
    from torch.profiler import ProfilerActivity, profile, record_function, schedule

    os.environ["TORCH_FR_BUFFER_SIZE"] = "256"
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    out = Path(out_dir)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True, acc_events=True,
                 schedule=schedule(wait=0, warmup=1, active=NUM_STEPS - 1, repeat=1)) as prof:
        for step in range(NUM_STEPS):
            with record_function(f"PP:{rank}F{step}"):
                torch.randn(32, 32) @ torch.randn(32, 32)
            _step(rank, step)
            prof.step()
    suffix = ".json.gz" if rank == 1 else ".json"  # both plain and gzip traces are read
    (out / "profiler").mkdir(exist_ok=True)
    prof.export_chrome_trace(str(out / "profiler" / f"trace_rank{rank}{suffix}"))
    c10d = torch._C._distributed_c10d
    if hasattr(c10d, "_dump_fr_trace"):
        (out / "fr").mkdir(exist_ok=True)
        (out / "fr" / f"nccl_trace_rank_{rank}").write_bytes(c10d._dump_fr_trace(True, True, False))
    dist.barrier()
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def gloo_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gloo_run")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(_worker, args=(port, str(out)), nprocs=2, join=True)
    return out


def _expected_ops(rank: int) -> list[tuple[str, int | None, int, int]]:
    """(op, peer, bytes, step) of each op rank `rank` issued in the recorded steps."""
    ops = []
    for step in RECORDED_STEPS:
        for _, src, shape, dtype in _transfers(step):
            ops.append(("send" if src == rank else "recv", 1 - rank, _nbytes(shape, dtype), step))
        ops.append(("all_reduce", None, _nbytes((256,), torch.float32), step))
    return ops


@pytest.mark.slow
def test_profiler_traces_report_what_was_sent(gloo_run):
    run = load_trace(gloo_run / "profiler")
    assert run.source_format == "torch_profiler" and run.world_size == 2
    for rank in (0, 1):
        got = [(o.op, o.peer_rank, o.num_bytes, o.step_index) for o in run.comm_ops(rank=rank)]
        assert got == _expected_ops(rank)
    expected_pairs: dict[tuple[int, int], int] = {}
    for step in RECORDED_STEPS:
        for _, src, shape, dtype in _transfers(step):
            pair = (src, 1 - src)
            expected_pairs[pair] = expected_pairs.get(pair, 0) + _nbytes(shape, dtype)
    assert run.bytes_by_pair() == expected_pairs
    assert run.bytes_by_pair("recv") == expected_pairs
    assert run.p2p_mismatches() == []
    for op in run.comm_ops():
        assert op.start_s is not None and op.end_s >= op.start_s >= 0.0
        assert op.group_ranks == (0, 1)
    # A blocking receive ends after the matching send started (one clock for both ranks). Kineto
    # converts each process's own clock to wall time, and on a loaded machine that conversion was
    # seen off by ~5 ms between two processes, so allow 50 ms: a per-rank clock (no common base)
    # would be off by the seconds between the processes' starts.
    send = run.comm_ops(rank=0, op="send")[0]
    recv = run.comm_ops(rank=1, op="recv")[0]
    assert recv.end_s >= send.start_s - 0.05
    assert [s.action for s in run.compute_spans(rank=1)] == ["1F1", "1F2"]
    assert [s.step_index for s in run.compute_spans(rank=1)] == [1, 2]


@pytest.mark.slow
def test_flight_recorder_dumps_report_gloo_collectives(gloo_run):
    if not (gloo_run / "fr").is_dir():
        pytest.skip("this torch has no _dump_fr_trace")
    with pytest.warns(UserWarning, match="missing from pg_config"):
        run = load_trace(gloo_run / "fr")
    assert run.source_format == "flight_recorder"
    for rank in (0, 1):
        reduces = run.comm_ops(rank=rank, op="all_reduce")
        assert [o.num_bytes for o in reduces] == [_nbytes((256,), torch.float32)] * NUM_STEPS
        assert all(o.issue_s is not None for o in reduces)
