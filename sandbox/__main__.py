"""`python -m sandbox up|down|status|set|fault`: start, stop, inspect and steer the local
sandbox (the commands are in sandbox/cli/; `python -m sandbox --help` lists them)."""

from __future__ import annotations

import sys

from sandbox.cli.parser import main

if __name__ == "__main__":
    sys.exit(main())
