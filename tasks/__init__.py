"""Stage logic: one module per stage, each with a plain `run(params, root)` entry point."""
