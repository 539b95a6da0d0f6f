"""`python -m berth.cli`."""

from berth.cli.main import main

main()
