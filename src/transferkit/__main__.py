"""`python -m transferkit …` (and `accelerate launch -m transferkit finetune …`) runs the CLI."""

from transferkit.cli import main

main()
