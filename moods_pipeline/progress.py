"""Progress listeners: how code running inside a Dagster run tells the CLI's progress bar.

The CLI runs jobs in-process, so a listener registered here hears the assets' per-user
events; in the daemon or the UI nobody listens and this costs nothing.
"""

from __future__ import annotations

import sys
import threading
from typing import Callable

_listeners: list[Callable[[str, dict], None]] = []
_lock = threading.Lock()


def listen(listener: Callable[[str, dict], None]) -> Callable[[], None]:
    with _lock:
        _listeners.append(listener)

    def stop() -> None:
        with _lock:
            if listener in _listeners:
                _listeners.remove(listener)

    return stop


def notify(event: str, **data) -> None:
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        listener(event, data)


class ProgressBar:
    """Users done out of a total, on stderr: a redrawn bar on a terminal, plain lines otherwise."""

    def __init__(self, total: int, label: str, stream=None) -> None:
        self.total = max(total, 0)
        self.label = label
        self.done = 0
        self.failed = 0
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._lock = threading.Lock()
        self._last_line_at = -1

    def advance(self, failed: bool = False, note: str = "") -> None:
        with self._lock:
            self.done += 1
            self.failed += int(failed)
            if self.tty:
                width = 30
                filled = int(width * self.done / self.total) if self.total else width
                self.stream.write(
                    f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}"
                    f"{f' ({self.failed} failed)' if self.failed else ''}"
                )
                if self.done >= self.total:
                    self.stream.write("\n")
            else:
                step = max(1, self.total // 20)
                if failed or self.done % step == 0 or self.done == self.total:
                    self.stream.write(f"{self.label}: {self.done}/{self.total} users{(' ' + note) if note else ''}\n")
            self.stream.flush()
