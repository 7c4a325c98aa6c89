"""The README's results table, generated from the logs in results/ (STYLE.md item 10: no hand-typed numbers).

One table per hardware, since timings are compared only within one device. One row per (script, variant):
the 'full' log gives the row and the 'ternary' log of the same script its ternary columns; any other variant
(ternary-kd, a custom --variant) gets a row of its own, where a ternary one (its runs used --ternary, whatever
the name) shows its gap to 'full': the same script's, or for a standalone script without one (ternary94.py),
its parent's.
Rows follow the ladder, then the standalone scripts, then any other script. CPU logs
(results/<script>/<variant>__cpu-<dtype>.jsonl) go to a table of their own, as accuracy evidence whose times are
not comparable with GPU times, and only their full-length runs (all the data, the script's default epochs): smoke
runs are left out (which logs count as what: reports/logs.py). `include_cpu` also puts every CPU log, smoke runs
included, in the per-device tables. The step benchmark's rows (results/bench/, reports/benchtable.py) close the
block.
A second block, between the ladder markers, is the README's ladder table: each script's step, its default epochs
(read from its hyp), its TFLOPs per run as counted by `python -m reports flops` and as published by airbench. A
README without those markers keeps only the results block.
Each block between its markers is rewritten whole; everything else in the README is kept byte for byte. The new
README replaces the old in one step, so a failed write leaves the old one as it was.
"""
import os
import statistics
from pathlib import Path

from common.errors import UserError
from common.files import atomic_output, read_utf8
from reports.benchtable import step_bench_table
from reports.flops import PUBLISHED_TFLOPS, read_counts
from reports.ladder import LADDER, STANDALONE, find_rung
from reports.logs import ROOT, SIDEBYSIDE, check_results_folder, collect, collect_cpu, hyp_defaults, script_order
from reports.sidebyside import summarize_pairs
from stats.log import read_rows
from stats.summary import ALPHA, CONFIRM_N, describe, format_p

BEGIN, END = '<!-- reports:table:begin -->', '<!-- reports:table:end -->'
EMPTY = 'Nothing measured yet: run a rung on a GPU, then `python -m reports table`.'
NO_GPU = 'Nothing measured on a GPU yet: run a rung on a GPU, then `python -m reports table`.'
HEADER = ['script', 'feature', 'epochs', 'median time (s)', 'TTA accuracy: mean (95% CI)', 'n',
          'ternary: mean (n)', 'gap (points)', '>= 94% shown?']
CAPTION = ('n: runs (seeds). Accuracy: test accuracy with TTA. Time: median seconds of whitening init, training '
           'and TTA eval (CUDA events). gap: ternary minus full precision of the same script (ternary94.py: of '
           'main8_compile.py). >= 94% shown: one-sided t-test of '
           'mean > 94%, yes when p < 0.05 (`stats/summary.py`); "but n < 10" where fewer runs than a claim takes.')

SIDEBYSIDE_HEADING = ('**Side by side with the published airbench** (`python -m reports sidebyside`: one process, '
                      'runs alternating ours, reference; each side timed by its own CUDA events)')
SIDEBYSIDE_HEADER = ['ours', 'reference', 'GPU', 'pairs', 'time ratio ours/reference: median (range)',
                     'median time (s): ours / reference', 'TTA accuracy: ours / reference']

CPU_HEADING = '**CPU evidence** (accuracy only; times not comparable with GPU times)'
CPU_HEADER = ['script', 'variant', 'dtype', 'CPU model', 'n', 'TTA accuracy: mean', '95% CI', 'share >= 94%',
              '>= 94% shown?', 'median CPU minutes per run']
CPU_CAPTION = ('Full-length CPU runs only (all 50,000 training images, the script\'s default epochs); smoke runs '
               'are left out. dtype: the precision it trained in (`common/precision.py`). Times are CPU minutes of '
               'the same phases as on a GPU (with `--no-warmup`, a compiled script\'s first run in each process adds '
               'its compilation), not comparable with GPU seconds.')

LADDER_BEGIN, LADDER_END = '<!-- reports:ladder:begin -->', '<!-- reports:ladder:end -->'
LADDER_HEADER = ['script', 'adds', 'epochs', 'TFLOPs per run', 'with per-epoch evals', 'published (airbench)']
LADDER_CAPTION = ('TFLOPs per run: one training step (forward, loss, backward) and one TTA eval pass counted by '
                  "PyTorch's FlopCounterMode (`python -m reports flops`, `results/flops.json`, `reports/flops.py`), "
                  'times the run\'s steps and its 10,000 test images: the same on every device. With per-epoch '
                  'evals: plus the untimed plain eval after each epoch, which the published counts leave out. '
                  "Published: airbench's ablation table (Jordan 2024), for the rungs that reproduce its lines.")
# The README's wording of each step, longer than reports.ladder's `feature` (the results table's column).
README_FEATURES = {
    'train_resnet18.py': 'ResNet-18 (CIFAR stem) tuned for time to 94%; outside the diff chain',
    'main5_lookahead.py': 'lookahead (EMA of weights) with fast BatchNorm momentum, retuned lr schedule',
    'main6_tta.py': 'multi-crop TTA: mirror plus two 1-pixel translations',
    'main7_mirror.py': 'alternating ("mirror") flip instead of random flip',
    'main8_compile.py': '`torch.compile` of the model',
    'main9_muon.py': 'Muon (orthogonalized Nesterov updates) for the 3x3 convs, SGD for the biases and head, '
                     'retuned as airbench94_muon: batch 2000, no warm-up, no lookahead',
    'ternary94.py': 'main8 with ternary weights on by default, 1.5x widths, 15 epochs, no dirac init: the ternary '
                    'net confirmed at 94% by the search (results/ternary94/README.md; the CPU table above); outside '
                    'the diff chain',
}


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


def distinct(values):
    return ', '.join(sorted(set(values)))


def cpu_row(script, variant, hardware, rows):
    """Cells of one CPU log. A row without a dtype (written before the dtype leaf) trained in the dtype its log
    name says, else fp32; one without cpu_info ran on an unknown CPU. The accuracy pools every CPU of the log (one
    code, one dtype); the times do not: a log that several CPU models filled gives each one's runs and median."""
    s = describe(rows)
    dtype = distinct(row['hyp'].get('net', {}).get('dtype') or hardware.partition('-')[2] or 'fp32' for row in rows)
    by_model = {}
    for row in rows:
        by_model.setdefault((row.get('cpu_info') or {}).get('model') or 'unknown', []).append(row['time_seconds'])
    if len(by_model) == 1:
        model, minutes = next(iter(by_model)), f'{s.time_median / 60:.1f}'
    else:
        models = sorted(by_model)
        model = ', '.join(f'{name} ({len(by_model[name])} run{"s" * (len(by_model[name]) != 1)})' for name in models)
        minutes = ', '.join(f'{statistics.median(by_model[name]) / 60:.1f} ({name})' for name in models)
    ci = '' if s.n < 2 else f'{100 * s.ci_low:.2f} to {100 * s.ci_high:.2f}'
    share = f'{round(s.share_at_target * s.n)}/{s.n} ({100 * s.share_at_target:.0f}%)'
    return [f'`{script}`', variant, dtype, model, str(s.n), f'{100 * s.mean:.2f}%', ci, share, format_verdict(s),
            minutes]


def cpu_table(results, root=ROOT):
    """Markdown for the full-length CPU logs; None when there is none."""
    logs = collect_cpu(results, root)
    keys = sorted(logs, key=lambda key: (script_order(key[0]), key[1] != 'full', key[1], key[2]))
    if not keys:
        return None
    return '\n'.join([CPU_HEADING, '', '| ' + ' | '.join(CPU_HEADER) + ' |', '|' + '---|' * len(CPU_HEADER),
                      *('| ' + ' | '.join(cpu_row(*key, logs[key])) + ' |' for key in keys), '', CPU_CAPTION])


def format_accuracy(s):
    if s.n < 2:
        return f'{100 * s.mean:.2f}%'
    return f'{100 * s.mean:.2f}% ({100 * s.ci_low:.2f} to {100 * s.ci_high:.2f})'


def format_verdict(s):
    """The one-sided t-test's verdict; one passed at n < CONFIRM_N says so (stats/summary.py)."""
    if s.n < 2:
        return 'n < 2'
    if s.std == 0:  # the t-test is degenerate (stats.summary.verdict)
        return f'untested: all {s.n} runs equal'
    if s.p >= ALPHA:
        return f'no, {format_p(s.p)}'
    return f'yes, {format_p(s.p)}' + f', but n < {CONFIRM_N}' * (s.n < CONFIRM_N)


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


def make_block(results, include_cpu=False, root=ROOT):
    """The markdown between the results markers."""
    found = collect(results, include_cpu)
    cpu, side, bench = cpu_table(results, root), sidebyside_table(results, include_cpu), step_bench_table(results)
    if not found and not cpu and not side and not bench:
        return EMPTY
    tables = [hardware_table(hardware, found[hardware]) for hardware in sorted(found)]
    notes = [CAPTION] if found else [] if side else [NO_GPU]  # the side-by-side pairs ran on a GPU too
    return '\n\n'.join(tables + notes + [table for table in (cpu, side, bench) if table])


def ladder_order():
    """The baselines outside the diff chain (ResNet-18) first, then the ladder, then the scripts built on a rung."""
    return [rung for rung in STANDALONE if not rung.parent] + LADDER + [rung for rung in STANDALONE if rung.parent]


def format_count(counts, defaults, key):
    """A count of results/flops.json, or why there is none: a count for other epochs or batch size is stale."""
    if counts is None:
        return 'not counted'
    if any(counts.get(name) != defaults.get(name) for name in ('epochs', 'batch_size')):
        return 'stale: python -m reports flops'
    return f'{counts[key]:.0f}'


def ladder_block(results, root=ROOT):
    """The README's ladder table: one row per script present under root."""
    counts = read_counts(results)
    lines = ['| ' + ' | '.join(LADDER_HEADER) + ' |', '|' + '---|' * len(LADDER_HEADER)]
    for rung in ladder_order():
        defaults = hyp_defaults(Path(root) / rung.script)
        if defaults is None:
            continue
        count = counts.get(rung.script)
        cells = [f'`{rung.script}`', README_FEATURES.get(rung.script, rung.feature), f'{defaults["epochs"]:g}',
                 format_count(count, defaults, 'total_tflops'),
                 format_count(count, defaults, 'total_with_epoch_evals_tflops'),
                 str(PUBLISHED_TFLOPS.get(rung.script, ''))]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines + ['', LADDER_CAPTION])


def replace_block(text, block, readme, begin_marker=BEGIN, end_marker=END):
    begin, end = text.find(begin_marker), text.find(end_marker)
    if begin < 0 or end < begin:
        raise UserError(f'{readme} has no "{begin_marker}" ... "{end_marker}" pair: add both lines where the '
                        'table goes')
    return text[:begin + len(begin_marker)] + '\n' + block + '\n' + text[end:]


def update_readme(results, readme, check=False, include_cpu=False, root=ROOT):
    """Rewrites the README's tables (check=False) or only compares them. Returns True when they were stale.
    root: the folder of the scripts, whose hyp gives the epochs of the ladder table and of full-length CPU runs."""
    readme = Path(readme)
    if not readme.is_file():
        raise UserError(f'{readme} does not exist' + (' (it is a folder)' if readme.is_dir() else '')
                        + ': pass --readme PATH')
    text = read_utf8(readme, 'save it as UTF-8, or pass --readme PATH')
    check_holds_logs(results, readme)
    new = replace_block(text, make_block(results, include_cpu, root), readme)
    if LADDER_BEGIN in new:  # optional: a README may hold the results table alone
        new = replace_block(new, ladder_block(results, root), readme, LADDER_BEGIN, LADDER_END)
    if new != text and not check:
        write_readme(readme, new)
    return new != text


def check_holds_logs(results, readme):
    """A folder with no logs at all is a wrong --results (a typo, a fresh folder), not a project with nothing
    measured: its tables would replace every row of the README's."""
    check_results_folder(results)
    if not any(Path(results).glob('*/*.jsonl')) and not (Path(results) / 'flops.json').is_file():
        raise UserError(f'{results} holds no run logs (<script>/<variant>__<hardware>.jsonl) and no flops.json: '
                        f'pass --results with the folder the runs log to (a new project: run a rung, or python -m '
                        f'reports flops, first); {readme.name} was left as it was')


def write_readme(readme, text):
    """Replaces the README in one step (common/files.py), so a full disk or a stop leaves the old one whole."""
    # The rename needs only the folder's permission, and root passes os.access: the mode bits say read-only.
    if not readme.stat().st_mode & 0o222 or not os.access(readme, os.W_OK):
        raise UserError(f'{readme} is read-only: make it writable (chmod u+w {readme}) or pass --readme PATH; '
                        f'{readme.name} was left as it was')
    again = 'free some space (or fix the permissions) and run python -m reports table again'
    with atomic_output(readme, 'the README', again) as partial:
        Path(partial).write_bytes(text.encode('utf-8'))
