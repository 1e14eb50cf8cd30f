"""`pipesim validate`: compare the simulator's prediction of a scenario with a measured run.

    pipesim validate --trace runs/measure/cpu_block_naive_gpipe \
        --calibration runs/calib scenarios/cpu_block_naive_gpipe.yaml --out runs/validate/x

Prints the headline table (bytes per transition and rank pair, operation counts, step time,
peak saved bytes per rank) and the median durations per operation; writes validation.json,
report.md, gantt.png (simulated above measured) and boundary_bytes.png under --out. Exit status
1 when bytes or operation counts differ (the simulator and the run disagree on what was sent);
errors in time and memory are reported, not judged (docs/validation.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from simulator.validate import ValidationReport

__all__ = ["validate_cmd", "ValidationFailed"]


class ValidationFailed(click.ClickException):
    """Bytes or operation counts differ between simulation and measurement; exit status 1."""


@click.command("validate")
@click.argument("scenario", type=click.Path(dir_okay=False))
@click.option("--trace", "traces", required=True, multiple=True, type=click.Path(),
              help="Measured run: a `pipesim measure` directory, or profiler / NCCL / Flight "
                   "Recorder files, one --trace per file (docs/traces.md).")
@click.option("--calibration", "calibration", type=click.Path(file_okay=False), default=None,
              help="Directory written by `pipesim calibrate` (hardware, profile, link).")
@click.option("--topology", default=None,
              help="Topology to simulate on (default: the scenario's, else the calibrated "
                   "loopback of local processes).")
@click.option("--protocol", type=click.Choice(["rendezvous", "eager"]), default=None,
              help="Point-to-point protocol (default: eager for the runner's traces and NCCL, "
                   "rendezvous for other gloo traces).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Output directory (default: runs/validate/<scenario name>).")
def validate_cmd(scenario: str, traces: tuple[str, ...], calibration: str | None,
                 topology: str | None, protocol: str | None, out_dir: str | None) -> None:
    """Compare simulator predictions with a measured run."""
    from rich.console import Console

    from simulator.scenario import load_scenario
    from simulator.validate import validate_run
    from simulator.validate_report import print_report, write_report

    loaded = load_scenario(scenario)
    trace = traces[0] if len(traces) == 1 else list(traces)
    report = validate_run(loaded, trace, calibration=calibration, topology=topology,
                          protocol=protocol, base_dir=Path(scenario).parent)
    out = Path(out_dir or f"runs/validate/{loaded.name}")
    out.mkdir(parents=True, exist_ok=True)
    figures = _save_figures(report, out)
    written = write_report(report, out, figures)
    console = Console()
    print_report(console, report)
    console.print(f"Wrote {', '.join(str(p) for p in written)} and "
                  f"{', '.join(figures.values()) or 'no figures'} in {out}")
    if not (report.bytes_exact and report.counts_exact):
        raise ValidationFailed("bytes or operation counts differ between the simulation and "
                               f"the measured run; see {out / 'report.md'}")


def _save_figures(report: ValidationReport, out: Path) -> dict[str, str]:
    """gantt.png and boundary_bytes.png; only this CLI code saves figures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from simulator.validate_plots import plot_boundary_bytes, plot_gantt, simulated_bars

    figures: dict[str, str] = {}
    simulated = report.simulated
    if simulated is not None and report.step is not None and report.measured_gantt:
        num_ranks = simulated.num_stages
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 1.2 + 1.8 * num_ranks),
                                          sharex=True)
        plot_gantt(top, simulated_bars(simulated), num_ranks=num_ranks,
                   title=f"simulated: step {simulated.step_time_s * 1e3:.1f} ms")
        plot_gantt(bottom, report.measured_gantt, num_ranks=num_ranks,
                   title=f"measured (median step): {report.step.measured_s * 1e3:.1f} ms")
        fig.tight_layout()
        fig.savefig(out / "gantt.png", dpi=120)
        plt.close(fig)
        figures["gantt"] = "gantt.png"
    if report.transitions:
        fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(report.transitions) + 2), 3))
        plot_boundary_bytes(ax, report.transitions)
        fig.tight_layout()
        fig.savefig(out / "boundary_bytes.png", dpi=120)
        plt.close(fig)
        figures["bytes"] = "boundary_bytes.png"
    return figures
