"""The ``siyu`` command line (Typer + Rich)."""
