"""The `pipesim` command line: one module per subcommand, loaded only when that subcommand runs."""
