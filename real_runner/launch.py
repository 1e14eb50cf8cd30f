"""Start K local rank processes for one measured run (what `pipesim measure` uses).

The launcher plays torchrun's part on one machine: it hosts the TCPStore (on a free port the OS
picks, never a fixed one), starts `python -m real_runner` K times with torchrun's environment
variables plus PIPESIM_LAUNCHER_STORE=1, shows progress from the ranks' store keys, and watches
the processes. A rank that exits badly is recorded as the run's failure at once (unless a rank
already reported one), so the others' watchdogs stop them; anything still running
`timeout_s + 10` seconds after a failure is killed. If the run failed, the launcher makes sure
manifest.json says `complete: false` and names the failed rank. Each rank's output goes to
rank-<r>.log in the run directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import torch.distributed as dist

from real_runner.session import RunnerOptions, check_runnable, run_manifest
from real_runner.watchdog import Failure, read_failure, record_failure, store_prefix
from simulator.scenario import load_scenario
from simulator.trace_schema import (
    RunFailure,
    RunManifest,
    TraceError,
    read_manifest,
    write_manifest,
)

__all__ = ["LaunchResult", "launch_local", "STALE_OUTPUT_PATTERNS"]

STALE_OUTPUT_PATTERNS = ("manifest.json", "rank-*.jsonl", "rank-*.jsonl.partial", "rank-*.log",
                         "profile-rank-*.json", "summary.json")
"""Files of an earlier run in the same directory, removed before a new run starts."""


@dataclass
class LaunchResult:
    """How a local run ended."""

    run_dir: Path
    exit_codes: dict[int, int]
    failure: Failure | None
    logs: dict[int, Path] = field(default_factory=dict)
    exit_times_s: dict[int, float] = field(default_factory=dict)
    """time.monotonic() when the launcher saw each rank exit."""
    failure_seen_s: float | None = None
    """time.monotonic() when the launcher first saw a recorded failure."""

    @property
    def ok(self) -> bool:
        """True when every rank exited 0."""
        return self.failure is None and all(code == 0 for code in self.exit_codes.values())


def launch_local(scenario_path: str | Path, nproc: int, out_dir: str | Path, *,
                 num_steps: int | None = None, num_warmup_steps: int | None = None,
                 profile: bool = False, timeout_s: float = 60.0,
                 extra_env: dict[str, str] | None = None,
                 on_progress: Callable[[int], None] | None = None) -> LaunchResult:
    """Run `nproc` local ranks on the scenario; returns when every rank has exited.

    `on_progress(steps_done)` gets the number of steps every rank has finished.

    Raises:
        ScenarioError, RunnerConfigError: the scenario cannot run (checked before starting).
    """
    scenario = load_scenario(scenario_path)
    check_runnable(scenario, nproc)
    run_dir = Path(out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for pattern in STALE_OUTPUT_PATTERNS:
        for stale in run_dir.glob(pattern):
            stale.unlink()
    store = dist.TCPStore("127.0.0.1", 0, nproc, is_master=True, wait_for_workers=False,
                          timeout=timedelta(seconds=timeout_s))
    run_id = uuid.uuid4().hex[:12]
    keys = dist.PrefixStore(store_prefix(run_id), store)
    args = [sys.executable, "-m", "real_runner", str(scenario_path), "--out", str(run_dir),
            "--timeout", str(timeout_s)]
    for flag, value in (("--steps", num_steps), ("--warmup", num_warmup_steps)):
        if value is not None:
            args += [flag, str(value)]
    if profile:
        args.append("--profile")
    procs, logs = {}, {}
    for rank in range(nproc):
        logs[rank] = run_dir / f"rank-{rank}.log"
        env = _rank_env(rank, nproc, store.port, run_id, extra_env)
        with open(logs[rank], "w") as log:
            procs[rank] = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        exit_codes, exit_times, failure_seen = _supervise(procs, keys, timeout_s, on_progress)
    except BaseException:  # Ctrl-C in the launcher: leave no rank behind
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
        raise
    failure = read_failure(keys)
    if failure is not None or any(exit_codes.values()):
        failure = failure or Failure(None, f"exit statuses {exit_codes}")
        _mark_incomplete(run_dir, scenario_path, failure, nproc, timeout_s)
    return LaunchResult(run_dir, exit_codes, failure, logs, exit_times, failure_seen)


def _rank_env(rank: int, nproc: int, port: int, run_id: str,
              extra_env: dict[str, str] | None) -> dict[str, str]:
    # Local CPU ranks get the steady allocator calibration measures with, so a measured step
    # does not pay glibc's heap trimming that the calibrated profile never saw.
    from real_runner.calibration_launch import steady_allocator_env  # noqa: PLC0415

    env = steady_allocator_env(dict(os.environ))
    threads = max(1, (os.cpu_count() or 1) // nproc)
    env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(nproc),
               LOCAL_WORLD_SIZE=str(nproc), GROUP_RANK="0", MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(port), PIPESIM_LAUNCHER_STORE="1", PIPESIM_RUN_ID=run_id,
               OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    env.update(extra_env or {})
    return env


def _supervise(procs: dict[int, subprocess.Popen[bytes]], keys: dist.Store, timeout_s: float,
               on_progress: Callable[[int], None] | None
               ) -> tuple[dict[int, int], dict[int, float], float | None]:
    """Wait for every rank; record the first bad exit; kill stragglers after a failure.

    Returns exit statuses, exit times and when a failure was first seen (time.monotonic()).
    """
    codes: dict[int, int] = {}
    times: dict[int, float] = {}
    seen: float | None = None
    kill_at: float | None = None
    shown = 0
    while len(codes) < len(procs):
        for rank, proc in procs.items():
            if rank in codes or proc.poll() is None:
                continue
            codes[rank], times[rank] = proc.returncode, time.monotonic()
            if proc.returncode != 0 and read_failure(keys) is None:
                record_failure(keys, Failure(rank, _describe_exit(proc.returncode)))
        if seen is None and read_failure(keys) is not None:
            seen = time.monotonic()
            kill_at = seen + timeout_s + 10
        if kill_at is not None and time.monotonic() > kill_at:
            for rank, proc in procs.items():
                if rank not in codes:
                    proc.kill()
        if on_progress is not None:
            done = min(_progress(keys, rank) for rank in procs)
            if done != shown:
                shown = done
                on_progress(done)
        time.sleep(0.1)
    if on_progress is not None:
        on_progress(min(_progress(keys, rank) for rank in procs))
    return codes, times, seen


def _progress(keys: dist.Store, rank: int) -> int:
    key = f"progress/{rank}"
    return int(keys.get(key)) if keys.check([key]) else 0


def _describe_exit(code: int) -> str:
    if code < 0:
        return f"the process was killed by signal {signal.Signals(-code).name}"
    return f"the process exited with status {code}"


def _mark_incomplete(run_dir: Path, scenario_path: str | Path, failure: Failure, nproc: int,
                     timeout_s: float) -> None:
    """Make manifest.json say complete: false and name the failure."""
    recorded = RunFailure(rank=failure.rank, message=failure.message)
    try:
        manifest = read_manifest(run_dir).model_copy(update={
            "complete": False, "failure": recorded, "finished_unix_s": time.time()})
    except TraceError:  # rank 0 never wrote one: describe the run from here
        manifest = _launcher_manifest(scenario_path, nproc, timeout_s, recorded)
    write_manifest(run_dir, manifest)


def _launcher_manifest(scenario_path: str | Path, nproc: int, timeout_s: float,
                       failure: RunFailure) -> RunManifest:
    """A manifest for a run whose rank 0 failed before writing one."""
    scenario = load_scenario(scenario_path)
    return run_manifest(scenario, RunnerOptions(out_dir=Path("."), timeout_s=timeout_s),
                        world_size=nproc, backend="gloo", device_type="cpu",
                        num_steps=scenario.run.num_steps,
                        num_warmup_steps=scenario.run.num_warmup_steps,
                        started_unix_s=time.time(), complete=False, failure=failure)
