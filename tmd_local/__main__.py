"""`python -m tmd_local`: the `tmd` command group (tmd_local/cli.py), for checkouts without the entry point."""

from .cli import main

main()
