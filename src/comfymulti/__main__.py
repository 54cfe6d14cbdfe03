"""`python -m comfymulti` runs the CLI."""

from comfymulti.cli import main

main()
