"""Regular expressions that come from data (a dataset description's `subject_pattern`): their cost
is bounded before they are used, so a crafted pattern or file name can never hang a listing.

Python's ``re`` backtracks, and a pattern with nested or stacked quantifiers (``^(a+)+$``,
``(a|aa)*``, ``\\d*\\d*\\d*x``) takes exponential or high-polynomial time on a name that almost
matches. So a description's pattern is refused when it is loaded if it holds

* a variable quantifier (``*``, ``+``, ``?``, ``{m,n}``) or an alternation inside a quantified
  group: the exponential family;
* more than `MAX_WIDE_REPEATS` quantifiers that may repeat more than `WIDE` times: the polynomial one;

and the text it is matched against is capped at `MAX_TEXT` characters (a file name: 255 bytes on
common file systems). Within these bounds the worst case stays well under a second per name.
"""

from __future__ import annotations

import re
from re import _constants as sre  # the parse tree's opcodes; the parser is re's own (no public API)
from re import _parser as sre_parse

MAX_TEXT = 255
WIDE = 16
MAX_WIDE_REPEATS = 2

_REPEATS = (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT)


def pattern_cost_problem(pattern: str) -> str | None:
    """Why matching ``pattern`` could take unbounded time (None when its cost is bounded).
    ``pattern`` must compile (`re.error` otherwise)."""
    wide = 0

    def walk(items, in_repeat: bool) -> str | None:
        nonlocal wide
        for op, av in items:
            if op in _REPEATS:
                lo, hi, body = av
                variable = lo != hi
                if in_repeat and variable:
                    return "a quantifier inside a quantified group (nested quantifiers)"
                if variable and (hi == sre.MAXREPEAT or hi > WIDE):
                    wide += 1
                why = walk(body, in_repeat or hi > 1)
            elif op == sre.BRANCH:
                if in_repeat:
                    return "an alternation (|) inside a quantified group"
                why = next(filter(None, (walk(b, in_repeat) for b in av[1])), None)
            else:
                why = next(filter(None, (walk(sub, in_repeat) for sub in _subpatterns(op, av))), None)
            if why:
                return why
        return None

    why = walk(sre_parse.parse(pattern), False)
    if why is None and wide > MAX_WIDE_REPEATS:
        why = f"{wide} quantifiers that repeat without a small bound (at most {MAX_WIDE_REPEATS})"
    return why


def _subpatterns(op, av) -> list:
    """The nested patterns of one parse-tree node (groups, lookarounds, conditionals)."""
    if op == sre.SUBPATTERN:
        return [av[3]]
    if op in (sre.ASSERT, sre.ASSERT_NOT):
        return [av[1]]
    if op == sre.ATOMIC_GROUP:
        return [av]
    if op == sre.GROUPREF_EXISTS:
        return [p for p in av[1:] if p is not None]
    return []


def search_capped(pattern: str, text: str) -> re.Match[str] | None:
    """``re.search`` of a pattern that passed `pattern_cost_problem` in a text of at most
    `MAX_TEXT` characters; a longer text is a ValueError (the caller lists it as a failure)."""
    if len(text) > MAX_TEXT:
        raise ValueError(f"longer than {MAX_TEXT} characters: not matched against a pattern")
    return re.search(pattern, text)
