"""The README's results table, generated from the logs in results/ (STYLE.md item 10: no hand-typed numbers).

One table per hardware, since timings are compared only within one device. One row per (script, variant):
the 'full' log gives the row and the 'ternary' log of the same script its ternary columns; any other variant
(ternary-kd, a custom --variant) gets a row of its own, where a ternary one (its runs used --ternary, whatever
the name) shows its gap to 'full': the same script's, or for a standalone script without one (ternary94.py),
its parent's.
Rows follow the ladder, then the standalone scripts, then any other script. CPU logs are smoke tests, not
evidence, and are left out unless asked for.
The block between the markers is rewritten whole; everything else in the README is kept byte for byte. The new
README replaces the old in one step, so a failed write leaves the old one as it was.
"""
import os
from pathlib import Path

from common.errors import UserError
from common.files import atomic_write, read_utf8
from reports.ladder import SCRIPTS, STANDALONE, find_rung
from reports.sidebyside import summarize_pairs
from stats.bench import BENCH
from stats.log import is_shard_log, read_rows
from stats.summary import describe, format_p

BEGIN, END = '<!-- reports:table:begin -->', '<!-- reports:table:end -->'
EMPTY = 'Nothing measured yet: run a rung on a GPU, then `python -m reports table`.'
HEADER = ['script', 'feature', 'epochs', 'median time (s)', 'TTA accuracy: mean (95% CI)', 'n',
          'ternary: mean (n)', 'gap (points)', '>= 94% shown?']
CAPTION = ('n: runs (seeds). Accuracy: test accuracy with TTA. Time: median seconds of whitening init, training '
           'and TTA eval (CUDA events). gap: ternary minus full precision of the same script (ternary94.py: of '
           'main8_compile.py). >= 94% shown: one-sided t-test of '
           'mean > 94%, yes when p < 0.05 (`stats/summary.py`).')


SIDEBYSIDE = 'sidebyside'  # results/sidebyside/: pairs of ours and the reference, a table of their own
SIDEBYSIDE_HEADING = ('**Side by side with the published airbench** (`python -m reports sidebyside`: one process, '
                      'runs alternating ours, reference; each side timed by its own CUDA events)')
SIDEBYSIDE_HEADER = ['ours', 'reference', 'GPU', 'pairs', 'time ratio ours/reference: median (range)',
                     'median time (s): ours / reference', 'TTA accuracy: ours / reference']


def parse_log_name(path):
    """results/main0_network/full__nvidia-h100.jsonl -> ('main0_network.py', 'full', 'nvidia-h100')"""
    variant, _, hardware = Path(path).name.removesuffix('.jsonl').partition('__')
    return Path(path).parent.name + '.py', variant, hardware


def collect(results, include_cpu=False):
    """{hardware: {(script, variant): rows}} from the main logs under `results` (shard logs are not merged
    evidence yet: `python -m reports merge` first)."""
    if not Path(results).is_dir():
        raise UserError(f'{results} is not a folder of results logs: pass --results DIR')
    found = {}
    for path in sorted(Path(results).glob('*/*.jsonl')):
        script, variant, hardware = parse_log_name(path)
        if (path.parent.name in (SIDEBYSIDE, BENCH) or is_shard_log(path) or not hardware
                or (hardware.startswith('cpu') and not include_cpu)):
            continue
        rows = read_rows(path)
        if rows:
            found.setdefault(hardware, {})[(script, variant)] = rows
    return found


def sidebyside_table(results, include_cpu=False):
    """Markdown for the side-by-side logs (reports/sidebyside.py): one row per (ours, reference, hardware)."""
    lines = []
    for path in sorted(Path(results).glob(f'{SIDEBYSIDE}/*.jsonl')):
        rows = read_rows(path)
        if not rows or (rows[0]['device'] == 'cpu' and not include_cpu):
            continue
        s = summarize_pairs(rows)
        lines.append(f"| `{rows[0]['script']}` | `{rows[0]['reference']['script']}` | {rows[0]['device']} | "
                     f"{s['pairs']} | **{s['ratio_median']:.3f}** ({s['ratio_min']:.3f} to {s['ratio_max']:.3f}) | "
                     f"{s['ours_time_median']:.3f} / {s['reference_time_median']:.3f} | "
                     f"{100 * s['ours_mean']:.2f}% / {100 * s['reference_mean']:.2f}% |")
    if not lines:
        return None
    return '\n'.join([SIDEBYSIDE_HEADING, '', '| ' + ' | '.join(SIDEBYSIDE_HEADER) + ' |',
                      '|' + '---|' * len(SIDEBYSIDE_HEADER), *lines])


def script_order(script):
    return (SCRIPTS.index(script), '') if script in SCRIPTS else (len(SCRIPTS), script)


def format_accuracy(s):
    if s.n < 2:
        return f'{100 * s.mean:.2f}%'
    return f'{100 * s.mean:.2f}% ({100 * s.ci_low:.2f} to {100 * s.ci_high:.2f})'


def format_verdict(s):
    if s.n < 2:
        return 'n < 2'
    if s.std == 0:  # the t-test is degenerate (stats.summary.verdict)
        return f'untested: all {s.n} runs equal'
    return ('yes' if s.p < 0.05 else 'no') + f', {format_p(s.p)}'


def format_epochs(rows):
    return '/'.join(f'{epochs:g}' for epochs in sorted({row['epochs'] for row in rows}))


def table_row(script, variant, rows, ternary_rows=None, full_rows=None):
    """Cells of one row. ternary_rows: the 'ternary' log, shown beside a 'full' row. full_rows: the 'full' log,
    for the gap of another ternary variant (ternary-kd)."""
    s = describe(rows)
    rung = find_rung(script)
    label = f'`{script}`' + ('' if variant == 'full' else f' ({variant})')
    ternary, gap = '', ''
    if ternary_rows:
        t = describe(ternary_rows)
        ternary, gap = f'{100 * t.mean:.2f}% ({t.n})', f'{100 * (t.mean - s.mean):+.2f}'
    elif full_rows:
        gap = f'{100 * (s.mean - describe(full_rows).mean):+.2f}'
    return [label, rung.feature if rung else '', format_epochs(rows), f'{s.time_median:.2f}', format_accuracy(s),
            str(s.n), ternary, gap, format_verdict(s)]


def is_ternary(rows):
    return bool(rows[0]['args'].get('ternary', rows[0]['variant'].startswith('ternary')))


def full_baseline(script, logs):
    """The full-precision log a ternary row of `script` is compared with; None if there is none."""
    rung = find_rung(script)
    own = logs.get((script, 'full'))
    if own is None and rung in STANDALONE and rung.parent:
        return logs.get((rung.parent, 'full'))
    return own


def hardware_table(hardware, logs):
    """Markdown for one device: a heading with the GPU's name, then the rows."""
    # Ladder order; within a script the 'full' row first, then the other variants by name.
    keys = sorted(logs, key=lambda key: (script_order(key[0]), key[1] != 'full', key[1]))
    lines = [f'**{next(iter(logs.values()))[0]["device"]}** (`{hardware}`)', '',
             '| ' + ' | '.join(HEADER) + ' |', '|' + '---|' * len(HEADER)]
    for script, variant in keys:
        rows, full_rows, ternary_rows = (logs.get((script, name)) for name in (variant, 'full', 'ternary'))
        beside_full = ternary_rows if full_rows and ternary_rows and is_ternary(ternary_rows) else None
        if variant == 'ternary' and beside_full:
            continue  # shown in the full row's ternary columns
        cells = (table_row(script, variant, rows, ternary_rows=beside_full) if variant == 'full' else
                 table_row(script, variant, rows, full_rows=full_baseline(script, logs) if is_ternary(rows) else None))
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def make_block(results, include_cpu=False):
    """The markdown between the markers."""
    found = collect(results, include_cpu)
    side = sidebyside_table(results, include_cpu)
    if not found and not side:
        return EMPTY
    tables = [hardware_table(hardware, found[hardware]) for hardware in sorted(found)] + ([CAPTION] if found else [])
    return '\n\n'.join(tables + ([side] if side else []))


def replace_block(text, block, readme):
    begin, end = text.find(BEGIN), text.find(END)
    if begin < 0 or end < begin:
        raise UserError(f'{readme} has no "{BEGIN}" ... "{END}" pair: add both lines where the table goes')
    return text[:begin + len(BEGIN)] + '\n' + block + '\n' + text[end:]


def update_readme(results, readme, check=False, include_cpu=False):
    """Rewrites the README's table (check=False) or only compares it. Returns True when it was stale."""
    readme = Path(readme)
    if not readme.is_file():
        raise UserError(f'{readme} does not exist' + (' (it is a folder)' if readme.is_dir() else '')
                        + ': pass --readme PATH')
    text = read_utf8(readme, 'save it as UTF-8, or pass --readme PATH')
    new = replace_block(text, make_block(results, include_cpu), readme)
    if new != text and not check:
        write_readme(readme, new)
    return new != text


def write_readme(readme, text):
    """Replaces the README in one step (common/files.py), so a full disk or a stop leaves the old one whole."""
    # The rename needs only the folder's permission, and root passes os.access: the mode bits say read-only.
    if not readme.stat().st_mode & 0o222 or not os.access(readme, os.W_OK):
        raise UserError(f'{readme} is read-only: make it writable (chmod u+w {readme}) or pass --readme PATH; '
                        f'{readme.name} was left as it was')
    try:
        with atomic_write(readme) as partial:
            Path(partial).write_bytes(text.encode('utf-8'))
    except OSError as exc:
        raise UserError(f'cannot write {readme} ({exc.strerror or exc}): {readme.name} was left as it was; free '
                        'some space (or fix the permissions) and run python -m reports table again') from None
