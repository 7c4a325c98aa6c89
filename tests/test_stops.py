"""Nothing is lost on a bad output path or a stop signal: the error comes before training, and a stopped run
keeps every finished run in its log and says so in one line."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import CPU_LOG, ROOT
from test_rungs import tiny_flags

SCRIPT = 'main0_network.py'


def run_rung(*flags):
    return subprocess.run([sys.executable, SCRIPT, *flags], cwd=ROOT, capture_output=True, text=True, timeout=300)


def assert_refused_before_training(proc, message):
    assert proc.returncode == 1
    assert proc.stderr.startswith('error: ') and proc.stderr.count('\n') == 1 and message in proc.stderr
    assert not [line for line in proc.stdout.splitlines() if line.startswith('|')]  # no epoch table: no training


def test_an_out_that_is_a_file_is_refused_before_training(synthetic_cache, tmp_path):
    out = tmp_path / 'results.txt'
    out.write_text('not a folder')
    flags = tiny_flags(SCRIPT, synthetic_cache, tmp_path)
    proc = run_rung(*flags, '--out', str(out))
    assert_refused_before_training(proc, f'--out {out}')
    assert out.read_text() == 'not a folder'


@pytest.mark.skipif(os.geteuid() == 0, reason='root may write to read-only files')
def test_a_read_only_log_is_refused_before_training(synthetic_cache, tmp_path):
    log = tmp_path / 'main0_network' / CPU_LOG
    log.parent.mkdir()
    log.touch(mode=0o444)
    assert_refused_before_training(run_rung(*tiny_flags(SCRIPT, synthetic_cache, tmp_path)), 'is read-only')


@pytest.mark.parametrize('target, message', [('folder', 'is a folder: pass a file path'),
                                             ('under-a-file', 'cannot write there')])
def test_a_bad_save_model_path_is_refused_before_training(target, message, synthetic_cache, tmp_path):
    (tmp_path / 'a-file').write_text('x')
    path = {'folder': tmp_path, 'under-a-file': tmp_path / 'a-file' / 'model.pt'}[target]
    proc = run_rung(*tiny_flags(SCRIPT, synthetic_cache, tmp_path / 'out'), '--save-model', str(path))
    assert_refused_before_training(proc, message)


def logged(out):
    path = out / 'main0_network' / CPU_LOG
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_keeps_the_finished_runs_and_says_so(signum, synthetic_cache, tmp_path):
    flags = tiny_flags(SCRIPT, synthetic_cache, tmp_path)
    proc = subprocess.Popen([sys.executable, SCRIPT, *flags, '--runs', '500', '--no-warmup'], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not logged(tmp_path) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signum)
    stderr = proc.communicate(timeout=60)[1]
    assert proc.returncode == 128 + signum, stderr
    rows = logged(tmp_path)
    assert 1 <= len(rows) < 500 and [row['seed'] for row in rows] == list(range(len(rows)))
    name = signal.Signals(signum).name
    [line] = stderr.strip().splitlines()  # no traceback
    assert line.startswith(f'stopped by {name}: {len(rows)} finished run')
    assert str(tmp_path / 'main0_network' / CPU_LOG) in line and '--resume' in line


SWALLOWS_THE_STOP = """
import atexit, sys, time
sys.path.insert(0, {root!r})
from common import errors
errors.STOP_GRACE_SECONDS = 1.0
errors.install_excepthook()
atexit.register(time.sleep, 3600)  # a cleanup that never ends, like a run stuck in one C call
print('ready', flush=True)
while True:  # code that catches everything: the SystemExit may never end it
    try:
        time.sleep(0.05)
    except BaseException:
        pass
"""


def test_a_process_that_ignores_the_stop_is_ended_by_the_watchdog():
    proc = subprocess.Popen([sys.executable, '-c', SWALLOWS_THE_STOP.format(root=str(ROOT))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == 'ready\n'
    proc.send_signal(signal.SIGTERM)
    stderr = proc.communicate(timeout=30)[1]
    assert proc.returncode == 128 + signal.SIGTERM
    assert 'stopped by SIGTERM: nothing to keep yet (forced: the run did not stop within 1 s)' in stderr


def test_a_stop_inside_defer_stops_takes_effect_at_its_end(monkeypatch, capsys):
    # what Trial.record does around writing a finished run's row: the row is written, then the stop happens
    from common import errors
    monkeypatch.setattr(errors, 'stop_note', lambda: '1 finished run of this session is in LOG')
    written = []
    with pytest.raises(SystemExit) as info:
        with errors.defer_stops():
            errors._on_signal(signal.SIGTERM, None)  # as the handler runs when the signal arrives here
            written.append('row')
    assert written == ['row'] and info.value.code == 128 + signal.SIGTERM
    assert capsys.readouterr().err == 'stopped by SIGTERM: 1 finished run of this session is in LOG\n'
    assert errors.deferred == {'active': False, 'signal': signal.SIGTERM}
    errors.deferred['signal'] = None


IGNORES_SIGINT = """
import signal, sys
sys.path.insert(0, {root!r})
signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a background job of a non-interactive shell starts
from common import errors
errors.install_excepthook()
print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN, signal.getsignal(signal.SIGTERM) is errors._on_signal)
"""


def test_an_ignored_sigint_stays_ignored_and_sigterm_is_still_handled():
    proc = subprocess.run([sys.executable, '-c', IGNORES_SIGINT.format(root=str(ROOT))], capture_output=True,
                          text=True, timeout=120)
    assert proc.stdout == 'True True\n', proc.stderr
