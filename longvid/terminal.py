"""Text for a terminal: a user's strings (titles, prompts, ids, file names) never reach
it raw. Control characters (escape sequences, bells, NUL) are shown as `\\x1b`-style
escapes, and in rich output square brackets are not taken as markup.

When the reader of stdout or stderr goes away (`longvid plan x | head -1`, `| grep -q`),
a write raises BrokenPipeError, rich's consoles included (`console()`), and the CLI
rim ends the command quietly with exit 141, as a Unix tool killed by SIGPIPE."""

from __future__ import annotations

import errno
import os
import re
import select
import sys
from typing import Any

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # tab and newline pass


def plain(text: str) -> str:
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def for_rich(text: str) -> str:
    from rich.markup import escape

    return escape(plain(text))


def console(stderr: bool = False) -> Any:
    """A rich Console whose closed output raises BrokenPipeError for the CLI rim (rich's
    own exits 1 and redirects stdout even when the closed one is stderr)."""
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError(errno.EPIPE, "the output's reader exited")

    return _Console(stderr=stderr)


def output_closed() -> bool:
    """Whether stdout or stderr is a pipe (or socket) whose reader has gone."""
    for fd in (1, 2):
        try:
            poll = select.poll()
            poll.register(fd, select.POLLOUT)
            if any(flags & select.POLLERR for _, flags in poll.poll(0)):
                return True
        except (OSError, ValueError):
            continue
    return False


def open_std_streams() -> None:
    """Give a closed stdin, stdout or stderr (`>&-`, `2>&-`, some job schedulers) /dev/null.
    Else the next file opened takes its number: a C library's or a child's writes to
    stderr would land in a run file, and Python's own streams would be None. And let
    stdout and stderr escape what their encoding cannot write."""
    for fd, mode in ((0, os.O_RDONLY), (1, os.O_WRONLY), (2, os.O_WRONLY)):
        try:
            os.fstat(fd)
        except OSError:
            devnull = os.open(os.devnull, mode)
            if devnull != fd:
                os.dup2(devnull, fd)
                os.close(devnull)
    if sys.stdout is None:
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - the process's stdout
    if sys.stderr is None:
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
    # a terminal or PYTHONIOENCODING that cannot encode a title or prompt (ASCII, Latin-1)
    # shows it escaped (`\xe9`), never fails the command with UnicodeEncodeError
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


def silence_output() -> None:
    """Point stdout and stderr at /dev/null, so the interpreter's last flush of what is
    still buffered for a closed pipe prints nothing."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
