"""python -m reports COMMAND: summaries, comparisons and merges of results logs, the README tables, the figure,
the ladder's diff report, the FLOP counts, ternary94.py's search log and the side-by-side. `python -m reports
COMMAND --help` for each command's flags."""
import argparse
import sys
from pathlib import Path

from common.errors import UsageError, UserError
from common.flags import Parser
from reports.figure import plot_ladder
from reports.flops import count_script, flops_table, write_counts
from reports.ladder import LADDER, STANDALONE, check_root, ladder_problems, ladder_steps
from reports.search import update_search_log
from reports.sidebyside import format_pairs, run_pairs, summarize_pairs
from reports.table import update_readme
from stats.log import config_of, merge_shards, read_rows
from stats.summary import compare, describe, format_comparison, format_summary, verdict


def read_log(path):
    if Path(path).is_dir():
        raise UserError(f'{path} is a folder, not a results log: pass the .jsonl files in it, e.g. {path}/*/*.jsonl')
    if not Path(path).is_file():
        raise UserError(f'{path} does not exist: pass a log under results/, e.g. results/main7_mirror/*.jsonl')
    rows = read_rows(path)
    if not rows:
        raise UserError(f'{path} holds no runs: run the script into it first, or pass a log that holds some')
    if len({str(config_of(row)) for row in rows}) > 1:
        print(f'note: {path} mixes configs (written with --force); the statistics pool them')
    return rows


def parse_seed_range(text):
    """'2-9' -> range(2, 10); '3' -> range(3, 4)."""
    first, dash, last = text.partition('-')
    try:
        seeds = range(int(first), int(last if dash else first) + 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected FIRST-LAST (seeds, e.g. 2-9) or one seed, got '{text}'") from None
    if not seeds:
        raise argparse.ArgumentTypeError(f"expected FIRST <= LAST, got '{text}'")
    return seeds


def summary_command(opts):
    for path in opts.logs:
        rows = read_log(path)
        if opts.seeds is not None:  # e.g. the runs that did not choose a config, apart from those that did
            rows = [row for row in rows if row.get('seed') in opts.seeds]
            if not rows:
                raise UserError(f'{path} holds no runs of seeds {opts.seeds[0]} to {opts.seeds[-1]}: pass a range '
                                'that its seeds fall in')
            path = f'{path} (seeds {opts.seeds[0]} to {opts.seeds[-1]})'
        s = describe(rows)
        print(f'{path}: {format_summary(s)}\n  verdict: {verdict(s)}')
        if all('time_ratio' in row for row in rows):  # a side-by-side log
            print('  side by side: ' + format_pairs(summarize_pairs(rows)))


def compare_command(opts):
    rows_a, rows_b = read_log(opts.log_a), read_log(opts.log_b)
    if Path(opts.log_a).resolve() == Path(opts.log_b).resolve():
        print(f'note: A and B are the same log, {opts.log_a}: the comparison is of a log with itself')
    for name, path, rows in (('A', opts.log_a, rows_a), ('B', opts.log_b, rows_b)):
        print(f'{name} {path}: {format_summary(describe(rows))}')
    print(format_comparison(compare(rows_a, rows_b)))
    devices = [rows[0].get('device') for rows in (rows_a, rows_b)]
    if devices[0] != devices[1]:
        print(f'note: A ran on {devices[0]}, B on {devices[1]}: the time ratio compares devices, not the change; '
              'the accuracies compare')


def merge_command(opts):
    for line in merge_shards(opts.shard_logs, opts.force):
        print(line)


def table_command(opts):
    stale = update_readme(opts.results, opts.readme, opts.check, opts.include_cpu)
    if opts.check:
        print(f'{opts.readme}: tables are ' + ('stale: run python -m reports table' if stale else 'up to date'))
        return 1 if stale else 0
    print(f'{opts.readme}: tables ' + ('updated' if stale else 'already up to date'))


def figure_command(opts):
    print(plot_ladder(opts.results, opts.out, opts.include_cpu))


def ladder_command(opts):
    check_root(opts.root)
    for rung, added, removed in ladder_steps(opts.root):
        print(f'{rung.script:<20} {"[" + rung.tag + "]":<12} +{added:<3} -{removed:<3} {rung.feature}')
    problems = ladder_problems(opts.root)
    for problem in problems:
        print('problem: ' + problem)
    return 1 if problems else 0


def flops_command(opts):
    check_root(opts.root)
    scripts = opts.scripts or [rung.script for rung in LADDER + STANDALONE if (Path(opts.root) / rung.script).is_file()]
    counts = {}
    for script in scripts:
        print(f'counting {script} (one training step, one eval pass, fp32 on the CPU)', flush=True)
        counts[Path(script).name] = count_script(Path(opts.root) / script)
    print(f'{write_counts(opts.results, counts)}: updated\n' + '\n'.join(flops_table(counts)))


def search_command(opts):
    check_root(opts.root)
    readme, stale = update_search_log(opts.results, opts.root, opts.check)
    if opts.check:
        print(f'{readme}: the search table is ' + ('stale: run python -m reports search' if stale else 'up to date'))
        return 1 if stale else 0
    print(f'{readme}: search table ' + ('updated' if stale else 'already up to date'))


def sidebyside_command(opts):
    import torch  # here, so the other commands start without loading it
    if opts.pairs < 1:
        raise UserError(f'--pairs must be >= 1, got {opts.pairs}')
    if not torch.cuda.is_available():
        raise UserError('the side-by-side needs a CUDA GPU (the reference loads its data onto cuda:0)')
    argv = ['--device', 'cuda', '--seed', str(opts.seed), *(['--data-dir', opts.data_dir] if opts.data_dir else []),
            *opts.ours_flags]
    path = run_pairs(opts.ours, opts.reference, opts.pairs, opts.out, opts.workdir, argv)
    print(f'{path}: ' + format_pairs(summarize_pairs(read_rows(path))))


def build_parser():
    parser = Parser(prog='python -m reports', description=__doc__, allow_abbrev=False)
    commands = parser.add_subparsers(dest='command', required=True, parser_class=Parser)
    command = commands.add_parser('summary', help='n, mean, CI, test against 94%%, time of each log')
    command.add_argument('logs', nargs='+', metavar='LOG')
    command.add_argument('--seeds', type=parse_seed_range, metavar='FIRST-LAST',
                         help='only the runs of these seeds, e.g. 2-9 (default: all)')
    command = commands.add_parser('compare', help="B against A: difference of means, Welch's p, time ratio")
    command.add_argument('log_a', metavar='LOG_A')
    command.add_argument('log_b', metavar='LOG_B')
    command = commands.add_parser('merge', help='append shard logs (--shard K/N) to their main log')
    command.add_argument('shard_logs', nargs='+', metavar='SHARD_LOG')
    command.add_argument('--force', action='store_true', help='merge logs of different configs anyway')
    for name, text in (('table', "rewrite the README's results and ladder tables"),
                       ('figure', 'plot time against accuracy')):
        command = commands.add_parser(name, help=text)
        command.add_argument('--results', default='results', help='folder of the logs (default results)')
        command.add_argument('--include-cpu', action='store_true',
                             help='also CPU logs, smoke runs included, as devices of their own')
    commands.choices['table'].add_argument('--readme', default='README.md', help='default README.md')
    commands.choices['table'].add_argument('--check', action='store_true', help='exit 1 if the tables are stale')
    commands.choices['figure'].add_argument('--out', default='ladder.png', help='image file (default ladder.png)')
    command = commands.add_parser('ladder', help="each step's feature and size; the ladder's problems")
    command.add_argument('--root', default='.', help='folder holding the rung scripts (default .)')
    command = commands.add_parser('flops', help='count the TFLOPs of a run of each script into results/flops.json',
                                  description='Counts one training step and one eval pass of each script with '
                                  'FlopCounterMode on the CPU (reports/flops.py says what is counted)')
    command.add_argument('scripts', nargs='*', metavar='SCRIPT', help='default: every rung and standalone script')
    command.add_argument('--root', default='.', help='folder holding the rung scripts (default .)')
    command.add_argument('--results', default='results', help='folder of flops.json (default results)')
    command = commands.add_parser('search', help="rewrite ternary94.py's search log, results/ternary94/README.md",
                                  description='One line per log of ternary94.py: its config as flags, TFLOPs, '
                                  'packed size, n, mean (reports/search.py says what each column counts)')
    command.add_argument('--root', default='.', help='folder holding ternary94.py (default .)')
    command.add_argument('--results', default='results', help='folder of the logs (default results)')
    command.add_argument('--check', action='store_true', help='exit 1 if the table is stale')
    command = commands.add_parser('sidebyside', help='our rung against the published reference, run A B A B',
                                  description='Flags after -- go to our rung, e.g. -- --epochs 10')
    command.add_argument('ours', metavar='OURS', help='our rung, e.g. main7_mirror.py')
    command.add_argument('reference', metavar='REFERENCE', help="the reference's legacy/airbench94.py or "
                         'legacy/airbench94_compiled.py')
    command.add_argument('--pairs', type=int, default=10, help='pairs to add to the log (default 10)')
    command.add_argument('--seed', type=int, default=0, help='first seed (default 0)')
    command.add_argument('--data-dir', help='CIFAR-10 folder, as for the rungs')
    command.add_argument('--out', default='results', help='results folder (default results)')
    command.add_argument('--workdir', default='.reference', help="folder for the reference's data files "
                         '(default .reference, git-ignored)')
    return parser


COMMANDS = {'summary': summary_command, 'compare': compare_command, 'merge': merge_command,
            'table': table_command, 'figure': figure_command, 'ladder': ladder_command,
            'flops': flops_command, 'search': search_command, 'sidebyside': sidebyside_command}


def main(argv=None):
    """Returns the exit status; a UserError prints as one line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after `--` belongs to the rung that sidebyside drives.
    argv, ours_flags = (argv[:argv.index('--')], argv[argv.index('--') + 1:]) if '--' in argv else (argv, [])
    try:
        opts = build_parser().parse_args(argv)
        if ours_flags and opts.command != 'sidebyside':
            raise UsageError(f'only sidebyside takes flags after --, got {" ".join(ours_flags)}')
        opts.ours_flags = ours_flags
        return COMMANDS[opts.command](opts) or 0
    except UserError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1


if __name__ == '__main__':
    sys.exit(main())
