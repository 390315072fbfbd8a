"""How counts are written for people, in the commands' reports."""

from __future__ import annotations


def counted(n: int, one: str, many: str) -> str:
    """``n`` with the noun that fits it: "1 face", "2 faces", "0 faces"."""
    return f"{n} {one if n == 1 else many}"
