"""A dependency-free progress bar for the driver: stages profiled / total, cache hits, rate, ETA.

On a TTY the line is redrawn in place (at most every ``min_interval_s``); otherwise (CI logs, files) a
plain line is printed every ``log_interval_s`` or each further 10 % of the work, so logs stay short.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional, TextIO


def format_duration(seconds: float) -> str:
    """``1:02:03`` / ``2:03`` style; ``?`` when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


@dataclass(frozen=True)
class Pace:
    """How often a progress bar redraws: ``min_interval_s`` between redraws on a TTY, ``log_interval_s``
    between lines elsewhere, by ``clock`` (tests pass a fake one)."""
    min_interval_s: float = 0.1
    log_interval_s: float = 10.0
    clock: Callable[[], float] = time.monotonic


class ProgressBar:
    """Progress of ``total`` stages to measure (cache hits are shown, not counted as work).

    Args:
        total: stages to measure.
        cache_hits: stages found in the cost table (shown for context).
        desc: label at the start of the line.
        enabled: False makes every method a no-op.
        stream: where to write (default ``sys.stderr``).
        pace: how often it redraws, and its clock (``Pace``).
    """

    WIDTH = 24

    def __init__(self, total: int, cache_hits: int = 0, desc: str = "profiling", *, enabled: bool = True,
                 stream: Optional[TextIO] = None, pace: Optional["Pace"] = None):
        if total < 0:
            raise ValueError(f"total must be >= 0, got {total}")
        self.total = int(total)
        self.cache_hits = int(cache_hits)
        self.desc = desc
        self.enabled = enabled
        self.done = 0
        self.errors = 0
        self._stream = stream if stream is not None else sys.stderr
        self._tty = bool(getattr(self._stream, "isatty", lambda: False)())
        pace = pace if pace is not None else Pace()
        self._min_interval = pace.min_interval_s
        self._log_interval = pace.log_interval_s
        self._clock = pace.clock
        self._start = pace.clock()
        self._last_draw = -math.inf
        self._last_logged_tenth = 0
        self._closed = False
        self._width = 0
        if enabled and not self._tty:
            self._write_line(self.render())
            self._last_draw = self._start

    # ----- text -----------------------------------------------------------------------------------
    def rate(self) -> float:
        elapsed = self._clock() - self._start
        return self.done / elapsed if elapsed > 0 else 0.0

    def eta_s(self) -> float:
        r = self.rate()
        return (self.total - self.done) / r if r > 0 else math.inf

    def render(self) -> str:
        """The status line, e.g. ``profiling [#####-----] 120/480 (25%) | hits 31 | 12.5/s | ETA 0:29``."""
        frac = self.done / self.total if self.total else 1.0
        filled = int(round(frac * self.WIDTH))
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        parts = [f"{self.desc} [{bar}] {self.done}/{self.total} ({100 * frac:.0f}%)",
                 f"cache hits {self.cache_hits}"]
        if self.errors:
            parts.append(f"errors {self.errors}")
        parts.append(f"{self.rate():.1f}/s")
        if self._closed:
            parts.append(f"took {format_duration(self._clock() - self._start)}")
        else:
            parts.append(f"ETA {format_duration(self.eta_s())}")
        return " | ".join(parts)

    # ----- updates --------------------------------------------------------------------------------
    def update(self, n: int = 1, errors: int = 0) -> None:
        """Count ``n`` more stages done (``errors`` of them failed) and redraw if it is time."""
        if not self.enabled or self._closed:
            return
        self.done = min(self.total, self.done + int(n))
        self.errors += int(errors)
        now = self._clock()
        if self._tty:
            if now - self._last_draw >= self._min_interval or self.done == self.total:
                self._redraw()
                self._last_draw = now
            return
        tenth = (10 * self.done) // self.total if self.total else 10
        if now - self._last_draw >= self._log_interval or tenth > self._last_logged_tenth:
            self._write_line(self.render())
            self._last_draw = now
            self._last_logged_tenth = tenth

    def close(self) -> None:
        """Draw the final state (and end the line on a TTY); further updates are ignored."""
        if not self.enabled or self._closed:
            return
        self._closed = True
        if self._tty:
            self._redraw()
            self._stream.write("\n")
            self._stream.flush()
        else:
            self._write_line(self.render())

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _redraw(self) -> None:
        line = self.render()
        pad = max(0, self._width - len(line))
        self._width = len(line)
        self._stream.write("\r" + line + " " * pad)
        self._stream.flush()

    def _write_line(self, line: str) -> None:
        self._stream.write(line + "\n")
        self._stream.flush()
