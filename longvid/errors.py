"""Errors that teach, and the exit codes they map to at the CLI rim.

Every error a user can cause carries a message (what is wrong, where) and a hint
(what to do). The CLI prints them and exits with the documented code; nothing
below the CLI calls sys.exit.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    UNEXPECTED = 1
    USAGE = 2
    INVALID_INPUT = 3  # storyboard, preset, plan or input file
    MISSING_RESOURCE = 4  # ffmpeg, weights, GPU too small, run directory busy
    INTERRUPTED = 130  # Ctrl-C; the run is resumable
    TERMINATED = 143  # SIGTERM (a scheduler's time limit or pre-emption); resumable
    OUTPUT_CLOSED = 141  # stdout/stderr's reader exited (`| head`, `| grep -q`), as SIGPIPE


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that a render stops as it does on Ctrl-C."""


class LongvidError(Exception):
    """Base for errors with a stable exit code, a message and a hint."""

    code: ExitCode = ExitCode.UNEXPECTED

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class InputError(LongvidError):
    """Bad user input: a storyboard, preset, clip or audio file."""

    code = ExitCode.INVALID_INPUT


class StoryboardError(InputError):
    """An invalid storyboard, located by file, line and key."""

    def __init__(
        self, message: str, hint: str = "", *, path: str = "", line: int | None = None,
        key: str = "",
    ) -> None:
        where = path
        if line is not None:
            where += f":{line}"
        if key:
            where += f" ({key})"
        super().__init__(f"{where}: {message}" if where else message, hint)
        self.path, self.line, self.key = path, line, key


class ResourceError(LongvidError):
    """Something the run needs is not here: ffmpeg, weights, VRAM, a free run directory."""

    code = ExitCode.MISSING_RESOURCE
