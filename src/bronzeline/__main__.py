"""`python -m bronzeline …`: the command line, as the `bronzeline` script runs it."""

from __future__ import annotations

from bronzeline.cli import main

main()
