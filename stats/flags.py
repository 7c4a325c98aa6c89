"""The run flags of a trial (trial.py): how many seeds, which log, which slice. A script passes FLAGS to
parse_flags. Also the check, before any training, that the files they name can be written (check_outputs)."""
import os
import re
import tempfile
from pathlib import Path

from common.errors import UserError
from common.flags import Flag, Flags


def check_runs(runs):
    if not isinstance(runs, int) or runs < 1:
        raise UserError(f'--runs must be a whole number >= 1, got {runs}')


def parse_shard(text):
    """'2/8' -> (2, 8); None -> None."""
    if text is None:
        return None
    match = re.fullmatch(r'(\d+)/(\d+)', text.strip())
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise UserError(f"--shard must be K/N with 1 <= K <= N (the K-th of N slices, e.g. 2/8), got '{text}'")
    return int(match[1]), int(match[2])


def check_out(folder):
    # Path('') is the current folder: an empty --out (an unset shell variable) would scatter logs there.
    if not str(folder).strip():
        raise UserError("--out is empty: pass the folder of the results logs, e.g. --out results")


def check_variant(name):
    if name is None:  # the default, named after --ternary and --teacher (default_variant)
        return None
    # The name becomes part of a file name, split from the hardware at '__'.
    if not re.fullmatch(r'[A-Za-z0-9][A-Za-z0-9.-]*(_[A-Za-z0-9.-]+)*', name) or '.shard-' in name:
        raise UserError(f"--variant must be a file-name-safe word like 'lr12' or 'no-tta' (letters, digits, . - "
                        f"and single _), got '{name}'")
    return name


def default_variant(args):
    # ternary/ flags: a script that does not take them trains in full precision, without a teacher
    name = 'ternary' if getattr(args, 'ternary', False) else 'full'
    return name + '-kd' if getattr(args, 'teacher', None) else name


DEFAULT_VARIANTS = {'full': 'full-precision', 'ternary': 'ternary', 'full-kd': 'distilled full-precision',
                    'ternary-kd': 'distilled ternary'}  # the default log names, and the runs each holds


def check_variant_fits_runs(args):
    """A default variant's name says how its runs trained; --variant ternary on full-precision runs would put them
    in the ternary column of the tables."""
    own = default_variant(args)
    if args.variant in DEFAULT_VARIANTS and args.variant != own:
        raise UserError(f'--variant {args.variant} names the log of {DEFAULT_VARIANTS[args.variant]} runs, but '
                        f'these flags train {DEFAULT_VARIANTS[own]} runs: leave --variant out (they go to {own}) or '
                        'pick another name')


SEED_LIMIT = 2 ** 63  # torch.manual_seed takes 64-bit seeds; below 2**63 one reads the same signed or unsigned


def check_trial_flags(hyp, args):
    """FLAGS' check, for the limits that involve two flags."""
    check_variant_fits_runs(args)
    check_seed_range(args)


def check_seed_range(args):
    """Runs use seeds seed .. seed + runs - 1: all must fit torch's seed, or a run fails after the data has loaded.
    --runs is already checked to be >= 1 by then."""
    last = args.seed + args.runs - 1
    if args.seed < 0 or last >= SEED_LIMIT:
        raise UserError(f'--seed must be >= 0 and --seed + --runs - 1 below 2**63 ({SEED_LIMIT:,}, the range of '
                        f'torch.manual_seed), got seeds {args.seed} .. {last}: pass a --seed in that range')


def check_gpus_format(text):
    """The form only; stats.gpus.parse_gpus checks the indices against the GPUs it sees."""
    if text is not None and text.strip() != 'all' and not re.fullmatch(r'\d+(,\d+)*', text.strip()):
        raise UserError(f"--gpus must be 'all' or a list of GPU indices like 0,1,3, got '{text}'")


FLAGS = Flags('trials (stats/)', run={
    'runs': Flag(1, 'number of timed runs (seeds) to do after the warm-up run', check_runs),
    'resume': Flag(False, 'do only those of seeds seed .. seed+runs-1 the log lacks: finish a job that was cut off'),
    'seed': Flag(0, 'seed of the first run; run r of a trial uses seed + r'),
    'out': Flag('results', 'folder of the JSONL results logs', check_out),
    'variant': Flag(None, "name of this configuration's log (default: full, ternary or ternary-kd)", check_variant),
    'force': Flag(False, 'append to a log that holds a different configuration'),
    'shard': Flag(None, "K/N: do the K-th of N slices of the seeds (cluster job arrays)", parse_shard),
    'gpus': Flag(None, "'all' or a list like 0,1: one process per GPU, all writing to one log", check_gpus_format),
}, check=check_trial_flags)


def check_writable_folder(folder, flag):
    """Creates `folder` and a scratch file in it, then removes what it created, so a folder that cannot take the
    run's output is found before training, not after it (os.access says yes to root even on a read-only mount)."""
    folder = Path(folder)
    created = [path for path in (folder, *folder.parents) if not path.exists()]  # deepest first
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UserError(f'{flag} {folder}: cannot write there ({exc.strerror or type(exc).__name__}): '
                        f'pass a writable folder') from None
    finally:
        # Made only to probe: a data or teacher error must not leave empty folders. append_row and atomic_write
        # make them again when the first row or the model is written.
        for path in created:
            try:
                path.rmdir()
            except OSError:  # not empty: another process writes there now
                break


def check_outputs(args, log):
    """The log, --save-model and --export-packed must be writable before any training starts."""
    check_out(args.out)  # also a flag check; here too for a trial driven from Python
    check_writable_folder(Path(log).parent, '--out')
    if Path(log).exists() and not os.access(log, os.W_OK):
        raise UserError(f'--out {args.out}: the log {log} is read-only: make it writable or pass another --out')
    for name, example in (('save_model', 'model.pt'), ('export_packed', 'model.tpk')):
        value = getattr(args, name, None)  # ternary/ flags: a script without them writes no model
        if value is None:
            continue
        flag, path = '--' + name.replace('_', '-'), Path(value)
        if path.is_dir() or str(value).endswith(os.sep):
            raise UserError(f'{flag} {path} is a folder: pass a file path, e.g. {path / example}')
        check_writable_folder(path.parent, flag)
