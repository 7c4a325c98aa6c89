"""Bad inputs to `python -m reports`: each is one line (`error: ...`, exit 1) or one warning, and no log or README
loses a byte."""
import errno
import json
import sys
import warnings
from pathlib import Path

import pytest

from reports.__main__ import main as reports_main
from reports.figure import MISSING
from reports.table import BEGIN, EMPTY, END

README = f'# Project\n\n{BEGIN}\n{EMPTY}\n{END}\n'


def write_log(results, accuracies, seconds=2.0, script='main0_network.py', hardware='test-gpu', **fields):
    """A log of one run per accuracy (seeds 0, 1, ...); `fields` override the rows' values."""
    path = results / script.removesuffix('.py') / f'full__{hardware}.jsonl'
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{'script': script, 'variant': 'full', 'run': seed, 'seed': seed, 'epochs': 9.9, 'val_acc': acc,
             'tta_val_acc': acc, 'time_seconds': seconds, 'peak_memory_bytes': 1, 'device': 'NVIDIA Test GPU',
             'hyp': {'opt': {'epochs': 9.9}}, 'args': {'ternary': False}, **fields}
            for seed, acc in enumerate(accuracies)]
    path.write_text(''.join(json.dumps(row) + '\n' for row in rows))
    return path


@pytest.fixture
def readme(tmp_path):
    path = tmp_path / 'README.md'
    path.write_text(README)
    return path


def run(argv, capsys):
    """(exit status, stdout, stderr) of python -m reports ARGV."""
    status = reports_main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return status, out, err


def one_error_line(err):
    assert err.startswith('error: ') and err.count('\n') == 1, err
    return err


def test_a_copied_line_counts_its_seed_once_with_one_warning(tmp_path, capsys):
    path = write_log(tmp_path, [0.95, 0.96])
    path.write_text(path.read_text() * 2)  # both rows copied: seeds 0, 1, 0, 1
    content = path.read_bytes()
    status, out, err = run(['summary', path], capsys)
    assert status == 0 and 'n=2, mean 95.50%' in out
    assert err.count('\n') == 1 and err.startswith(f'warning: {path} holds seeds 0, 1 on more than one line')
    assert path.read_bytes() == content


def test_a_readme_that_cannot_be_written_is_left_as_it_was(tmp_path, readme, capsys, monkeypatch):
    results = tmp_path / 'results'
    write_log(results, [0.95, 0.96])

    def disk_full(self, data):
        raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(Path, 'write_bytes', disk_full)
    status, _, err = run(['table', '--results', results, '--readme', readme], capsys)
    assert status == 1 and one_error_line(err).startswith(f'error: cannot write the README {readme} (No space left '
                                                          'on device): it was not written and the earlier file')
    assert readme.read_text() == README and sorted(tmp_path.iterdir()) == [readme, results]  # no partial file
    monkeypatch.undo()
    assert run(['table', '--results', results, '--readme', readme], capsys)[0] == 0 and '95.50%' in readme.read_text()


def test_a_read_only_readme_is_refused_and_kept(tmp_path, readme, capsys):
    results = tmp_path / 'results'
    write_log(results, [0.95, 0.96])
    readme.chmod(0o444)
    status, _, err = run(['table', '--results', results, '--readme', readme], capsys)
    assert status == 1 and f'error: {readme} is read-only: make it writable' in one_error_line(err)
    assert 'README.md was left as it was' in err and readme.read_text() == README
    assert run(['table', '--check', '--results', results, '--readme', readme], capsys)[0] == 1  # reading is fine


def test_a_symlinked_readme_stays_a_link_and_its_target_is_rewritten(tmp_path, readme, capsys):
    results, link = tmp_path / 'results', tmp_path / 'docs' / 'README.md'
    write_log(results, [0.95, 0.96])
    link.parent.mkdir()
    link.symlink_to(readme)
    assert run(['table', '--results', results, '--readme', link], capsys)[0] == 0
    assert link.is_symlink() and link.resolve() == readme and 'main0_network' in readme.read_text()
    assert sorted(p.name for p in link.parent.iterdir()) == ['README.md']  # no partial file left beside the link


def test_a_readme_that_is_not_utf8_is_refused_and_kept(tmp_path, readme, capsys):
    readme.write_bytes(b'# Caf\xe9\n' + README.encode())  # saved as Latin-1
    status, _, err = run(['table', '--results', tmp_path, '--readme', readme], capsys)
    assert status == 1 and one_error_line(err).startswith(f'error: {readme} line 1 is not UTF-8 text (byte 0xe9)')
    assert readme.read_bytes() == b'# Caf\xe9\n' + README.encode()


def test_a_rung_file_that_is_not_utf8_is_one_line(tmp_path, capsys):
    (tmp_path / 'main0_network.py').write_bytes(b'"""main0_network.py: the base rung."""\n# caf\xe9\n')
    status, out, err = run(['ladder', '--root', tmp_path], capsys)
    assert status == 1 and out == ''
    assert one_error_line(err).startswith(f'error: {tmp_path / "main0_network.py"} line 2 is not UTF-8 text')


@pytest.mark.parametrize('root', ['missing', 'empty'])
def test_a_root_without_the_ladder_is_one_line(tmp_path, capsys, root):
    (tmp_path / 'empty').mkdir()
    status, out, err = run(['ladder', '--root', tmp_path / root], capsys)
    expected = 'is not a folder' if root == 'missing' else 'holds none of the rung scripts'
    assert status == 1 and out == '' and expected in one_error_line(err)


@pytest.mark.parametrize('field, value, shown', [
    ('epochs', None, 'epochs is missing, not a number of epochs > 0'),
    ('time_seconds', float('nan'), 'time_seconds is NaN, not a time in seconds >= 0'),
    ('time_seconds', -1.0, 'time_seconds is -1.0, not a time in seconds >= 0'),
    ('time_seconds', float('inf'), 'time_seconds is Infinity, not a time in seconds >= 0'),
])
def test_a_field_a_report_reads_is_checked_by_line(tmp_path, readme, capsys, field, value, shown):
    results = tmp_path / 'results'
    path = write_log(results, [0.95, 0.96, 0.97])
    lines = path.read_text().splitlines()
    row = json.loads(lines[1])
    row.pop(field) if value is None else row.update({field: value})
    path.write_text('\n'.join([lines[0], json.dumps(row), lines[2]]) + '\n')
    content = path.read_bytes()
    for argv in (['table', '--results', results, '--readme', readme], ['summary', path]):
        status, _, err = run(argv, capsys)
        assert status == 1 and one_error_line(err).startswith(f'error: {path} line 2: {shown}: ')
    assert path.read_bytes() == content and readme.read_text() == README


def test_the_figure_fails_without_matplotlib_or_without_logs(tmp_path, capsys, monkeypatch):
    out = tmp_path / 'ladder.png'
    empty = tmp_path / 'empty'
    empty.mkdir()
    status, _, err = run(['figure', '--results', empty, '--out', out], capsys)
    assert status == 1 and one_error_line(err).startswith(f'error: nothing to plot: no GPU logs under {empty}')
    write_log(tmp_path / 'results', [0.95, 0.96])
    monkeypatch.setitem(sys.modules, 'matplotlib', None)  # import matplotlib raises ImportError
    status, _, err = run(['figure', '--results', tmp_path / 'results', '--out', out], capsys)
    assert status == 1 and one_error_line(err) == f'error: {MISSING}\n' and not out.exists()


def test_a_figure_file_matplotlib_cannot_write_is_refused_in_one_line(tmp_path, capsys):
    pytest.importorskip('matplotlib')
    results = tmp_path / 'results'
    write_log(results, [0.95, 0.96])
    status, _, err = run(['figure', '--results', results, '--out', tmp_path / 'ladder.txt'], capsys)
    assert status == 1 and one_error_line(err).startswith(f'error: --out {tmp_path / "ladder.txt"}: expected an '
                                                          'image file name ending in .png, .svg or .pdf (or .')
    (tmp_path / 'file').write_text('a file where a folder should be')
    out = tmp_path / 'file' / 'ladder.png'
    status, _, err = run(['figure', '--results', results, '--out', out], capsys)
    assert status == 1 and one_error_line(err).startswith(f'error: cannot write the figure {out} (')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['file', 'results']


def test_a_folder_given_as_a_log_is_named_a_folder(tmp_path, capsys):
    status, _, err = run(['summary', tmp_path], capsys)
    assert status == 1 and one_error_line(err).startswith(f'error: {tmp_path} is a folder, not a results log')


def test_zero_times_leave_the_time_ratio_undefined(tmp_path, capsys):
    a = write_log(tmp_path / 'a', [0.95, 0.96], seconds=0.0)
    b = write_log(tmp_path / 'b', [0.94, 0.96])
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # numpy's divide-by-zero warning fails the test
        status, out, _ = run(['compare', a, b], capsys)
    assert status == 0 and 'time B / A: undefined (the median time of A is 0 s)' in out and 'inf' not in out


def test_identical_accuracies_make_the_t_test_degenerate(tmp_path, readme, capsys):
    results = tmp_path / 'results'
    path = write_log(results, [0.95, 0.95, 0.95])
    status, out, _ = run(['summary', path], capsys)
    assert status == 0 and 'verdict: not tested: the t-test is degenerate (all 3 runs equal, 95.00%; std 0)' in out
    assert 'shown' not in out and 'p<' not in out
    status, out, _ = run(['compare', path, path], capsys)
    assert 'Welch test degenerate: all runs of A equal, and all of B' in out
    assert run(['table', '--results', results, '--readme', readme], capsys)[0] == 0
    assert '| untested: all 3 runs equal |' in readme.read_text()
