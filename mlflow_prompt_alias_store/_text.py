"""Stored strings shown to a person: names, aliases, actors and messages come from whoever
wrote them, and a control character in one (an escape sequence, a carriage return, a
right-to-left override) would rewrite a terminal or disguise text on the page. Shown, each
such character is its Python escape (``\\x1b``, ``\\r``, ``\\u202e``)."""

from __future__ import annotations

import re

# C0 and C1 controls, DEL, and the bidirectional overrides, embeddings and isolates.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(value: object) -> str:
    """``value`` as text, its control characters escaped (``None`` is the empty string)."""
    if value is None:
        return ""
    return _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(value))
