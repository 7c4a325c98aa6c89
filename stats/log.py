"""The results log: one JSON Lines file per (script, variant, hardware), one row per finished run.

Layout: {out}/{script stem}/{variant}__{hardware}.jsonl, e.g. results/main0_network/full__nvidia-h100.jsonl.
The K-th slice of a cluster job array writes {variant}__{hardware}.shard-K-of-N.jsonl instead, so jobs never
share a file over a network file system; `python -m reports merge` later appends their rows to the main log.

Writing. A row is one line, written with one os.write to a file opened with O_APPEND while holding an
exclusive flock, so the processes of `--gpus` can share one log. Nothing is ever rewritten or deleted, except
the part of its own line that a failed write (a full disk) left: it is cut off again. A run row whose seed the
log already holds (two invocations that planned the same seed) is not appended: a seed run twice is not an
independent sample; a log that holds one twice anyway (a copied line) counts it once. A main log and its
shard logs are one trial: seeds done in either count as done.

Reading. Readers skip a damaged line (a run killed while writing it) with a warning, and refuse a file that is no
log or a row no run could have written: stats/rows.py says which is which.
"""
import fcntl
import json
import os
import re
import sys
from pathlib import Path

from common.errors import UserError
from stats.rows import parse_rows

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
    """The shard logs beside a main log that `python -m reports merge` would append to it."""
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


def read_locked(path, what):
    """The bytes of a file that append_row writes, read under its shared lock, so a concurrent writer's
    half-written line is never seen; None for a file that does not exist yet."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        with open(path, 'rb') as f:
            fcntl.flock(f, fcntl.LOCK_SH)
            return f.read()
    except OSError as exc:
        raise UserError(f'cannot read {path} as {what} ({exc.strerror or type(exc).__name__}): pass a readable '
                        '.jsonl file (a run: an --out folder it can read)') from None


def read_rows(path):
    """Every row of a log, in order, each seed once, with a warning per damaged line and one for repeated seeds;
    [] for a file that does not exist yet."""
    data = read_locked(path, 'a results log')
    if data is None:
        return []
    rows, damaged = parse_rows(path, data)
    for number, problem in damaged:
        print(f'warning: {path} line {number} {problem}; skipped, left in place', file=sys.stderr)
    return drop_repeated_seeds(path, rows)


def drop_repeated_seeds(path, rows):
    """The rows less those whose seed an earlier row holds (a copied line, a hand merge), with one warning: a
    seed run twice is not an independent sample, and counting it twice would narrow the confidence interval."""
    seen, kept, repeated = set(), [], set()
    for row in rows:
        if row['seed'] in seen:
            repeated.add(row['seed'])
        else:
            seen.add(row['seed'])
            kept.append(row)
    if repeated:
        seeds = sorted(repeated)
        shown = ', '.join(map(str, seeds[:5])) + (f' and {len(seeds) - 5} more' if len(seeds) > 5 else '')
        print(f'warning: {path} holds seed{"s" * (len(seeds) > 1)} {shown} on more than one line (a copied line?); '
              'each seed counts once, as its first row; the other lines are left in place', file=sys.stderr)
    return kept


def append_row(path, row, new_seed=False, check_config=False, force=False):
    """Appends one row as one line; a damaged last line first gets the newline it lacks (see top).
    new_seed: append only if no row of the log has row's seed yet. check_config: refuse, unless force, a log
    whose rows hold only other configs, as check_rows does at start. Both are checked under the lock, so two
    processes that planned the same seed, or that began one new log with two configs, cannot both log.
    Returns whether the row was appended."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(row) + '\n').encode('utf-8')
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        rows = parse_rows(path, os.pread(fd, size, 0))[0] if new_seed or check_config else []
        if check_config:
            hint = f'another process began the log meanwhile, so seed {row["seed"]} is not logged; ' + RESTART_HINT
            check_rows(path, rows, row['script'], config_of(row), force, hint)
        if new_seed and row['seed'] in {logged['seed'] for logged in rows}:
            return False
        if size and os.pread(fd, 1, size - 1) != b'\n':
            data = b'\n' + data
        write_at_end(fd, data, path, size)
        return True
    finally:
        os.close(fd)


def write_at_end(fd, data, path, size):
    """Writes `data` at the end of a log of `size` bytes. A failed write (ENOSPC: a full disk) can leave part
    of the line; the log is cut back to `size`, so it never ends in a cut-off row, and the error is one line."""
    try:
        while data:  # a regular file takes it all in one write; the loop only guards a short write
            data = data[os.write(fd, data):]
    except OSError as exc:
        try:
            os.ftruncate(fd, size)
            kept = 'the log keeps its earlier rows as they were (the part written was removed)'
        except OSError:
            kept = 'the log keeps its earlier rows, but its last line may be cut short (readers skip it)'
        raise UserError(f'cannot append to {path} ({exc.strerror or exc}): this row is not logged; {kept}: free '
                        'some space, then run the command again (a rung with --resume)') from None


def seeds_in(data, path):
    """The seeds of the rows that read_rows would return for a log's bytes; it reports the damaged lines."""
    return {row['seed'] for row in parse_rows(path, data)[0]}


# What the runs a script logged before one of its hyp leaves existed did, as that leaf's value. A leaf is added with
# the default that keeps the old behaviour, but a default can change later (ternary94's dirac: True when added,
# False since), and an old row must not then read as the new default. Every leaf a committed row lacks is declared
# here (tests/test_rungs.py checks it), dtype aside: a log's name says it. The reports read old rows so too.
LEAVES_BEFORE = {
    'ternary94.py': {('net', 'dirac'): True, ('opt', 'filter_lr'): 0.0},
}


def logged_hyp(script, hyp):
    """A row's hyp with the leaves its script's version did not have yet filled in as LEAVES_BEFORE declares them
    (a copy; a leaf declared nowhere stays absent)."""
    hyp = {group: dict(leaves) if isinstance(leaves, dict) else leaves for group, leaves in hyp.items()}
    for (group, name), value in LEAVES_BEFORE.get(script, {}).items():
        hyp.setdefault(group, {}).setdefault(name, value)
    return hyp


def config_of(row):
    """What must match for rows to be pooled: the resolved hyp (a leaf added since the row was logged read as what
    the row did: a run of today's code with that value continues the log) and the config-relevant flags."""
    return {'hyp': logged_hyp(row['script'], row['hyp']), 'args': row['args']}


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
            raise UserError(f'{shard} does not exist: pass the shard logs a --shard K/N job wrote')
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
