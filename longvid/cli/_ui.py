"""Shared CLI plumbing: error reporting, exit codes, the `--json` error shape.

Errors go to stderr as text, or as `{"error": {...}}` on stdout under --json; the
process exits with the documented code and never shows a traceback unless
LONGVID_DEBUG=1 is set.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import typer

from longvid import signals
from longvid.errors import ExitCode, LongvidError, Terminated
from longvid.terminal import output_closed, plain, silence_output

_ROOM = ("free disk space there, or write elsewhere (-o, LONGVID_HOME), then run the same "
         "command again: committed segments are kept")
_ACCESS = ("choose a writable place (-o, LONGVID_HOME) or fix the permissions, then run the "
           "same command again")
_PATH = "check the path: a part of it is a file where a folder is needed, or the other way round"
# what the system refuses (a full disk, a read-only or foreign folder) is a missing
# resource, not a bug: exit 4, naming the path
_SYSTEM_REFUSALS = {errno.ENOSPC: _ROOM, errno.EFBIG: _ROOM, errno.EDQUOT: _ROOM,
                    errno.EROFS: _ACCESS, errno.EACCES: _ACCESS, errno.EPERM: _ACCESS,
                    errno.ENOTDIR: _PATH, errno.EISDIR: _PATH}


def error_dict(exc: BaseException) -> dict[str, Any]:
    stopped_by = signals.received()
    if stopped_by is not None:
        # whatever a library made of the stop exception, the stop is what happened
        exc = signals.stop_exception(stopped_by)
    if isinstance(exc, BrokenPipeError) and output_closed():  # `| head`: not an error
        return {"code": int(ExitCode.OUTPUT_CLOSED), "message": "", "hint": ""}
    if isinstance(exc, LongvidError):
        return {"code": int(exc.code), "message": exc.message, "hint": exc.hint}
    if isinstance(exc, OSError) and exc.errno in _SYSTEM_REFUSALS:
        where = exc.filename if exc.filename is not None else "(unknown path)"
        return {"code": int(ExitCode.MISSING_RESOURCE), "message": f"{exc.strerror}: {where}",
                "hint": _SYSTEM_REFUSALS[exc.errno]}
    if isinstance(exc, Terminated):
        return {"code": int(ExitCode.TERMINATED), "message": "terminated (SIGTERM)",
                "hint": "run the same command again to resume"}
    if isinstance(exc, KeyboardInterrupt):
        return {"code": int(ExitCode.INTERRUPTED), "message": "interrupted",
                "hint": "run the same command again to resume"}
    return {"code": int(ExitCode.UNEXPECTED), "message": f"{type(exc).__name__}: {exc}",
            "hint": "this is a bug or an environment problem; rerun with LONGVID_DEBUG=1 "
                    "for a traceback and report it"}


def report(exc: BaseException, as_json: bool) -> int:
    """Print `exc` for a human (stderr) or a script (stdout JSON); return its exit code."""
    err = error_dict(exc)
    if err["code"] == ExitCode.OUTPUT_CLOSED:  # nobody reads: say nothing, quietly
        silence_output()
        return err["code"]
    if os.environ.get("LONGVID_DEBUG") and not isinstance(exc, KeyboardInterrupt):
        import traceback

        traceback.print_exception(exc)
    if as_json:
        print(json.dumps({"error": err}), flush=True)
    else:
        print(f"error: {plain(err['message'])}", file=sys.stderr)
        if err["hint"]:
            print(f"  hint: {plain(err['hint'])}", file=sys.stderr)
    return err["code"]


def guarded(fn: Callable[[], Any], as_json: bool) -> Any:
    """Run a command body; map every failure to its exit code."""
    try:
        return fn()
    except (typer.Exit, typer.Abort):
        raise
    except BaseException as exc:  # noqa: BLE001 - the rim: every error gets an exit code
        if isinstance(exc, SystemExit):
            raise
        raise typer.Exit(report(exc, as_json)) from None


def fail(code: ExitCode, message: str, hint: str = "", as_json: bool = False) -> NoReturn:
    raise typer.Exit(report(_Fail(code, message, hint), as_json))


class _Fail(LongvidError):
    def __init__(self, code: ExitCode, message: str, hint: str) -> None:
        super().__init__(message, hint)
        self.code = code
