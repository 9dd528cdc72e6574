"""How the commands report errors: an expected user error is one line on stderr and exit status 2,
a bug keeps its traceback."""

from __future__ import annotations

import os
import sys
from typing import Callable, Optional

__all__ = ["DEBUG_ENV", "fail", "report_errors", "user_error_message"]

DEBUG_ENV = "SPARC_DEBUG"   # SPARC_DEBUG=1: tracebacks for user errors too


def user_error_message(err: BaseException) -> Optional[str]:
    """The one-line message of an expected user error, ``None`` for anything else (a bug: it keeps its
    traceback). Expected: an OSError (a missing file, a full disk), a ValueError (sparc's checks of the
    input raise them, wording the message for the user), a KeyError naming a qid (the store's lookups)."""
    if isinstance(err, KeyError):
        msg = str(err.args[0]) if err.args else ""
        return msg if "qid" in msg else None
    if isinstance(err, (ValueError, OSError)):
        return " ".join(str(err).split("\n")) or type(err).__name__
    return None


def fail(command: str, err: Exception) -> int:
    """Print ``sparc <command>: error: <message>`` and return exit status 2 (re-raise under SPARC_DEBUG)."""
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        raise err
    msg = user_error_message(err)
    if msg is None:  # a TypeError and the like from the prior tools' own checks
        msg = str(err)
    print(f"sparc {command}: error: {msg}", file=sys.stderr)
    return 2


def report_errors(command: str, run: Callable) -> Callable:
    """``run(args) -> int`` with the expected user errors (:func:`user_error_message`) reported as one
    line on stderr and exit status 2 instead of a traceback; other exceptions propagate."""
    def wrapped(args) -> int:
        try:
            return run(args)
        except (ValueError, KeyError, OSError) as e:
            if user_error_message(e) is None:
                raise
            return fail(command, e)

    return wrapped
