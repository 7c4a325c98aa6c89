"""One exception type for mistakes a user can fix (bad flags, bad data, bad files), and a clean stop on signals.

Scripts print such an error as one line, `error: <message>`, and exit with status 1, instead of a
traceback: `common.flags.parse_flags` installs the hook that does this.

SIGTERM (how `timeout`, `kill` and job schedulers stop a job) and SIGINT (Ctrl-C) stop a script with one line,
`stopped by SIGTERM: <what was kept>`, and exit status 128 + the signal number. The stop is raised as
SystemExit, so `finally` blocks still run (a cache being written is removed, not left half-written:
common/files.py). A Python signal handler only runs between bytecodes of the main thread, so a process stuck
in one long C call, or code that swallows the exit, would ignore the signal; a watchdog thread, woken by the
signal itself (signal.set_wakeup_fd), ends such a process after STOP_GRACE_SECONDS.
"""
import contextlib
import os
import signal
import sys
import threading

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
STOP_GRACE_SECONDS = 30.0  # time for `finally` blocks before the watchdog exits without them
stop_note = None  # a callable returning what a stop keeps, e.g. stats.Trial's "2 finished runs are in LOG"
divergence_note = None  # a callable(run, how) recording a diverged run, saying where: stats.Trial's
deferred = {'active': False, 'signal': None}  # see defer_stops


class UserError(Exception):
    """A problem with the user's input. The message says what was expected and how to fix it."""


class UsageError(UserError):
    """A wrong command line (unknown flag, bad value): raised by common.flags.Parser."""


def diverged(run, how):
    """The one-line stop of a run whose loss or outputs became NaN or infinite (`how` says which), to raise. Such a
    run is no result: it is not logged, so no statistic counts it, and the runs before it stay in the log. The
    trial, if one is running, first records it beside its log (stats/diverged.py): for a search, a config that
    diverges is a result."""
    recorded = divergence_note(run, how) if divergence_note else ''
    return UserError(f'run {run} diverged: {how}, so it is not logged (the runs before it are){recorded}: lower the '
                     "learning rates (--lr and the rung's other lr flags), or check the --teacher checkpoint")


def _print_user_error(exc_type, exc, tb, _default=sys.excepthook):
    if issubclass(exc_type, UserError):
        print(f"error: {exc}", file=sys.stderr)
        return
    _default(exc_type, exc, tb)


def stop_message(signum):
    return f'stopped by {signal.Signals(signum).name}: {stop_note() if stop_note else "nothing to keep yet"}'


def stop(signum):
    for sig in STOP_SIGNALS:  # a second Ctrl-C must not interrupt the cleanup the first one started
        if signal.getsignal(sig) is _on_signal:
            signal.signal(sig, signal.SIG_IGN)
    print(stop_message(signum), file=sys.stderr, flush=True)
    raise SystemExit(128 + signum)


def _on_signal(signum, frame):
    if deferred['active']:
        deferred['signal'] = deferred['signal'] or signum
        return
    stop(signum)


@contextlib.contextmanager
def defer_stops():
    """A stop signal that arrives inside this block takes effect at its end, e.g. once a finished run's row is
    written. (Masking the signal would not do: the kernel hands it to another thread, and Python still runs
    the handler in the main thread.)"""
    deferred['active'] = True
    try:
        yield
    finally:
        deferred['active'] = False
        if deferred['signal']:
            stop(deferred['signal'])


def _watchdog(read_fd):
    """Wakes on a signal's byte in the wakeup pipe; if the process is still alive after the grace time, its main
    thread never got to (or swallowed) the SystemExit: exit without it."""
    while True:
        signum = os.read(read_fd, 1)[0]
        if signum in STOP_SIGNALS:
            threading.Event().wait(STOP_GRACE_SECONDS)
            print(f'{stop_message(signum)} (forced: the run did not stop within {STOP_GRACE_SECONDS:.0f} s)',
                  file=sys.stderr, flush=True)
            os._exit(128 + signum)


def install_stop_handlers():
    """Per signal, only over its default: an ignored SIGINT (a background job's) stays ignored, and a host
    program's own handler (a test runner, a notebook) stays in place."""
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread
    defaults = {signal.SIGTERM: signal.SIG_DFL, signal.SIGINT: signal.default_int_handler}
    ours = [sig for sig, default in defaults.items() if signal.getsignal(sig) is default]
    if not ours:
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    threading.Thread(target=_watchdog, args=(read_fd,), daemon=True, name='stop-watchdog').start()
    for sig in ours:
        signal.signal(sig, _on_signal)


def install_excepthook(stop_handlers=True):
    """stop_handlers: also stop cleanly on SIGTERM/SIGINT; off for callers with their own (a test runner)."""
    sys.excepthook = _print_user_error
    if stop_handlers:
        install_stop_handlers()
