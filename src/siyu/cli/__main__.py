"""``python -m siyu.cli``."""

from siyu.cli.main import main

main()
