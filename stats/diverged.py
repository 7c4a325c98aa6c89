"""The divergence record: the runs that diverged, which no results log holds.

A run whose training loss, or whose model's outputs at its final evaluation, become NaN or infinite is no result:
it stops with one line and its log never holds it, so no statistic counts it (common/errors.py `diverged`). Yet
"this config diverges" is a result of a search, and a lost one would be tried again. So the trial records each
such run, one JSON line, beside its log:

    {out}/{script stem}/diverged/{variant}__{hardware}.jsonl    (a shard's: its log's name, as the log)

A record holds the run, its seed, `diverged` (how it showed: "its training loss is nan at epoch 3"), and the
row's provenance and config fields, so a record and a log row of one config compare equal (stats/log.py
`same_config`). One variant holds one config here too: a trial refuses to add runs of another config to a log whose
records hold only others (stats/log.py `check_rows`), so a retry with a lower lr takes a --variant of its own. The
reports and statistics never read these files as logs (they are one folder down, and their lines lack the accuracy
fields); `python -m reports search` lists them beside their config's line. A trial runs a diverged seed again when
its plan holds it, as it runs any seed its log lacks, and says so first.
"""
import sys
from pathlib import Path

from stats.log import append_row, read_locked
from stats.rows import decode_line

FOLDER = 'diverged'
KEYS = {'seed': int, 'diverged': str, 'hyp': dict, 'args': dict}  # what a reader relies on


def divergence_path(log):
    """results/x/full__cpu-bf16.jsonl -> results/x/diverged/full__cpu-bf16.jsonl"""
    return Path(log).parent / FOLDER / Path(log).name


def record_divergence(log, row):
    """Appends a diverged run's record beside `log` (under its lock, as a log row: see stats/log.py)."""
    append_row(divergence_path(log), row)


def read_divergences(log):
    """The records of the runs that diverged for `log` (a main or a shard log: its own file only), oldest first;
    [] when there are none. A damaged line (a run killed while writing it) is skipped with a warning, as in a log."""
    path = divergence_path(log)
    data = read_locked(path, 'a divergence record')
    records = []
    for number, line in enumerate(b'' if data is None else data.split(b'\n'), 1):
        if not line.strip():
            continue
        record, problem = decode_line(line, tuple(KEYS), 'a divergence record')
        if record is not None and not all(isinstance(record[key], kind) and not isinstance(record[key], bool)
                                          for key, kind in KEYS.items()):
            record, problem = None, 'holds a field of the wrong type'
        if record is None:
            print(f'warning: {path} line {number} {problem}; skipped, left in place', file=sys.stderr)
            continue
        records.append(record)
    return records
