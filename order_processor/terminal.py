"""How the command lines (`python -m order_processor`, `python -m bench`) lay out their text.

Piped to a file or another program, output is never hard-wrapped (no terminal width to fit):
tables keep file names and ids whole, help texts keep their defaults on one line. On a terminal,
Typer and Rich fit the window as usual.
"""

from __future__ import annotations

import sys
from typing import Any

#: stdout is a terminal (not a pipe or a file)
INTERACTIVE = sys.stdout.isatty()

#: keyword arguments for every `typer.Typer(...)`: when piped, plain help text (no Rich panels)
#: as wide as it needs to be
TYPER_OPTIONS: dict[str, Any] = (
    {}
    if INTERACTIVE
    else {
        "rich_markup_mode": None,
        "context_settings": {"max_content_width": 10_000, "terminal_width": 10_000},
    }
)
