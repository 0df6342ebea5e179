"""Plain-text formatting both CLIs share: aligned tables and median [min-max] spreads.

A leaf module: it imports nothing from bench or cloud, so either package may use it.
"""

from __future__ import annotations

from typing import Any


def format_spread(figure: dict[str, Any], digits: int = 3, scale: float = 1.0) -> str:
    """median, with [min-max] when there were repeats."""
    if not figure or figure["median"] is None:
        return "-"
    text = f"{figure['median'] * scale:.{digits}f}"
    if figure["n"] > 1:
        text += f" [{figure['min'] * scale:.{digits}f}-{figure['max'] * scale:.{digits}f}]"
    return text


def table(header: list[str], rows: list[list[str]]) -> str:
    """A plain aligned text table."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )
