"""Finding the logs a report reads: their names, which are evidence of what, in the order of the ladder.

A log is results/<script stem>/<variant>__<hardware>.jsonl (stats/log.py). The side-by-side pairs
(results/sidebyside/) and the benchmark rows (results/bench/) have tables of their own, and shard logs are not
merged evidence yet (`python -m reports merge` first). A CPU run is evidence of accuracy only when full-length:
all the data and the script's default hyp (its dtype aside); anything else on the CPU is a smoke test.
"""
import ast
import contextlib
from pathlib import Path

from common.errors import UserError
from common.files import read_utf8
from reports.ladder import SCRIPTS, hyp_leaves, leaf_name
from stats.bench import BENCH
from stats.log import is_shard_log, logged_hyp, read_rows

ROOT = Path(__file__).resolve().parent.parent  # the folder of the scripts, whose hyp gives their default epochs
SIDEBYSIDE = 'sidebyside'  # results/sidebyside/: pairs of ours and the reference, a table of their own


def parse_log_name(path):
    """results/main0_network/full__nvidia-h100.jsonl -> ('main0_network.py', 'full', 'nvidia-h100')"""
    variant, _, hardware = Path(path).name.removesuffix('.jsonl').partition('__')
    return Path(path).parent.name + '.py', variant, hardware


def check_results_folder(results):
    if not Path(results).is_dir():
        raise UserError(f'{results} is not a folder of results logs: pass --results DIR')
    if any(Path(results).glob('*.jsonl')):  # its tables would come out empty, and replace the README's
        raise UserError(f'{results} holds logs itself, as one script\'s folder does: pass the results folder above '
                        f'it, --results {Path(results).parent}')


def collect(results, include_cpu=False):
    """{hardware: {(script, variant): rows}} from the main logs under `results` (shard logs are not merged
    evidence yet: `python -m reports merge` first)."""
    check_results_folder(results)
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


def hyp_defaults(path):
    """{leaf name: default} of a script's hyp leaves whose default is a literal (`1 / 9` is not); None without
    the script."""
    if not Path(path).is_file():
        return None
    try:
        leaves = hyp_leaves(read_utf8(path, 'save it as UTF-8'))
    except SyntaxError as exc:
        raise UserError(f'{path}: not valid Python ({exc.msg}, line {exc.lineno})') from None
    defaults = {}
    for leaf, (value, _) in leaves.items():
        with contextlib.suppress(ValueError, SyntaxError):
            defaults[leaf_name(leaf).rpartition('.')[2]] = ast.literal_eval(value)
    return defaults


def is_full_length(row, defaults, script):
    """A run on all the data (no --subset) with the script's default hyp, dtype aside: CPU evidence, not a smoke
    test nor a variant (a leaf whose default is no literal is not compared; one the row lacks is read as
    stats.log.LEAVES_BEFORE declares it, else as today's default)."""
    hyp = logged_hyp(script, row['hyp'])
    leaves = {key: value for group in hyp.values() if isinstance(group, dict) for key, value in group.items()}
    same = all(leaves.get(name, value) == value for name, value in defaults.items() if name != 'dtype')
    return not row.get('args', {}).get('subset') and row['epochs'] == defaults.get('epochs') and same


def collect_cpu(results, root=ROOT):
    """{(script, variant, hardware): full-length rows} of the CPU logs; a log with none is left out, as is one
    of a script not under root (its default epochs are unknown)."""
    found = {}
    for path in sorted(Path(results).glob('*/*__cpu*.jsonl')):
        if path.parent.name in (SIDEBYSIDE, BENCH) or is_shard_log(path):
            continue
        script, variant, hardware = parse_log_name(path)
        defaults = hyp_defaults(Path(root) / script)
        if not defaults:
            continue
        rows = [row for row in read_rows(path) if is_full_length(row, defaults, script)]
        if rows:
            found[(script, variant, hardware)] = rows
    return found


def script_order(script):
    return (SCRIPTS.index(script), '') if script in SCRIPTS else (len(SCRIPTS), script)
