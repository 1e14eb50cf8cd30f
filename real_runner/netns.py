"""A communication-bound harness: run ranks in a network namespace whose loopback is shaped.

Why: on one CPU host, unshaped loopback moves gigabytes per second, so pipeline traffic hides
behind compute and validation never exercises the network model. Inside a namespace of its own,
the loopback device can be shaped with a token bucket (`tc qdisc ... tbf`), turning every
transfer between local ranks into a slow, shared link: the regime where naive AttnRes traffic
costs step time and caching pays off.

What is done (shared/reference/local-validation-notes.md has the verified commands):

    ip netns add NAME; ip -n NAME link set lo mtu MTU up
    ip netns exec NAME tc qdisc add dev lo root tbf rate RATE burst BURST latency LATENCY
    ip netns exec NAME env GLOO_SOCKET_IFNAME=lo python -m ...     # every rank, every tool
    ip netns del NAME                                              # always, in a finally

Every address is a loopback address (127.0.0.1 and the namespace's own `lo`). The MTU is
lowered from loopback's 64 KiB to 1500 bytes so that the bucket may be small: tbf's burst must
exceed one packet, and a bucket much larger than a message would let whole messages through
unshaped after any pause (the link would then not behave like a link of the given rate).
Needs root, `ip` and `tc` with the tbf qdisc; `unavailable_reason()` says why not.

    with shaped_namespace(LinkShape(rate_bits_per_s=200e6)) as ns:
        ns.run([sys.executable, "-m", "simulator.cli.main", "calibrate", ...])

    reports = run_shaped_validation(["scenarios/cpu_standard_1f1b.yaml", ...], "runs/shaped")

`run_shaped_validation` is the whole communication-bound check: in one shaped namespace it
calibrates the link (a separate run), measures every scenario (with the steady allocator
calibration uses, real_runner/calibration_launch.py), and validates each measured run against
the simulator with that calibration (outside the namespace; validation needs no network).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from simulator.validate import ValidationReport

__all__ = ["LinkShape", "ShapedNamespace", "NetnsError", "unavailable_reason",
           "shaped_namespace", "run_shaped_validation", "PIPESIM"]

PIPESIM = [sys.executable, "-m", "simulator.cli.main"]
"""The pipesim command line, runnable inside a namespace."""


class NetnsError(RuntimeError):
    """Setting up or using the namespace failed (the message quotes the command's stderr)."""


@dataclass(frozen=True)
class LinkShape:
    """The token bucket on the namespace's loopback."""

    rate_bits_per_s: float = 200e6
    burst_bytes: int = 8 * 1024
    """Bucket depth; must exceed one packet (mtu_bytes plus headers). Small, so that a message
    after a pause is not let through at line rate."""
    queue_latency_s: float = 2.0
    """tbf `latency`: how long a packet may wait; bounds the queue (rate x latency bytes)."""
    mtu_bytes: int = 1500

    def __post_init__(self) -> None:
        if self.rate_bits_per_s <= 0:
            raise ValueError(f"rate_bits_per_s = {self.rate_bits_per_s}: must be positive")
        if self.burst_bytes <= self.mtu_bytes + 100:
            raise ValueError(f"burst_bytes = {self.burst_bytes}: must exceed one packet "
                             f"(mtu_bytes {self.mtu_bytes} plus headers); tbf drops larger "
                             "packets and gloo then times out")

    @property
    def bytes_per_s(self) -> float:
        """The shaped rate in bytes per second."""
        return self.rate_bits_per_s / 8

    def tc_args(self) -> list[str]:
        """The `tc qdisc add` arguments."""
        return ["tc", "qdisc", "add", "dev", "lo", "root", "tbf",
                "rate", f"{int(self.rate_bits_per_s)}bit", "burst", str(self.burst_bytes),
                "latency", f"{int(self.queue_latency_s * 1000)}ms"]


def _run(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=30)


def unavailable_reason() -> str | None:
    """Why shaped namespaces cannot be used here (None when they can); probes for real."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "network namespaces need root (run as root, or in a container with CAP_NET_ADMIN)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (iproute2)"
    try:
        with shaped_namespace(LinkShape()):
            pass
    except NetnsError as exc:
        return f"cannot set up a shaped namespace: {exc}"
    return None


@dataclass(frozen=True)
class ShapedNamespace:
    """A live namespace: run commands inside it."""

    name: str
    shape: LinkShape

    def command(self, argv: Sequence[str]) -> list[str]:
        """`argv` wrapped to run inside the namespace with gloo bound to its loopback."""
        return ["ip", "netns", "exec", self.name, "env", "GLOO_SOCKET_IFNAME=lo", *argv]

    def run(self, argv: Sequence[str], *, timeout_s: float = 600.0,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run `argv` inside the namespace; raises NetnsError with its output if it fails."""
        done = subprocess.run(self.command(argv), capture_output=True, text=True,
                              timeout=timeout_s, env=env)
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip().splitlines()[-10:]
            raise NetnsError(f"{' '.join(argv[:6])} ... failed in namespace {self.name} "
                             f"(status {done.returncode}):\n" + "\n".join(tail))
        return done


@contextmanager
def shaped_namespace(shape: LinkShape, *, name: str | None = None
                     ) -> Iterator[ShapedNamespace]:
    """Create a namespace with a shaped loopback; delete it on exit, whatever happens."""
    name = name or f"pipesim-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    created = False
    try:
        for args in (["ip", "netns", "add", name],
                     ["ip", "-n", name, "link", "set", "lo", "mtu", str(shape.mtu_bytes), "up"],
                     ["ip", "netns", "exec", name, *shape.tc_args()]):
            done = _run(args)
            if done.returncode != 0:
                raise NetnsError(f"`{' '.join(args)}` failed: {done.stderr.strip()}")
            created = True
        yield ShapedNamespace(name, shape)
    finally:
        if created:
            _run(["ip", "netns", "del", name])


def run_shaped_validation(scenarios: Sequence[str | Path], out_dir: str | Path,
                          shape: LinkShape = LinkShape(), *,
                          calibrate_args: Sequence[str] = (),
                          measure_args: Sequence[str] = ()) -> list[ValidationReport]:
    """Calibrate, measure and validate `scenarios` on a shaped loopback.

    Writes <out>/calibration and <out>/runs/<scenario name>; returns one report per scenario.

    Raises:
        NetnsError: a command failed inside the namespace (its output is quoted).
        ValueError: the scenarios differ in pipeline.num_stages (one calibration serves all).
    """
    from real_runner.calibration_launch import steady_allocator_env  # noqa: PLC0415
    from simulator.scenario import load_scenario  # noqa: PLC0415
    from simulator.validate import validate_run  # noqa: PLC0415

    loaded = [load_scenario(path) for path in scenarios]
    stages = {s.pipeline.num_stages for s in loaded}
    if len(stages) != 1:
        raise ValueError(f"scenarios have pipeline.num_stages {sorted(stages)}: one shaped "
                         "calibration serves one process count; group scenarios by P")
    out = Path(out_dir)
    calibration = out / "calibration"
    runs = {s.name: out / "runs" / s.name for s in loaded}
    env = steady_allocator_env(dict(os.environ))  # as calibration measures (calibration_launch)
    with shaped_namespace(shape) as ns:
        ns.run([*PIPESIM, "calibrate", *map(str, scenarios), "--nproc", str(stages.pop()),
                "--out", str(calibration), *calibrate_args], env=env)
        for path, scenario in zip(scenarios, loaded):
            ns.run([*PIPESIM, "measure", str(path), "--out", str(runs[scenario.name]),
                    *measure_args], env=env)
    return [validate_run(scenario, runs[scenario.name], calibration=calibration,
                         base_dir=Path(path).parent)
            for path, scenario in zip(scenarios, loaded)]
