"""Start K calibration processes on this machine and turn what they measured into a profile.

`run_calibration` plays torchrun's part, as real_runner/launch.py does for measured runs: it
hosts the TCPStore on a port the OS picks, starts `python -m real_runner.calibration` K times
with torchrun's environment variables (OMP_NUM_THREADS = cores / K on the CPU, the same split the
runner's launcher uses), waits, and reads their raw-rank-<r>.json. A process that fails stops
the calibration with its log's last lines; the others are killed after a grace period. Then
the plan's executor probes run, one rank each (real_runner/calibration_executor.py), into
raw-executor.json.

Allocator: glibc returns freed memory at the top of the heap to the kernel (trimming) and maps
large blocks afresh, so a process whose live set grows and shrinks - a pipeline rank - pays a
page fault per 4 KiB of every activation it re-allocates, while a piece timed in a loop reuses
warm memory. `STEADY_ALLOCATOR_TUNABLES` (large blocks from the heap, never trimmed: what a GPU
caching allocator does) removes that difference; calibration processes always get it, and
measured runs should (docs/validation.md).

    calibration = run_calibration(plan, "runs/calib")
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import torch.distributed as dist

from real_runner.calibration_executor import measure_executor_overheads
from simulator.calibrate import CalibrationError, CalibrationPlan, RankMeasurements
from simulator.calibrate_executor import RAW_EXECUTOR_NAME
from simulator.calibrate_files import Calibration, build_calibration, write_calibration

__all__ = ["run_calibration", "STEADY_ALLOCATOR_TUNABLES", "steady_allocator_env"]

_GRACE_S = 10.0

STEADY_ALLOCATOR_TUNABLES = ("glibc.malloc.mmap_threshold=33554432:"
                             "glibc.malloc.trim_threshold=17179869184")
"""GLIBC_TUNABLES: blocks up to 32 MiB from the heap, and the heap never trimmed."""


def steady_allocator_env(env: dict[str, str]) -> dict[str, str]:
    """`env` with STEADY_ALLOCATOR_TUNABLES added to GLIBC_TUNABLES (existing ones kept)."""
    current = env.get("GLIBC_TUNABLES", "")
    if STEADY_ALLOCATOR_TUNABLES in current:
        return dict(env)
    joined = f"{current}:{STEADY_ALLOCATOR_TUNABLES}" if current else STEADY_ALLOCATOR_TUNABLES
    return {**env, "GLIBC_TUNABLES": joined}


def run_calibration(plan: CalibrationPlan, out_dir: str | Path, *,
                    extra_env: dict[str, str] | None = None,
                    on_progress: Callable[[str], None] | None = None) -> Calibration:
    """Measure with `plan.nproc` local processes; write and return the calibration.

    Raises:
        CalibrationError: a process failed or timed out (the message quotes its log).
    """
    if plan.backend == "nccl":
        import torch  # noqa: PLC0415

        found = torch.cuda.device_count()
        if found < plan.nproc:
            raise CalibrationError(f"--backend nccl needs one GPU per process: {plan.nproc} "
                                   f"processes but {found} GPU(s) here; use --backend gloo on "
                                   "CPUs or fewer processes")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob("raw-rank-*.json"), out / RAW_EXECUTOR_NAME]:
        stale.unlink(missing_ok=True)
    plan_path = out / "plan.json"
    plan_path.write_text(plan.model_dump_json(indent=1))
    store = dist.TCPStore("127.0.0.1", 0, plan.nproc, is_master=True, wait_for_workers=False,
                          timeout=timedelta(seconds=plan.timeout_s))
    args = [sys.executable, "-m", "real_runner.calibration", "--plan", str(plan_path),
            "--out", str(out)]
    procs, logs = {}, {}
    for rank in range(plan.nproc):
        logs[rank] = out / f"calibrate-rank-{rank}.log"
        with open(logs[rank], "w") as log:
            procs[rank] = subprocess.Popen(args, env=_env(rank, plan.nproc, store.port, extra_env),
                                           stdout=log, stderr=subprocess.STDOUT)
    if on_progress is not None:
        on_progress(f"measuring with {plan.nproc} processes ({plan.backend})")
    codes = _wait(procs, plan.timeout_s * 4)
    failed = {rank: code for rank, code in codes.items() if code != 0}
    if failed:
        rank = min(failed)
        tail = "".join(logs[rank].read_text(errors="replace").splitlines(True)[-8:])
        raise CalibrationError(f"calibration process {rank} exited with status {failed[rank]}; "
                               f"the end of {logs[rank]}:\n{tail}")
    ranks = [RankMeasurements.model_validate_json((out / f"raw-rank-{r}.json").read_text())
             for r in range(plan.nproc)]
    executor = measure_executor_overheads(plan, out, extra_env=extra_env,
                                          on_progress=on_progress)
    calibration = build_calibration(plan, ranks, executor=executor.probes)
    write_calibration(calibration, out)
    del store
    return calibration


def _env(rank: int, nproc: int, port: int, extra_env: dict[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    threads = max(1, (os.cpu_count() or 1) // nproc)
    env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(nproc),
               LOCAL_WORLD_SIZE=str(nproc), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
               OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    env.update(extra_env or {})
    return steady_allocator_env(env)


def _wait(procs: dict[int, subprocess.Popen[bytes]], limit_s: float) -> dict[int, int]:
    """Exit codes; after the first failure (or the time limit) stragglers are killed."""
    codes: dict[int, int] = {}
    deadline = time.monotonic() + limit_s
    while len(codes) < len(procs):
        for rank, proc in procs.items():
            if rank not in codes and proc.poll() is not None:
                codes[rank] = proc.returncode
        if any(codes.values()) or time.monotonic() > deadline:
            deadline = min(deadline, time.monotonic() + _GRACE_S)
            if time.monotonic() > deadline:
                for rank, proc in procs.items():
                    if rank not in codes:
                        proc.kill()
                        codes[rank] = proc.wait()
        time.sleep(0.05)
    return codes
