"""Stop signals: Ctrl-C (SIGINT) and SIGTERM stop a command the same way, and it resumes.

The handler raises in the main thread wherever it is, so a stop is prompt. That
exception can land inside a C or Rust extension that calls back into Python, which may
report it as an error of its own (a pending KeyboardInterrupt surfacing as a ValueError
about a tensor's shape) or swallow it. So the handler also records the signal:
- the CLI rim reports any failure after a stop signal as that signal (exit 130 or 143,
  resumable), never as an unexpected error (exit 1) or as one storyboard of a batch
  failing while the others go on;
- the segment loop calls `check()` before each segment and each denoising step, so a
  stop that a library swallowed still ends the command at the next safe point;
- a second stop signal while the first unwinds (Ctrl-C pressed again) leaves at once
  with the first one's exit code. That is safe: every write is atomic, the run's lock
  is an flock the system releases, and a later run removes temporary files.
"""

from __future__ import annotations

import os
import signal
from types import FrameType

from longvid.errors import ExitCode, Terminated

_received: int | None = None  # the first stop signal this process got


def install() -> None:
    """Handle SIGINT and SIGTERM in this (the main) thread. A SIGINT the shell set to be
    ignored (a background job, `nohup`) stays ignored."""
    signal.signal(signal.SIGTERM, _handle)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, _handle)


def received() -> int | None:
    """The stop signal this process got, or None."""
    return _received


def stop_exception(signum: int) -> KeyboardInterrupt:
    """What a stop by `signum` raises: Terminated for SIGTERM, KeyboardInterrupt else."""
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def check() -> None:
    """Raise the stop exception if a stop signal arrived (a safe point in a long loop)."""
    if _received is not None:
        raise stop_exception(_received)


def exit_code(signum: int) -> int:
    """The documented exit code of a stop by `signum`: 143 for SIGTERM, 130 else."""
    return int(ExitCode.TERMINATED if signum == signal.SIGTERM else ExitCode.INTERRUPTED)


def _handle(signum: int, frame: FrameType | None) -> None:
    global _received
    if _received is not None:  # the second: no more unwinding (the run stays resumable)
        try:
            os.write(2, b"error: stopped again; run the same command again to resume\n")
        finally:  # even with stderr closed
            os._exit(exit_code(_received))
    _received = signum
    raise stop_exception(signum)
