"""Text from outside (S3 keys, recognized text) made safe to print on one line; what a JSON value is, in words.

An S3 key may hold any character, and a recognizer may read any: a newline
would split a line of output.txt or of a log in two (and forge the second), a
carriage return or an ANSI escape would garble a terminal. ``printable``
writes each such character as a backslash escape, as Python's
``unicode_escape`` does, and the backslash itself as ``\\\\``:

- ``\\t``, ``\\n``, ``\\r`` for TAB, LF, CR;
- ``\\xHH`` for the other C0 controls (U+0000-U+001F), DEL (U+007F) and the
  C1 controls (U+0080-U+009F: NEL among them);
- ``\\uHHHH`` for the Unicode line and paragraph separators (U+2028, U+2029).

Every other character (letters of any script, spaces, ``:``) is kept. The
escaping is reversible: ``unprintable`` gives the text back (it is
``text.encode("latin-1", "backslashreplace").decode("unicode_escape")``).
"""

from __future__ import annotations

import re
from typing import Any

_SPECIAL = re.compile(r"[\x00-\x1f\x7f-\x9f\\\u2028\u2029]")
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r", "\\": "\\\\"}


def _escape(match: re.Match) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


def printable(text: str) -> str:
    """``text`` with its control characters, line separators and backslashes escaped: one line, any terminal."""
    return _SPECIAL.sub(_escape, text)


def unprintable(text: str) -> str:
    """The text ``printable`` was given (any ``\\x``, ``\\u``, ``\\t``, ``\\n``, ``\\r``, ``\\\\`` escape undone)."""
    return text.encode("latin-1", "backslashreplace").decode("unicode_escape")


_KINDS = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
          float: "a number", type(None): "null"}


def json_kind(value: Any) -> str:
    """What a decoded JSON value is, in JSON's words (an object, an array, a string, ...)."""
    return _KINDS.get(type(value), type(value).__name__)
