"""Entry point of the `pipesim` command.

Subcommands live in their own modules and are imported lazily, so that `pipesim inspect`
never pays for importing torch or matplotlib. A user mistake (a ValueError: a bad scenario, a missing file)
is printed as one clear message with exit status 2, never as a traceback.

    pipesim inspect scenarios/fig3_toy.yaml
    pipesim --help
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

import click

__all__ = ["main", "COMMANDS"]

# name -> (module, attribute, one-line help shown in `pipesim --help`)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "inspect": ("simulator.cli.inspect_cmd", "inspect_cmd",
                "Schedule, boundary manifest and memory model of a scenario."),
    "run": ("simulator.cli.run_cmd", "run_cmd",
            "Simulate one training step event by event and write results."),
    "compare": ("simulator.cli.run_cmd", "compare_cmd",
                "Simulate several scenarios and put them side by side."),
    "topology": ("simulator.cli.topology_cmd", "topology_group",
                 "Summarise and draw cluster topologies."),
    "plan": ("simulator.cli.plan_cmd", "plan_cmd",
             "Sweep block counts and modes; recommend one under constraints."),
    "measure": ("simulator.cli.measure_cmd", "measure_cmd",
                "Run the real pipelined model on local CPU processes and record traces."),
    "calibrate": ("simulator.cli.calibrate_cmd", "calibrate_cmd",
                  "Measure compute and link costs here and write a hardware profile."),
    "validate": ("simulator.cli.validate_cmd", "validate_cmd",
                 "Compare simulator predictions with measured traces."),
}


class _LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, (module, _, _) in COMMANDS.items() if _module_exists(module)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS or not _module_exists(COMMANDS[cmd_name][0]):
            return None
        module_name, attr, _ = COMMANDS[cmd_name]
        return getattr(importlib.import_module(module_name), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _module_exists(module_name: str) -> bool:
    return importlib.util.find_spec(module_name) is not None


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="attnres-pipesim")
def cli() -> None:
    """Predict and measure what Attention Residuals cost under pipeline parallelism."""


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; user errors (ValueError family, missing files) exit 2 with one message."""
    try:
        cli.main(args=argv, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (ValueError, FileNotFoundError) as exc:  # the house rule: ValueError = user error
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
