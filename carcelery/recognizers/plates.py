"""What a number plate's text looks like: its characters, its shape, and the formats plates are issued in.

A read shaped like a plate (``plate_like``: 4 to 10 letters and digits, separators aside, with a
letter and at least two digits; one in a car's plate zone) that fits none of the formats is brought to one where the text
model's own second choice for one character allows it (``refit``). A format is written as plate
formats are: ``A`` for a letter, ``9`` for a digit ("9AAA999" is California's 1ABC234); which ones,
CARCELERY_PLATE_FORMATS (carcelery/settings.py). On street
cameras PP-OCR reads a California plate's leading 4 or 7 as L or Z, sure of it at 77-90 %, with the
digit its second choice at 10-33 %; the format settles it. What it gains and costs:
docs/recognizers.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

# O and I as the digits plate fonts print alike.
FOLDED = str.maketrans("OI", "01")
# A second choice is taken only where the text model gave it at least this (0-1): one in twenty.
ALTERNATIVE = 0.05


@dataclass(frozen=True)
class Character:
    """A character as read, and the text model's best second choice of the other kind.

    ``other`` is a digit for a letter, a letter for a digit (upper case), "" for anything else;
    ``other_score`` the model's probability of it (0-1) where the character was read.
    """

    text: str
    other: str = ""
    other_score: float = 0.0


def letters_and_digits(text: str) -> str:
    """``text``'s letters and digits, upper case: a plate's characters, separators and case aside."""
    return re.sub(r"[^0-9A-Z]", "", text.upper())


def folded(text: str) -> str:
    """``text`` with O as 0 and I as 1: the characters plate fonts print alike."""
    return text.translate(FOLDED)


def plate_like(text: str, digits: int = 2) -> bool:
    """Whether ``text`` is shaped like a number plate: 4-10 letters and digits (separators and case aside), a letter and ``digits`` digits among them.

    Two digits tell a plate from a word or a name anywhere in a picture; where a plate is expected
    (a car's plate zone), one does: plates with a single digit are issued (SGT-E5), and a 0 read as
    O leaves one (HKO-E7C).
    """
    plate = letters_and_digits(text)
    return 4 <= len(plate) <= 10 and any(c.isalpha() for c in plate) and sum(c.isdigit() for c in plate) >= digits


def shape(text: str) -> str:
    """``text``'s letters and digits as a format: ``A`` for each letter, ``9`` for each digit."""
    return "".join("9" if c.isdigit() else "A" for c in letters_and_digits(text))


def fits(text: str, known: Iterable[str]) -> bool:
    """Whether ``text`` (separators aside) has the shape of one of the formats ``known``."""
    return shape(text) in set(known)


def refit(characters: Sequence[Character], known: Iterable[str]) -> str | None:
    """The read ``characters`` with one character replaced by its second choice so that it fits a format ``known``.

    Of the replacements that make it fit, the one the model gave most (at least ALTERNATIVE).
    Returns None where the read fits a format already, or no single replacement makes it fit.
    """
    known = set(known)
    if fits("".join(c.text for c in characters), known):
        return None
    best: tuple[float, str] | None = None
    for index, character in enumerate(characters):
        if character.other and character.other_score >= ALTERNATIVE and (best is None or character.other_score > best[0]):
            changed = "".join(character.other if i == index else c.text for i, c in enumerate(characters))
            if fits(changed, known):
                best = character.other_score, changed
    return best[1] if best else None
