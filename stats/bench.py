"""Benchmark results (speed, not accuracy) as evidence: one row per benchmark run, appended to
results/bench/<benchmark>__<hardware>.jsonl with the same provenance as a training run's row."""
import json
import sys
from pathlib import Path

from common import provenance
from common.errors import UserError
from stats.flags import check_out, check_writable_folder
from stats.log import append_row

BENCH = 'bench'  # the folder under results/; the README's run tables leave it out (reports/benchtable.py)


def record_bench(benchmark, device, measurements, settings, out='results'):
    """Appends {benchmark, settings, measurements, provenance} and returns the log's path."""
    fields = provenance.provenance(None, device, out)  # no script_sha256: the commit names the benchmark's code
    path = Path(out) / BENCH / f'{benchmark}__{provenance.slugify(fields["device"])}.jsonl'
    append_row(path, {'benchmark': benchmark, 'settings': settings, 'measurements': measurements, **fields})
    return path


def check_bench_out(out):
    """A benchmark's --out, checked before it measures: minutes of measurement must not be lost, after the fact,
    to a folder that cannot take the row."""
    check_out(out)
    check_writable_folder(Path(out) / BENCH, '--out')


BENCH_KEYS = ('benchmark', 'settings', 'measurements', 'date', 'device')


def read_bench_rows(path):
    """The benchmark rows of `path`, in order; a line that is not one (cut short by a killed writer, edited) is
    skipped with a warning and left in place, as the results logs' damaged lines are."""
    try:
        lines = Path(path).read_bytes().split(b'\n')
    except OSError as exc:
        raise UserError(f'cannot read {path} as a benchmark log: {exc}') from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:  # not UTF-8 or not JSON
            row = None
        if isinstance(row, dict) and all(key in row for key in BENCH_KEYS):
            rows.append(row)
        else:
            print(f'warning: {path} line {number} is not a benchmark row (expected keys {", ".join(BENCH_KEYS)}); '
                  'skipped, left in place', file=sys.stderr)
    return rows
