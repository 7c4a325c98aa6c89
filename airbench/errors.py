"""One exception type for mistakes a user can fix (bad flags, bad data, bad files).

Scripts print such an error as one line, `error: <message>`, and exit with status 1, instead of a
traceback: `airbench.flags.parse_flags` installs the hook that does this.
"""
import signal
import sys


class UserError(Exception):
    """A problem with the user's input. The message says what was expected and how to fix it."""


class UsageError(UserError):
    """A wrong command line (unknown flag, bad value): raised by airbench.flags.Parser."""


def _print_user_error(exc_type, exc, tb, _default=sys.excepthook):
    if issubclass(exc_type, UserError):
        print(f"error: {exc}", file=sys.stderr)
        return
    _default(exc_type, exc, tb)


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def install_excepthook():
    sys.excepthook = _print_user_error
    # A job scheduler stops a job with SIGTERM, whose default action skips `finally` blocks: as SystemExit it
    # runs them, so a cache being written is removed rather than left half-written (airbench/files.py).
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
