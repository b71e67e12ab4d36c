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


# What MLflow's prompt APIs say for a registered model or model version: a prompt
# (``mlflow.prompt.registry_utils.translate_prompt_exception``'s rule).
_MODEL_WORDS = re.compile(r"(registered model|model version)", re.IGNORECASE)


def prompt_words(message: str) -> str:
    """An error message about a prompt in the words MLflow's prompt APIs use ("Registered
    Model with name=qa not found" → "Prompt with name=qa not found")."""
    return _MODEL_WORDS.sub(lambda m: "Prompt" if m.group(0)[0].isupper() else "prompt", message)
