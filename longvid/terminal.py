"""Text for a terminal: a user's strings (titles, prompts, ids, file names) never reach
it raw. Control characters (escape sequences, bells, NUL) are shown as `\\x1b`-style
escapes, and in rich output square brackets are not taken as markup."""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # tab and newline pass


def plain(text: str) -> str:
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def for_rich(text: str) -> str:
    from rich.markup import escape

    return escape(plain(text))
