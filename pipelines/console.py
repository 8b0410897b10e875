"""One way to make a console: wide enough for report tables when output is a log, not a terminal."""

from __future__ import annotations

import sys

from rich.console import Console

LOG_WIDTH = 160


def make_console(*, stderr: bool = False, quiet: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else LOG_WIDTH
    return Console(stderr=stderr, quiet=quiet, width=width)
