"""`python -m transferkit.cli …` runs the command line."""

from transferkit.cli.app import main

main()
