"""`pipesim calibrate`: measure this machine with the real runner's code; write a profile.

    pipesim calibrate scenarios/cpu_block_naive_gpipe.yaml --nproc 2 --out runs/calib

Measures, at every given scenario's shapes, the per-sublayer forward and backward seconds of
the runner's model, the AttnRes aggregation against its number of sources, what each piece
saves for backward, point-to-point alpha-beta between every directed rank pair over the
chosen backend (a ping-pong message-size sweep to receives posted first), the host time of a
send call (per message, per tensor, and per byte with both ranks computing) and of completing
a receive, what moving bytes costs the compute beside it (the traffic-load probe), and what a
late receive costs more when both ranks compute (the late-receive probe); then, on one rank with
no communication, the runner's own host work after each forward and backward at each chunk
size of the scenarios (the executor probe). Writes profile.yaml, hardware.yaml,
activations.yaml, topology.yaml and calibration.json under --out (docs/validation.md).
Calibration runs in its own processes, separate from any run later validated.

    pipesim calibrate --average runs/calib-before --average runs/calib-after --out runs/calib

averages earlier calibrations of the same scenarios and options instead of measuring (each
rank's raw numbers; simulator/calibrate_average.py): on a host whose speed drifts, calibrating
before and after a run and averaging brackets the state the run saw.

real_runner (torch) is imported inside the command only.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from simulator.errors import UserError

if TYPE_CHECKING:
    from rich.console import Console

    from simulator.calibrate_files import Calibration

__all__ = ["calibrate_cmd"]


def _sizes(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--sizes = {text!r}: give comma-separated byte counts, e.g. "
                        "1024,65536,1048576") from None
    if len(set(sizes)) < 2 or min(sizes) < 4:
        raise UserError(f"--sizes = {text!r}: give at least two distinct sizes of 4 bytes or "
                        "more, so latency and bandwidth can be told apart")
    return sorted(set(sizes))


@click.command("calibrate")
@click.argument("scenarios", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--nproc", type=int, default=2, show_default=True,
              help="Processes to start (rank pairs are swept between all of them).")
@click.option("--backend", type=click.Choice(["gloo", "nccl"]), default="gloo",
              show_default=True, help="gloo on CPUs; nccl with one GPU per process.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="runs/calib",
              show_default=True, help="Calibration directory to write.")
@click.option("--sizes", default=None,
              help="Message sizes in bytes, comma-separated (default: powers of 4 from 1 KiB "
                   "to twice the scenarios' largest transition).")
@click.option("--repeats", type=int, default=15, show_default=True,
              help="Timed repetitions per measurement (medians are kept).")
@click.option("--max-seconds-per-point", type=float, default=0.5, show_default=True,
              help="Stop repeating one message size after this long (3 repetitions at least).")
@click.option("--compute-seconds", type=float, default=4.0, show_default=True,
              help="Per shape, time the compute pieces in rounds for at least this long (on "
                   "a shared host a longer window averages over its slow spells).")
@click.option("--gpu-name", "gpu_name", default="proc{rank}", show_default=True,
              help="Topology node name of rank r in the profile's p2p entries.")
@click.option("--timeout", "timeout_s", type=float, default=120.0, show_default=True,
              help="Seconds any process waits for another.")
@click.option("--average", "average_dirs", multiple=True, type=click.Path(file_okay=False),
              help="Instead of measuring, average these calibration directories (give it two "
                   "or more times; same scenarios and options), e.g. one before and one after "
                   "a run on a host whose speed drifts.")
def calibrate_cmd(scenarios: tuple[str, ...], nproc: int, backend: str, out_dir: str,
                  sizes: str | None, repeats: int, max_seconds_per_point: float,
                  compute_seconds: float, gpu_name: str, timeout_s: float,
                  average_dirs: tuple[str, ...]) -> None:
    """Measure compute and link costs here and write a hardware profile."""
    from rich.console import Console

    if average_dirs:
        from simulator.calibrate_average import average_calibrations

        if scenarios:
            raise UserError("--average averages calibrations already measured; give no "
                            "scenario with it")
        console = Console()
        _print(console, average_calibrations(average_dirs, out_dir), Path(out_dir))
        return

    from real_runner.calibration_launch import run_calibration
    from simulator.calibrate import CalibrationPlan
    from simulator.scenario import load_scenario

    if nproc < 2:
        raise UserError(f"--nproc = {nproc}: point-to-point calibration needs at least 2 "
                        "processes")
    if repeats < 3:
        raise UserError(f"--repeats = {repeats}: use at least 3 (medians are kept)")
    if not 0 <= compute_seconds <= 600:
        raise UserError(f"--compute-seconds = {compute_seconds}: give 0 to 600 seconds")
    if "{rank}" not in gpu_name:
        raise UserError(f"--gpu-name = {gpu_name!r}: must contain {{rank}}, e.g. proc{{rank}}")
    loaded = [load_scenario(path) for path in scenarios]
    plan = CalibrationPlan.for_scenarios(
        loaded, nproc, backend=backend, message_sizes_bytes=_sizes(sizes), num_repeats=repeats,
        max_seconds_per_point=max_seconds_per_point, min_compute_seconds=compute_seconds,
        max_compute_seconds=max(30.0, 2 * compute_seconds), gpu_name_pattern=gpu_name,
        timeout_s=timeout_s)
    console = Console()
    with console.status(f"calibrating {len(plan.shapes)} shape(s) with {nproc} processes...") \
            as status:
        calibration = run_calibration(plan, out_dir,
                                      on_progress=lambda what: status.update(f"{what}..."))
    _print(console, calibration, Path(out_dir))


def _print(console: Console, calibration: Calibration, out: Path) -> None:
    from rich.table import Table

    from simulator.units import format_bytes, format_seconds

    profile = calibration.profile
    table = Table(title=f"Measured on {profile.device}")
    for column in ("piece", "shape (d, T, b, dtype)", "forward", "backward"):
        table.add_column(column)
    for s in profile.sublayers:
        table.add_row(s.kind, f"{s.hidden_size}, {s.seq_len}, {s.micro_batch_size}, {s.dtype}",
                      format_seconds(s.forward_s), format_seconds(s.backward_s))
    for a in profile.aggregation:
        table.add_row(f"aggregation, {a.num_sources} sources",
                      f"{a.hidden_size}, {a.seq_len}, {a.micro_batch_size}, {a.dtype}",
                      format_seconds(a.forward_s), format_seconds(a.backward_s))
    console.print(table)
    links = Table(title="Point-to-point alpha-beta (receives posted before their sends)")
    for column in ("ranks", "latency", "bandwidth", "worst fit residual"):
        links.add_column(column)
    for pair, fit in calibration.fits.items():
        links.add_row(pair, format_seconds(fit.latency_s),
                      f"{format_bytes(fit.bandwidth_bytes_per_s)}/s",
                      f"{100 * fit.max_relative_residual:.0f}%")
    console.print(links)
    console.print(f"Host overhead per message: {format_seconds(profile.send_overhead_s)} + "
                  f"{format_seconds(1e6 * profile.send_s_per_byte)} per MB per send call "
                  "(both ranks computing), "
                  f"{format_seconds(profile.recv_overhead_s)} to complete a receive "
                  "whose data is in place")
    console.print(f"Host overhead per further tensor of a message: "
                  f"{format_seconds(profile.send_overhead_per_tensor_s)} at the send; posting "
                  f"a message's receives: {format_seconds(profile.recv_post_s)} + "
                  f"{format_seconds(profile.recv_post_per_tensor_s)} per further tensor")
    for probe in calibration.record.get("traffic_load", []):
        slowdown = 100 * (probe["loaded_s"] / probe["idle_s"] - 1) if probe["idle_s"] else 0.0
        console.print(f"Traffic load ({probe['role']} end of {probe['src_rank']}->"
                      f"{probe['dst_rank']}): compute {slowdown:+.0f}% while the link moved "
                      f"{format_bytes(probe['bytes_moved'])} in "
                      f"{format_seconds(probe['loaded_s'])}")
    console.print(f"Compute lost per MB in flight: "
                  f"{format_seconds(1e6 * profile.send_cpu_s_per_byte)} at the sender, "
                  f"{format_seconds(1e6 * profile.recv_cpu_s_per_byte)} at the receiver")
    for probe in calibration.record.get("late_receive", []):
        console.print(f"Late receive {probe['src_rank']}->{probe['dst_rank']} "
                      f"({format_bytes(probe['num_bytes'])}): "
                      f"{format_seconds(probe['idle_s'])} with both ranks idle before it, "
                      f"{format_seconds(probe['busy_s'])} with both computing; overhead "
                      f"charged per late receive: "
                      f"{format_seconds(profile.late_receive_overhead_s)}")
    for entry in profile.executor_overhead:
        console.print(f"Runner's host work after each compute ({entry.residual_kind}, "
                      f"{entry.num_sublayers} sublayers per chunk): "
                      f"{format_seconds(entry.after_forward_s)} after a forward, "
                      f"{format_seconds(entry.after_backward_s)} after a backward")
    console.print(f"Wrote {out}/profile.yaml, hardware.yaml, activations.yaml, topology.yaml "
                  "and calibration.json")
