"""The program one rank runs: join the group, start the watchdog, run the session, clean up.

Exit status: 0 when the run completed; FAILED_EXIT_CODE (1) on the rank that failed;
ABORT_EXIT_CODE (3) on ranks stopped because another rank failed (by the watchdog, or by a
SIGTERM from torchrun). Every non-zero exit leaves the rank's trace closed as incomplete (`end`
record with complete: false) and prints one line to stderr naming the failed rank. Only a
process killed outright (SIGKILL, a native crash) leaves its `.partial` file instead.

Failure injection for tests: PIPESIM_INJECT_FAILURE="RANK:STEP[:raise|exit|term]" makes rank
RANK fail half-way through step STEP: by raising (a Python error), by os._exit (a crash that
skips every cleanup, as if the process were killed), or by sending itself SIGTERM.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from real_runner.distributed import DistEnv, init_distributed, shutdown
from real_runner.p2p import LinkError, Links
from real_runner.session import RunnerOptions, RunSession
from real_runner.watchdog import ABORT_EXIT_CODE, FAILED_EXIT_CODE, Failure, Watchdog
from simulator.scenario import Scenario, load_scenario
from simulator.schedule import Action, build_schedule
from simulator.trace_schema import RunFailure, write_manifest

__all__ = ["run_worker", "failure_injector", "INJECT_ENV"]

INJECT_ENV = "PIPESIM_INJECT_FAILURE"


def failure_injector(spec: str, rank: int,
                     num_actions: int) -> Callable[[int, Action], None] | None:
    """The before_action hook PIPESIM_INJECT_FAILURE describes, or None for another rank."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts[:2]) or \
            (len(parts) == 3 and parts[2] not in ("raise", "exit", "term")):
        raise ValueError(f"{INJECT_ENV}={spec!r}: expected RANK:STEP or "
                         f"RANK:STEP:raise|exit|term, e.g. 1:2:raise")
    fail_rank, fail_step = int(parts[0]), int(parts[1])
    how = parts[2] if len(parts) == 3 else "raise"
    if fail_rank != rank:
        return None
    counter = {"n": 0}

    def hook(step: int, action: Action) -> None:
        if step != fail_step:
            return
        counter["n"] += 1
        if counter["n"] == max(1, num_actions // 2):
            if how == "exit":
                os._exit(17)
            if how == "term":
                os.kill(os.getpid(), signal.SIGTERM)
                threading.Event().wait(60)  # the SIGTERM thread ends the process
            raise RuntimeError(f"injected failure at step {step}, before action {action}")

    return hook


def run_worker(scenario_path: str, options: RunnerOptions) -> int:
    """Run one rank of a measured run; returns the process exit status."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # threads made later inherit it
    env = init_distributed(options.timeout_s)
    session: RunSession | None = None

    def on_abort(failure: Failure) -> None:  # watchdog or SIGTERM thread: stop this rank now
        status = "failed" if failure.rank == env.rank else "aborted"
        _finish(env, session, failure, status, from_thread=True)
        os._exit(FAILED_EXIT_CODE if status == "failed" else ABORT_EXIT_CODE)

    watchdog = Watchdog(host=env.store_host, port=env.store_port, world_size=env.world_size,
                        rank=env.rank, run_id=env.run_id, timeout_s=options.timeout_s,
                        on_abort=on_abort)
    watchdog.start()
    _on_sigterm(lambda: on_abort(watchdog.report("terminated by SIGTERM")))
    links = Links(env.rank, env.device)
    try:
        scenario = load_scenario(scenario_path)
        spec = os.environ.get(INJECT_ENV)
        if spec:
            options.before_action = failure_injector(spec, env.rank, num_actions=_num_actions(
                scenario, env.rank))
        session = RunSession(env, scenario, options, links)
        session.run(on_step=lambda step: watchdog.store.set(f"progress/{env.rank}",
                                                            str(step + 1)))
        watchdog.stop()
        return 0
    except BaseException as exc:  # noqa: BLE001 - every failure must be reported and traced
        failure, status = _blame(exc, watchdog, env.rank, options.timeout_s)
        watchdog.stop()
        _finish(env, session, failure, status, from_thread=False)
        return FAILED_EXIT_CODE if status == "failed" else ABORT_EXIT_CODE
    finally:
        links.close()
        shutdown()


def _on_sigterm(handler: Callable[[], None]) -> None:
    """Run `handler` on a thread when SIGTERM arrives (torchrun's way of stopping the others).

    A Python signal handler would wait for the main thread, which may sit in a receive for a long
    time; SIGTERM is blocked in every thread instead and a daemon thread waits for it.
    """
    def wait() -> None:
        signal.sigwait({signal.SIGTERM})
        handler()

    threading.Thread(target=wait, name="sigterm", daemon=True).start()


def _num_actions(scenario: Scenario, rank: int) -> int:
    p = scenario.pipeline
    schedule = build_schedule(p.schedule, p.num_stages, p.num_virtual_stages, p.num_microbatches)
    return len(schedule.actions[rank])


def _blame(exc: BaseException, watchdog: Watchdog, rank: int,
           timeout_s: float) -> tuple[Failure, str]:
    """Who failed first: an error in a transfer waits briefly for the peer's own report."""
    if isinstance(exc, LinkError):
        other = watchdog.wait_for_failure(min(5.0, timeout_s / 4))
        if other is None:
            other = watchdog.report(f"rank {rank} lost contact with it: {exc}", rank=exc.peer)
        return other, "failed" if other.rank == rank else "aborted"
    what = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
    first = watchdog.report(what)
    return first, "failed" if first.rank == rank else "aborted"


def _finish(env: DistEnv, session: RunSession | None, failure: Failure, status: str, *,
            from_thread: bool) -> None:
    """Close the trace as incomplete, mark the manifest (rank 0), print the one-line reason."""
    message = failure.describe()
    if status == "aborted":
        message = f"stopped because {message}"
    print(f"[rank {env.rank}] {message}", file=sys.stderr, flush=True)
    if session is None:
        return
    session.recorder.close(complete=False, status=status, message=message,
                           failed_rank=failure.rank, lock_timeout_s=2.0 if from_thread else -1)
    if env.rank == 0:
        write_manifest(session.options.out_dir, session.manifest(
            complete=False, failure=RunFailure(rank=failure.rank, message=failure.message)))


def main_from_args(scenario: str, out_dir: str, *, num_steps: int | None,
                   num_warmup_steps: int | None, profile: bool, timeout_s: float) -> int:
    """Entry used by `python -m real_runner`."""
    options = RunnerOptions(out_dir=Path(out_dir), num_steps=num_steps,
                            num_warmup_steps=num_warmup_steps, profile=profile,
                            timeout_s=timeout_s)
    return run_worker(scenario, options)
