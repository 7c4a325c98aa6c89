"""The search log of ternary94.py (issue 23), generated from its logs: `python -m reports search` rewrites the
table in results/ternary94/README.md, one line per log (a --variant on one device and dtype), cheapest first.

A config is what its rows' hyp and run flags hold beyond the script's defaults, written as the flags that give it
(dtype aside: the log's name says it), so a line can be rerun as it reads. Its cost is the TFLOPs per run that
`python -m reports flops` would count for those hyp leaves (reports/flops.py); the ternary layers' rounding is
elementwise, and FlopCounterMode counts only matrix products and convolutions. A --teacher's forward passes (and its
own training) are not in the count: such lines say "+ teacher" and come after the others. The counts are kept in the
folder's flops.json, keyed by the script's sha256 and the flags. Packed: the bytes `ternary.export_packed` stores
for the config's net (2 bits a ternary weight, one fp32 scale per layer or per channel), beside the net in fp32.
Counts and sizes are of today's script: a line whose rows another version of it logged says so. The statistics are
those of `reports summary`, over the full-length rows (no --subset). Diverged: the seeds whose runs diverged (NaN
or infinite loss or outputs), from the records beside the log (stats/diverged.py); no statistic counts them, and a
config whose every run diverged has a line of its own, n = 0. A test passed at n < 10 says so (format_verdict
in reports/table.py). Everything between the markers is rewritten; the rest of the file is kept.
"""
import argparse
import contextlib
import io
import math
from pathlib import Path

from common.errors import UserError
from common.files import atomic_output, read_utf8
from common.flags import flag_leaves, parse_flags
from common.provenance import file_sha256
from reports.flops import count_script, read_counts, write_counts
from reports.sidebyside import import_script
from reports.logs import ROOT, parse_log_name
from reports.table import format_verdict, replace_block, write_readme
from stats.diverged import FOLDER as DIVERGED, read_divergences
from stats.log import is_shard_log, logged_hyp, read_rows
from stats.summary import describe

SCRIPT = 'ternary94.py'
BEGIN, END = '<!-- reports:search:begin -->', '<!-- reports:search:end -->'
HIDDEN_RUN_FLAGS = ('subset',)  # logged, but no part of a config: a smoke run's --subset is filtered out instead
TEACHER_ONLY = ('teacher', 'kd_alpha', 'kd_temperature')  # no FLOPs of their own in the count
HEADER = ['variant', 'config (flags beyond the defaults)', 'TFLOPs per run', 'packed KB (fp32 KB)', 'device-dtype',
          'n', 'diverged', 'TTA accuracy: mean', 'std', '>= 94% shown?', 'dates']
INTRO = f"""# The ternary94.py search

Goal (issue 23): the ternary-weight net with the fewest training FLOPs per run whose mean TTA accuracy is >= 94%,
shown by the one-sided t-test at n >= 10, as `ternary94.py`'s defaults. Each config is scouted at n = 2 on the CPU
(bf16) under a `--variant` of its own, so every tried config, the failed ones too, stays in this folder; the best
is then confirmed at n >= 10.

The table is generated from the logs here (`python -m reports search`, `reports/search.py` says what each column
counts); nothing in it is typed by hand.

{BEGIN}
{END}
"""


def script_defaults(rung):
    """(hyp, run flags) of a script's own defaults, as parse_flags resolves them on the CPU in fp32."""
    with contextlib.redirect_stdout(io.StringIO()):  # parse_flags prints the config
        hyp, args = parse_flags(rung.hyp, rung.FLAGS, ['--device', 'cpu', '--dtype', 'fp32'],
                                defaults=getattr(rung, 'RUN_DEFAULTS', None))
    return hyp, vars(args)


def format_flag(name, value):
    return f'--{name.replace("_", "-")}={str(value).lower() if isinstance(value, bool) else value}'


def config_flags(row, default_hyp, default_args):
    """The flags that turn the script's defaults into this row's config: hyp leaves first (dtype aside: the
    log's name says it), then run flags. A leaf the row's script version lacked reads as stats.log.LEAVES_BEFORE
    declares it (else as today's default)."""
    defaults = dict(flag_leaves(default_hyp))
    flags = [(path[-1], value) for path, value in flag_leaves(logged_hyp(SCRIPT, row['hyp']))
             if path[-1] != 'dtype' and value != defaults.get(path, value)]
    flags += [(name, value) for name, value in sorted(row['args'].items())
              if name not in HIDDEN_RUN_FLAGS and name in default_args and value != default_args[name]]
    return flags


def script_version(script_sha256):  # how a FLOP count's key names the script's version
    return f'{SCRIPT}@{script_sha256[:12]}'


def count_config(root, script_sha256, flags, counts, count_missing=True):
    """TFLOPs per run of the config's hyp leaves (reports/flops.py), from `counts` (the folder's flops.json: a
    count takes a minute on a small CPU, and is the same on every machine) or counted into it; nan for a missing
    count when count_missing is False (a --check, which only needs to know the table is stale)."""
    hyp_flags = [format_flag(name, value) for name, value in flags
                 if name not in TEACHER_ONLY and not name.startswith('ternary')]
    key = ' '.join([script_version(script_sha256), *hyp_flags])
    if key not in counts and not count_missing:
        return math.nan
    if key not in counts:
        print(f'counting {key} (one training step, one eval pass, fp32 on the CPU)', flush=True)
        counts[key] = count_script(Path(root) / SCRIPT, hyp_flags)
    return counts[key]['total_tflops']


def packed_sizes(rung, row, default_hyp, default_args):
    """(packed bytes, fp32 bytes) of the config's net: its hyp's widths, its --ternary flags; a net leaf its
    script's version did not have yet reads as in config_flags."""
    net = {**default_hyp['net'], **logged_hyp(SCRIPT, row['hyp'])['net'], 'dtype': 'fp32'}
    args = argparse.Namespace(**{name: row['args'].get(name, default_args[name])
                                 for name in default_args if name.startswith('ternary')})
    with contextlib.redirect_stdout(io.StringIO()):  # the conversion prints its layers
        full = rung.make_net(net, 'cpu')
        fp32_bytes = rung.ternary.model_size_bytes(full)
        packed = rung.ternary.model_size_bytes(rung.ternary.convert_from_flags(full, args), packed=True)
    return packed, fp32_bytes


def format_diverged(records):
    seeds = sorted({record['seed'] for record in records})
    return f'{len(seeds)} (seed{"s" * (len(seeds) > 1)} {", ".join(map(str, seeds))})' if seeds else '0'


def leaf_changes(rows, default_hyp):
    """', before --a, --b' for the hyp leaves today's script has and a row lacks (added since: the config column
    reads them as stats.log.LEAVES_BEFORE declares), ', with --c' for those a row has and today's lacks (removed
    since: the config column cannot show them)."""
    def names(paths):
        return ', '.join('--' + leaf_path[-1].replace('_', '-') for leaf_path in paths)
    today = [leaf_path for leaf_path, _ in flag_leaves(default_hyp)]
    logged = [{leaf_path for leaf_path, _ in flag_leaves(row['hyp'])} for row in rows]
    added = [leaf_path for leaf_path in today if any(leaf_path not in leaves for leaves in logged)]
    removed = sorted(set().union(*logged) - set(today))
    return (f', before {names(added)}' if added else '') + (f', with {names(removed)}' if removed else '')


def search_line(rung, root, path, rows, records, defaults, counts, count_missing):
    """The cells of one log's line (its rows, and the records of its diverged runs), and its sort key: lines with
    a teacher last, then by TFLOPs."""
    _, variant, hardware = parse_log_name(path)
    first, *others = rows + records
    flags = config_flags(first, *defaults)
    mixed = any(config_flags(row, *defaults) != flags for row in others)
    notes = ['the log mixes configs (--force)'] * mixed
    today = file_sha256(Path(root) / SCRIPT)
    if any(row.get('script_sha256') != today for row in rows + records):
        notes.append(f'logged by another version of {SCRIPT}{leaf_changes(rows + records, defaults[0])}: TFLOPs '
                     'and size are of today\'s')
    tflops = count_config(root, today, flags, counts, count_missing)
    teacher = any(name == 'teacher' for name, _ in flags)
    packed, fp32_bytes = packed_sizes(rung, first, *defaults)
    s = describe(rows) if rows else None
    dates = sorted(row.get('date', '?')[:10] for row in rows + records)
    config = ' '.join(f'`{format_flag(name, value)}`' for name, value in flags) or '(the defaults)'
    cells = [variant, config + ''.join(f' ({note})' for note in notes), f'{tflops:.1f}' + ' + teacher' * teacher,
             f'{packed / 1000:.1f} ({fp32_bytes / 1000:.1f})', hardware, str(len(rows)), format_diverged(records),
             f'{100 * s.mean:.2f}%' if s else '-', 'n/a' if len(rows) < 2 else f'{100 * s.std:.2f}',
             format_verdict(s) if s else 'n < 2',
             dates[0] if dates[0] == dates[-1] else f'{dates[0]} to {dates[-1]}']
    return (teacher, tflops, variant), cells


def full_length(rows):
    return [row for row in rows if not row.get('args', {}).get('subset')]


def search_block(results, root=ROOT, counts=None, count_missing=True):
    """Markdown: one line per log of the script (its full-length rows and the records of its diverged runs),
    cheapest first. counts: TFLOPs by config, added to."""
    folder = Path(results) / Path(SCRIPT).stem
    rung = import_script(Path(root) / SCRIPT, 'search_' + Path(SCRIPT).stem)
    defaults = script_defaults(rung)
    counts = {} if counts is None else counts
    # A log, or only the records of its diverged runs (a config whose every run diverged): by the log's name.
    names = {path.name for path in [*folder.glob('*.jsonl'), *(folder / DIVERGED).glob('*.jsonl')]
             if not is_shard_log(path)}
    lines = []
    for name in sorted(names):
        rows, records = full_length(read_rows(folder / name)), full_length(read_divergences(folder / name))
        if rows or records:
            lines.append(search_line(rung, root, folder / name, rows, records, defaults, counts, count_missing))
    if not lines:
        return (f'Nothing measured yet: run `python {SCRIPT} --variant NAME ...` at full length, then '
                '`python -m reports search`.')
    lines.sort(key=lambda line: line[0])
    return '\n'.join(['| ' + ' | '.join(HEADER) + ' |', '|' + '---|' * len(HEADER),
                      *('| ' + ' | '.join(cells) + ' |' for _, cells in lines)])


def update_search_log(results, root=ROOT, check=False):
    """Rewrites (or, check=True, only compares) the table of results/<script>/README.md, creating the file with
    its introduction when absent. Returns (path, stale)."""
    if not Path(results).is_dir():
        raise UserError(f'--results {results} is not a folder: pass the folder of the logs (default results)')
    readme = Path(results) / Path(SCRIPT).stem / 'README.md'
    if readme.is_dir():
        raise UserError(f'{readme} is a folder: move it away, the search log is written there')
    text = read_utf8(readme, 'save it as UTF-8') if readme.is_file() else INTRO
    counts = read_counts(readme.parent)
    known = set(counts)
    new = replace_block(text, search_block(results, root, counts, not check), readme, BEGIN, END)
    today = script_version(file_sha256(Path(root) / SCRIPT))
    counts = {key: count for key, count in counts.items() if key.split(' ')[0] == today}  # older ones never reused
    if set(counts) != known and not check:
        write_counts(readme.parent, counts, merge=False)
    stale = new != text or not readme.is_file()
    if stale and not check and readme.is_file():
        write_readme(readme, new)
    elif stale and not check:
        readme.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(readme, 'the search log') as partial:
            Path(partial).write_text(new, encoding='utf-8')
    return readme, stale
