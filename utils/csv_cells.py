"""The one rule for spreadsheet formulas in CSV exports (test sets and run results).

A cell that a spreadsheet would run as a formula (starting with =, +, -, @, a tab or a carriage
return) gets a leading quote on export. Matching any run of quotes before the trigger (and
removing exactly one on import) keeps values that already start with "'=" intact through a
round trip.
"""

from __future__ import annotations

import re

_FORMULA = re.compile(r"'*[=+\-@\t\r]")
_QUOTED_FORMULA = re.compile(r"'+[=+\-@\t\r]")
# What a guarded cell can start with: any other first character rules the pattern out without
# running it (most cells, and an export writes millions).
_FIRST = frozenset("'=+-@\t\r")


def guard_formula(value: str) -> str:
    """The text as written to a CSV cell."""
    if value and value[0] in _FIRST and _FORMULA.match(value):
        return "'" + value
    return value


def unguard_formula(cell: str) -> str:
    """A CSV cell written by `guard_formula`, as the text it was."""
    return cell[1:] if _QUOTED_FORMULA.match(cell) else cell
