"""`python -m dcsim` runs the CLI (where the `dcsim` script is not on PATH)."""

from dcsim.cli import main

main()
