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
import json
import sys
from pathlib import Path

from stats.log import append_row

FOLDER = 'diverged'
KEYS = {'seed': int, 'diverged': str, 'hyp': dict, 'args': dict}  # what a reader relies on


def divergence_path(log):
    """results/x/full__cpu-bf16.jsonl -> results/x/diverged/full__cpu-bf16.jsonl"""
    return Path(log).parent / FOLDER / Path(log).name


def record_divergence(log, row):
    """Appends a diverged run's record beside `log` (under its lock, as a log row: see stats/log.py)."""
    append_row(divergence_path(log), row)


def is_record(record):
    return isinstance(record, dict) and all(isinstance(record.get(key), kind) and not isinstance(record[key], bool)
                                            for key, kind in KEYS.items())


def read_divergences(log):
    """The records of the runs that diverged for `log` (a main or a shard log: its own file only), oldest first;
    [] when there are none. A damaged line (a run killed while writing it) is skipped with a warning, as in a log."""
    path = divergence_path(log)
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_bytes().split(b'\n'), 1):
        if not line.strip(b'\0 \t\r'):
            continue
        try:
            record = json.loads(line.decode('utf-8'))
        except (UnicodeDecodeError, json.JSONDecodeError):
            record = None
        if not is_record(record):
            print(f'warning: {path} line {number} is not a divergence record; skipped, left in place', file=sys.stderr)
            continue
        records.append(record)
    return records
