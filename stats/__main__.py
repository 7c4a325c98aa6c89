"""python -m stats COMMAND: summaries, comparisons and merges of results logs, the README table, the figure,
and the ladder's diff report. `python -m stats COMMAND --help` for each command's flags."""
import sys
from pathlib import Path

from airbench.errors import UsageError, UserError
from airbench.flags import Parser
from stats.figure import plot_ladder
from stats.ladder import ladder_problems, ladder_steps
from stats.log import config_of, merge_shards, read_rows
from stats.summary import compare, describe, format_comparison, format_summary, verdict
from stats.table import update_readme


def read_log(path):
    if not Path(path).is_file():
        raise UserError(f'{path} does not exist')
    rows = read_rows(path)
    if not rows:
        raise UserError(f'{path} holds no runs')
    if len({str(config_of(row)) for row in rows}) > 1:
        print(f'note: {path} mixes configs (written with --force); the statistics pool them')
    return rows


def summary_command(opts):
    for path in opts.logs:
        s = describe(read_log(path))
        print(f'{path}: {format_summary(s)}\n  verdict: {verdict(s)}')


def compare_command(opts):
    rows_a, rows_b = read_log(opts.log_a), read_log(opts.log_b)
    for name, path, rows in (('A', opts.log_a, rows_a), ('B', opts.log_b, rows_b)):
        print(f'{name} {path}: {format_summary(describe(rows))}')
    print(format_comparison(compare(rows_a, rows_b)))


def merge_command(opts):
    for line in merge_shards(opts.shard_logs, opts.force):
        print(line)


def table_command(opts):
    stale = update_readme(opts.results, opts.readme, opts.check, opts.include_cpu)
    if opts.check:
        print(f'{opts.readme}: table is ' + ('stale: run python -m stats table' if stale else 'up to date'))
        return 1 if stale else 0
    print(f'{opts.readme}: table ' + ('updated' if stale else 'already up to date'))


def figure_command(opts):
    print(plot_ladder(opts.results, opts.out, opts.include_cpu))


def ladder_command(opts):
    for rung, added, removed in ladder_steps(opts.root):
        print(f'{rung.script:<20} {"[" + rung.tag + "]":<12} +{added:<3} -{removed:<3} {rung.feature}')
    problems = ladder_problems(opts.root)
    for problem in problems:
        print('problem: ' + problem)
    return 1 if problems else 0


def build_parser():
    parser = Parser(prog='python -m stats', description=__doc__, allow_abbrev=False)
    commands = parser.add_subparsers(dest='command', required=True, parser_class=Parser)
    command = commands.add_parser('summary', help='n, mean, CI, test against 94%%, time of each log')
    command.add_argument('logs', nargs='+', metavar='LOG')
    command = commands.add_parser('compare', help="B against A: difference of means, Welch's p, time ratio")
    command.add_argument('log_a', metavar='LOG_A')
    command.add_argument('log_b', metavar='LOG_B')
    command = commands.add_parser('merge', help='append shard logs (--shard K/N) to their main log')
    command.add_argument('shard_logs', nargs='+', metavar='SHARD_LOG')
    command.add_argument('--force', action='store_true', help='merge logs of different configs anyway')
    for name, text in (('table', "rewrite the README's results table"), ('figure', 'plot time against accuracy')):
        command = commands.add_parser(name, help=text)
        command.add_argument('--results', default='results', help='folder of the logs (default results)')
        command.add_argument('--include-cpu', action='store_true', help='also use CPU logs (smoke tests)')
    commands.choices['table'].add_argument('--readme', default='README.md', help='default README.md')
    commands.choices['table'].add_argument('--check', action='store_true', help='exit 1 if the table is stale')
    commands.choices['figure'].add_argument('--out', default='ladder.png', help='image file (default ladder.png)')
    command = commands.add_parser('ladder', help="each step's feature and size; the ladder's problems")
    command.add_argument('--root', default='.', help='folder holding the rung scripts (default .)')
    return parser


COMMANDS = {'summary': summary_command, 'compare': compare_command, 'merge': merge_command,
            'table': table_command, 'figure': figure_command, 'ladder': ladder_command}


def main(argv=None):
    """Returns the exit status; a UserError prints as one line."""
    try:
        opts = build_parser().parse_args(argv)
        return COMMANDS[opts.command](opts) or 0
    except UserError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1


if __name__ == '__main__':
    sys.exit(main())
