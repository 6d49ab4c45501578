"""Shared CLI plumbing: error reporting, exit codes, the `--json` error shape.

Errors go to stderr as text, or as `{"error": {...}}` on stdout under --json; the
process exits with the documented code and never shows a traceback unless
LONGVID_DEBUG=1 is set.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import typer

from longvid.errors import ExitCode, LongvidError


def error_dict(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, LongvidError):
        return {"code": int(exc.code), "message": exc.message, "hint": exc.hint}
    if isinstance(exc, KeyboardInterrupt):
        return {"code": int(ExitCode.INTERRUPTED), "message": "interrupted",
                "hint": "run the same command again to resume"}
    return {"code": int(ExitCode.UNEXPECTED), "message": f"{type(exc).__name__}: {exc}",
            "hint": "this is a bug or an environment problem; rerun with LONGVID_DEBUG=1 "
                    "for a traceback and report it"}


def report(exc: BaseException, as_json: bool) -> int:
    """Print `exc` for a human (stderr) or a script (stdout JSON); return its exit code."""
    err = error_dict(exc)
    if os.environ.get("LONGVID_DEBUG") and not isinstance(exc, KeyboardInterrupt):
        import traceback

        traceback.print_exception(exc)
    if as_json:
        print(json.dumps({"error": err}), flush=True)
    else:
        print(f"error: {err['message']}", file=sys.stderr)
        if err["hint"]:
            print(f"  hint: {err['hint']}", file=sys.stderr)
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
