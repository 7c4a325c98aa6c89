"""The results log: one JSON Lines file per (script, variant, hardware), one row per finished run.

Layout: {out}/{script stem}/{variant}__{hardware}.jsonl, e.g. results/main0_network/full__nvidia-h100.jsonl.
The K-th slice of a cluster job array writes {variant}__{hardware}.shard-K-of-N.jsonl instead, so jobs never
share a file over a network file system; `python -m stats merge` later appends their rows to the main log.

Writing. A row is one line, written with one os.write to a file opened with O_APPEND while holding an
exclusive flock, so the processes of `--gpus` can share one log. Nothing is ever rewritten or deleted. A run
row whose seed the log already holds (two invocations that planned the same seed) is not appended: a seed
run twice is not an independent sample. A main log and its shard logs are one trial: seeds done in either
count as done.

Damaged lines. A run killed mid-write can leave its line cut short. Readers skip such a line with a
one-line warning naming the file and line number. The line is left in place, as evidence, rather than
repaired by guessing; the next writer first appends a newline, so the damaged line stays a line of its own
and the rows after it parse. A line that is not a cut-short row (text, CSV, a JSON list) means the file
is not a results log at all, and reading it is refused.
"""
import fcntl
import json
import os
import re
import sys
from pathlib import Path

from airbench.errors import UserError

ROW_TYPES = {'script': str, 'variant': str, 'seed': int, 'hyp': dict, 'args': dict, 'device': str,
             'tta_val_acc': (int, float), 'time_seconds': (int, float)}  # what every reader relies on
REQUIRED_KEYS = tuple(ROW_TYPES)
TYPE_NAMES = {str: 'a string', int: 'an integer', dict: 'an object', (int, float): 'a number'}
SHARD_SUFFIX = re.compile(r'\.shard-(\d+)-of-(\d+)$')
ABSENT = object()  # a leaf present on one side of a config comparison only
RESTART_HINT = 'pass --variant NAME to start a new log or --force to mix'


def log_path(out, script, variant, hardware, shard=None):
    """shard: None, or (K, N) for the K-th of N slices (1-based)."""
    name = f'{variant}__{hardware}' + ('' if shard is None else f'.shard-{shard[0]}-of-{shard[1]}')
    return Path(out) / Path(script).stem / (name + '.jsonl')


def is_shard_log(path):
    return SHARD_SUFFIX.search(Path(path).name.removesuffix('.jsonl')) is not None


def shard_logs_of(main_path):
    """The shard logs beside a main log that `python -m stats merge` would append to it."""
    main_path = Path(main_path)
    pattern = main_path.name.removesuffix('.jsonl') + '.shard-*-of-*.jsonl'
    return sorted(path for path in main_path.parent.glob(pattern) if is_shard_log(path))


def main_log_path(shard_path):
    """results/x/full__h100.shard-2-of-8.jsonl -> results/x/full__h100.jsonl"""
    path = Path(shard_path)
    stem = path.name.removesuffix('.jsonl')
    if not path.name.endswith('.jsonl') or not SHARD_SUFFIX.search(stem):
        raise UserError(f"{path} is not a shard log: expected a name like full__nvidia-h100.shard-2-of-8.jsonl")
    return path.with_name(SHARD_SUFFIX.sub('', stem) + '.jsonl')


def parse_line(path, number, line):
    """The row on one line, or None (with a warning) for a row cut short by a killed writer."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        # Every row is written by json.dumps of a dict with string keys, so it starts '{"'; an unparsable line
        # that starts so is a row cut short; any other means the file was never a results log (a Python dict
        # repr, text, CSV).
        if line.lstrip().startswith('{"') or line.strip() == '{':
            print(f'warning: {path} line {number} is cut short (a run killed while writing?); skipped, '
                  'left in place', file=sys.stderr)
            return None
        raise UserError(f'{path} line {number} is not JSON: this file is not a results log (JSON Lines); '
                        'move it away or pass another --out') from None
    if not isinstance(row, dict) or not all(key in row for key in REQUIRED_KEYS):
        raise UserError(f'{path} line {number} is not a results row (expected keys {", ".join(REQUIRED_KEYS)}): '
                        'this file is not a results log; move it away or pass another --out')
    for key, expected in ROW_TYPES.items():
        if not isinstance(row[key], expected) or isinstance(row[key], bool):
            raise UserError(f'{path} line {number}: {key} is {json.dumps(row[key])}, not {TYPE_NAMES[expected]}: the '
                            'row was edited by hand or written by another program; fix that line or move the file away')
    return row


def read_rows(path):
    """Every row of a log, in order; [] for a file that does not exist yet."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        with open(path, 'rb') as f:
            fcntl.flock(f, fcntl.LOCK_SH)  # a concurrent writer's half-written line is never seen
            data = f.read()
        text = data.decode('utf-8')
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f'cannot read {path} as a results log: {exc}') from None
    rows = [parse_line(path, number, line) for number, line in enumerate(text.split('\n'), 1) if line.strip()]
    return [row for row in rows if row is not None]


def append_row(path, row, new_seed=False):
    """Appends one row as one line; a damaged last line first gets the newline it lacks (see top).
    new_seed: append only if no row of the log has row's seed yet (checked under the lock, so two processes
    that planned the same seed cannot both log it). Returns whether the row was appended."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(row) + '\n').encode('utf-8')
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if new_seed and row['seed'] in seeds_in(os.pread(fd, size, 0)):
            return False
        if size and os.pread(fd, 1, size - 1) != b'\n':
            data = b'\n' + data
        while data:  # a regular file takes it all in one write; the loop only guards a short write
            data = data[os.write(fd, data):]
        return True
    finally:
        os.close(fd)


def seeds_in(data):
    """The seeds of the rows in a log's bytes; damaged lines are left to the readers to report."""
    seeds = set()
    for line in data.decode('utf-8', errors='replace').split('\n'):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and 'seed' in row:
            seeds.add(row['seed'])
    return seeds


def config_of(row):
    """What must match for rows to be pooled: the resolved hyp and the config-relevant flags."""
    return {'hyp': row['hyp'], 'args': row['args']}


def flatten(config):
    """{'hyp': {'opt': {'lr': 10}}, 'args': {'ternary': False}} -> {'opt.lr': 10, 'ternary': False}"""
    leaves = {}

    def walk(node, prefix):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, prefix + key + '.')
            else:
                leaves[prefix + key] = value
    walk(config['hyp'], '')
    walk(config['args'], '')
    return leaves


def first_difference(logged, current):
    """'opt.lr 10.0 vs 11.5' for the first leaf that differs (logged value first), or None."""
    old, new = flatten(logged), flatten(current)
    for key in list(old) + [key for key in new if key not in old]:
        if old.get(key, ABSENT) != new.get(key, ABSENT):
            show = [json.dumps(side[key]) if key in side else '(absent)' for side in (old, new)]
            return f'{key} {show[0]} vs {show[1]}'
    return None


def check_rows(path, rows, script, config, force=False, hint=RESTART_HINT):
    """Refuses to add runs of `script` with `config` to a log that holds another script or (unless force)
    only other configs: a log mixed once with --force takes any config it already holds. Also used by
    merge, with the first row as the config."""
    for row in rows:
        if row['script'] != script:
            raise UserError(f"{path} holds runs of {row['script']}, not {script}: pass another --out or --variant")
    if any(same_config(row, config) for row in rows):
        return
    for row in rows:
        difference = first_difference(config_of(row), config)
        if difference and not force:
            raise UserError(f'{path} holds a different config (first difference: {difference}); '
                            + hint)


def same_config(row, config):
    return first_difference(config_of(row), config) is None


def merge_shards(shard_paths, force=False):
    """Appends the rows of shard logs to their main logs, skipping seeds already there.
    Returns one line per main log saying what was added. The shard logs are left as they are."""
    groups = {}
    for path in shard_paths:
        groups.setdefault(main_log_path(path), []).append(Path(path))
    return [merge_group(main, shards, force) for main, shards in groups.items()]


def merge_group(main, shards, force):
    for shard in shards:
        if not shard.exists():
            raise UserError(f'{shard} does not exist')
    rows = read_rows(main)
    shard_rows = {shard: read_rows(shard) for shard in shards}
    new = [row for part in shard_rows.values() for row in part]
    if not new:
        return f'{main}: nothing to merge (the shard logs are empty)'
    # The first shard row is the reference; each file is checked against it, so the message names the file.
    hint = 'these logs are not one trial; pass --force to merge them anyway'
    for path, part in [(main, rows), *shard_rows.items()]:
        check_rows(path, part, new[0]['script'], config_of(new[0]), force, hint)
    kept = {row['seed']: row for row in rows}
    added, clashes = 0, []
    for row in new:
        if row['seed'] not in kept and append_row(main, row, new_seed=True):
            kept[row['seed']] = row
            added += 1
        elif row != kept.get(row['seed'], row):
            clashes.append(row['seed'])
    clash_note = (f'; seeds {", ".join(map(str, clashes))} were run twice with different results: the row already '
                  'in the main log was kept, the other stays in its shard log') if clashes else ''
    return (f'{main}: added {added} rows from {len(shards)} shard logs ({len(new) - added} already there'
            f'{clash_note})')
