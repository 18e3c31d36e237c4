"""Progress bars for long reads and writes (imports, exports), on stderr, drawn only when
stderr is a terminal: scripts and logs get no redraws, and stdout stays the output's."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO, cast

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)


def _drawn() -> bool:
    return sys.stderr.isatty()


class _Lines:
    """A text source read line by line (as the CSV reader does), reporting the bytes read."""

    def __init__(self, source: TextIO, advance: Callable[[int], object]) -> None:
        self._source, self._advance = source, advance

    def readline(self, size: int | None = -1) -> str:
        line = self._source.readline(-1 if size is None else size)
        self._advance(len(line.encode("utf-8", "surrogateescape")))
        return line

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        line = self.readline()
        if not line:
            raise StopIteration
        return line


class _Rows:
    """A text sink counting the lines written through it."""

    def __init__(self, sink: TextIO, advance: Callable[[int], object]) -> None:
        self._sink, self._advance = sink, advance

    def write(self, text: str) -> int:
        self._advance(text.count("\n"))
        return self._sink.write(text)

    def flush(self) -> None:
        self._sink.flush()


def _size(source: TextIO) -> int | None:
    try:
        return os.fstat(source.fileno()).st_size or None
    except (OSError, ValueError, io.UnsupportedOperation):
        return None  # a pipe, or stdin: no known end


@contextmanager
def reading(source: TextIO, label: str) -> Iterator[TextIO]:
    """``source``, with a bar of how much of it has been read."""
    if not _drawn():
        yield source
        return
    total = _size(source)
    columns = (SpinnerColumn(), TextColumn(label), BarColumn(), DownloadColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=Console(file=sys.stderr)) as bar:
        task = bar.add_task(label, total=total)
        yield cast(TextIO, _Lines(source, lambda n: bar.advance(task, n)))
        if total is not None:
            bar.update(task, completed=total)  # the end, whatever the encoding


@contextmanager
def writing(sink: TextIO, label: str) -> Iterator[TextIO]:
    """``sink``, with a counter of the lines written to it."""
    if not _drawn():
        yield sink
        return
    columns = (SpinnerColumn(), TextColumn(label), TextColumn("{task.completed:,} lines"),
               TimeElapsedColumn())
    with Progress(*columns, console=Console(file=sys.stderr)) as bar:
        task = bar.add_task(label, total=None)
        yield cast(TextIO, _Rows(sink, lambda n: bar.advance(task, n)))
