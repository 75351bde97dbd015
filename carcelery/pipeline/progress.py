"""Progress for people: a bar on a terminal, a plain line every few seconds otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Shows ``label done/total`` as it advances.

    Parameters:
      label: what is counted ("sent", "done").
      total: the count at the end (None while unknown).
      stream: where to write; a bar if it is a terminal, log lines otherwise.
      every: seconds between log lines when it is not a terminal.
    """

    WIDTH = 30

    def __init__(self, label: str, total: int | None = None, stream: TextIO | None = None, every: float = 5.0):
        self.label, self.total, self.every = label, total, every
        self.stream = stream or sys.stderr
        self.bar = self.stream.isatty()
        self.done = 0
        self._shown = -1
        self._last_line = float("-inf")  # the first update is shown

    def update(self, done: int) -> None:
        self.done = done
        if done == self._shown:
            return
        if self.bar:
            self.stream.write("\r" + self._text())
            self.stream.flush()
            self._shown = done
        elif time.monotonic() - self._last_line >= self.every or done == self.total:
            self.stream.write(self._text() + "\n")
            self.stream.flush()
            self._shown, self._last_line = done, time.monotonic()

    def close(self) -> None:
        """Show the final count (once) and end the line."""
        if self.bar:
            self.stream.write("\r" + self._text() + "\n")
        elif self.done != self._shown:
            self.stream.write(self._text() + "\n")
        self.stream.flush()

    def _text(self) -> str:
        if not self.total:
            return f"{self.label}: {self.done}"
        filled = self.WIDTH * min(self.done, self.total) // self.total
        return (f"{self.label}: [{'#' * filled}{'.' * (self.WIDTH - filled)}] "
                f"{self.done}/{self.total} ({100 * self.done // self.total}%)")
