"""Progress for people: tqdm's bar on a terminal, a plain line every few seconds otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm

# The count, not tqdm's rates and times: a log line is read as "how far".
KNOWN = "{desc}: [{bar:30}] {n}/{total} ({percentage:.0f}%)"
UNKNOWN = "{desc}: {n}"
ASCII = ".#"  # the bar's empty and full cells


class Progress:
    """Shows ``label done/total`` as it advances.

    Parameters:
      label: what is counted ("sent", "done").
      total: the count at the end (None while unknown).
      stream: where to write; a bar if it is a terminal, log lines otherwise.
      every: seconds between log lines when it is not a terminal.
    """

    def __init__(self, label: str, total: int | None = None, stream: TextIO | None = None, every: float = 5.0):
        self.label, self.total, self.every = label, total, every
        self.stream = stream or sys.stderr
        self.format = KNOWN if total else UNKNOWN
        # tqdm redraws one line with "\r": in a log that piles up into one line, so there the lines are written here.
        # Every change is drawn (tqdm's defaults skip the changes between timed redraws).
        self.bar = tqdm(total=total, desc=label, file=self.stream, ascii=ASCII, bar_format=self.format,
                        mininterval=0, miniters=1) if self.stream.isatty() else None
        self.done = 0
        self._shown = -1
        self._last_line = float("-inf")  # the first update is shown

    def update(self, done: int) -> None:
        if self.bar:
            if done != self.done:  # an unchanged count is not redrawn
                self.bar.update(done - self.done)
        elif done != self._shown and (time.monotonic() - self._last_line >= self.every or done == self.total):
            self._line(done)
            self._last_line = time.monotonic()
        self.done = done

    def close(self) -> None:
        """Show the final count (once) and end the line."""
        if self.bar:
            self.bar.close()
        elif self.done != self._shown:
            self._line(self.done)

    def _line(self, done: int) -> None:
        text = tqdm.format_meter(done, self.total, 0, prefix=self.label, ascii=ASCII, bar_format=self.format)
        self.stream.write(text + "\n")
        self.stream.flush()
        self._shown = done
