"""A plain-text progress bar: redrawn in place on a terminal, a line every few percent
elsewhere (log files, CI), so it never fills a log with carriage returns."""

from __future__ import annotations

import time
from typing import TextIO

WIDTH = 30


class Progress:
    """Progress over ``total`` steps (days) written to ``stream``."""

    def __init__(
        self, total: int, stream: TextIO, *, every_percent: int = 10, label: str = "days"
    ) -> None:
        self.total = max(1, total)
        self.stream = stream
        self.every_percent = max(1, every_percent)
        self.label = label
        self.started = time.perf_counter()
        self._tty = _is_tty(stream)
        self._last_percent = -1

    def update(self, done: int, *, operations: int) -> None:
        percent = done * 100 // self.total
        line = self._line(done, percent, operations)
        if self._tty:
            self.stream.write("\r" + line)
            self.stream.flush()
        elif percent // self.every_percent > self._last_percent // self.every_percent or (
            done == self.total and self._last_percent < 100
        ):
            self.stream.write(line + "\n")
            self.stream.flush()
        self._last_percent = max(self._last_percent, percent)

    def close(self) -> None:
        if self._tty:
            self.stream.write("\n")
            self.stream.flush()

    def _line(self, done: int, percent: int, operations: int) -> str:
        filled = WIDTH * done // self.total
        elapsed = time.perf_counter() - self.started
        rate = operations / elapsed if elapsed > 0 else 0.0
        return (
            f"[{'#' * filled}{'.' * (WIDTH - filled)}] {percent:3d}% "
            f"{done}/{self.total} {self.label}, {operations:,} operations, "
            f"{elapsed:,.1f} s ({rate:,.0f}/s)"
        )


def _is_tty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
