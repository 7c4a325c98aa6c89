"""A trial: the n seeded runs of one rung, appended to its results log as they finish.

    trial = stats.Trial(__file__, hyp, args)  # checks the flags, reads the log, refuses a config mismatch
    if trial.delegate_to_gpus():               # --gpus: one child process per GPU, wait, report
        sys.exit(0)
    for run, seed in trial.pending():
        trial.record(main(run, seed, ...))     # one row appended at once: a crash loses at most one run
    trial.report()                             # mean/std of this session, the whole log, the verdict

Seeds (STYLE.md item 11): run r has seed args.seed + r.
- Default: the next args.runs seeds from args.seed upward that the log does not hold yet, so running the
  same command again adds new seeds.
- `--resume`: only those of seeds args.seed .. args.seed + args.runs - 1 that the log lacks, so running a
  cut-off command again finishes it and running a finished one does nothing.
- `--shard K/N`: the runs r < args.runs with r % N == K - 1, less the seeds already logged (in the shard
  log or the main log), so a rerun of a killed job finishes its slice. Rows go to the shard log.
- `--gpus all|0,1,...`: this process plans the seeds, then starts one copy of the script per GPU with
  CUDA_VISIBLE_DEVICES set and its share of the seeds in $STATS_GPU_SEEDS; all of them append to one log.
Variant (the log's name): args.variant, else 'full', 'ternary', 'full-kd' or 'ternary-kd' (with --teacher).
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

from common import errors
from common.errors import UserError
from common import provenance
from stats.diverged import divergence_path, read_divergences, record_divergence
from stats.flags import check_outputs, check_runs, check_variant, check_variant_fits_runs, default_variant, parse_shard
from stats.gpus import (GPU_SEEDS_ENV, GPU_SEEDS_LIMIT, cuda_gpu_names, gpu_child_seeds, parse_gpus, strip_gpus_flag,
                        visible_device)
from stats.log import append_row, check_rows, log_path, read_rows, same_config, shard_logs_of
from stats.seeds import RunPlan, format_seeds, next_seeds, shard_seeds
from stats.summary import describe, format_summary, mean_std, values, verdict

# Flags that do not change what a run computes, so rows that differ only in them are pooled (the contract's list).
MODEL_FILES = ('save_model', 'export_packed')  # ternary/ flags naming the files the trained model goes to
NOT_CONFIG = ('runs', 'resume', 'seed', 'data_dir', 'device', 'out', 'variant', 'force', 'shard', 'gpus', 'warmup',
              *MODEL_FILES)
METADATA = ('script', 'variant', 'device', 'date', 'git_commit', 'script_sha256', 'versions', 'gpu_info', 'cpu_info',
            'hyp', 'args')
RESULT_KEYS = ('run', 'seed', 'epochs', 'val_acc', 'tta_val_acc', 'time_seconds', 'peak_memory_bytes')


def check_finite_accuracy(result):
    """A rung's evaluate returns NaN when the model's outputs are NaN or infinite: a run that diverged on its last
    step, after the last training loss it checked. Such a run is no result, as one stopped by its loss is not."""
    if not all(math.isfinite(result[key]) for key in ('val_acc', 'tta_val_acc')):
        raise errors.diverged(result['run'], "the model's outputs are NaN or infinite at its final evaluation")


def hyp_dtype(hyp):
    """The resolved `dtype` leaf of a script's hyp (common/precision.py); every script has one."""
    found = [value for group in hyp.values() for key, value in group.items() if key == 'dtype']
    if not found:
        raise ValueError("hyp has no 'dtype' leaf: add 'dtype': 'auto' to hyp['net'] (common/precision.py)")
    return found[0]


def config_args(args):
    return {key: value for key, value in sorted(vars(args).items()) if key not in NOT_CONFIG}


def format_mean_std(x):
    mean, std = mean_std(x)
    return f'{mean:.4f}/{std:.4f}' if len(x) > 1 else f'{mean:.4f}/n/a'


class Trial:
    """The runs one invocation of a rung does, and the log they go to. See the module docstring."""

    def __init__(self, script_file, hyp, args):
        check_runs(args.runs)
        self.shard = parse_shard(args.shard)
        names = [] if args.gpus is None else cuda_gpu_names(args.device)
        self.gpu_ids = None if args.gpus is None else self.check_gpus(args.gpus, names)
        # With --gpus, the log is named after the GPUs the children will use, not the parent's default GPU.
        device = names[self.gpu_ids[0]] if self.gpu_ids else provenance.device_name(args.device)
        self.script, self.args = Path(script_file).resolve(), args
        check_variant_fits_runs(args)  # also a flag check; here too for a trial driven from Python
        self.variant = check_variant(default_variant(args) if args.variant is None else args.variant)
        # As it reads back from the log (tuples become lists), so logged and current configs compare equal.
        self.config = json.loads(json.dumps({'hyp': hyp, 'args': config_args(args)}))
        # The format it trained in is part of the hardware's name: fp32 and bf16 runs of one CPU never pool.
        self.hardware = provenance.slugify(device) + f'-{hyp_dtype(hyp)}'
        self.path = log_path(args.out, self.script.name, self.variant, self.hardware, self.shard)
        check_outputs(args, self.path)
        logged = self.read_logged_seeds()
        self.seeds = self.plan(logged)
        # Hashed now, not per run: this process runs the code it loaded at start, whatever happens to the file.
        self.provenance = provenance.provenance(self.script, args.device, args.out, name=device)
        self.recorded = []  # seeds this process has logged
        errors.stop_note, errors.divergence_note = self.stop_note, self.record_divergence
        print(f'log: {self.path} ({len(logged)} seeds already logged; this session: seeds '
              f'{format_seeds(self.seeds)})')
        self.note_divergences()
        if not self.seeds:
            self.nothing_to_train(args)

    @staticmethod
    def nothing_to_train(args):
        """No seed to run (say, --resume of a finished job): no warm-up run, and no model written, since the only
        model trained would be the warm-up's, on random labels."""
        args.warmup = False
        for name in MODEL_FILES:
            if getattr(args, name, None) is not None:
                print(f'note: no run to do, so --{name.replace("_", "-")} {getattr(args, name)} is not written')
                setattr(args, name, None)

    def note_divergences(self):
        """Says which planned seeds diverged before with this config: they run again (the same code and seed will
        likely diverge again)."""
        again = sorted(seed for seed in self.diverged_seeds if seed in self.seeds)  # a plan is lazy: never a set
        if again:
            print(f'note: seed{"s" * (len(again) > 1)} {format_seeds(again)} of this config diverged before '
                  f'(recorded in {divergence_path(self.path).parent}) and run{"s" * (len(again) == 1)} again now')

    def record_divergence(self, run, how):
        """Records a diverged run beside the log (stats/diverged.py); returns what the error line adds. A warm-up
        run (run 'warmup', random labels) is no run of the trial and is not recorded."""
        if not isinstance(run, int):
            return ''
        row = {'script': self.script.name, 'variant': self.variant, 'run': run, 'seed': self.args.seed + run,
               'diverged': how, **self.provenance, 'date': provenance.utc_now(), **self.config}
        try:
            # A stop signal during the write waits for the record, then ends the process (its line, not this one).
            with errors.defer_stops():
                record_divergence(self.path, row)
        except Exception as exc:  # the divergence is the error to report, not this
            return f' (nor recorded: {exc})'
        return f'; recorded in {divergence_path(self.path)}'

    def stop_note(self):
        """What a SIGTERM or Ctrl-C keeps (common/errors.py prints it): read from memory, no I/O."""
        done = len(self.recorded)
        kept = f'{done} finished run{"s" * (done != 1)} of this session {"are" if done != 1 else "is"} in {self.path}'
        if done == len(self.seeds):
            return kept
        return f'{kept}; the run in progress is lost; the same command with --resume does the remaining seeds'

    @staticmethod
    def check_gpus(text, names):
        ids = parse_gpus(text, len(names))
        if len({names[i] for i in ids}) > 1:
            raise UserError(f'--gpus {text} mixes GPU models ({", ".join(sorted({names[i] for i in ids}))}), but '
                            'one log holds the timings of one device: list GPUs of one model only')
        return ids

    def read_logged_seeds(self):
        """Seeds already logged; refuses a log of another script or, without --force, another config (a log
        mixed with --force is one pool: its seeds all count as done). The records of diverged runs beside the logs
        (stats/diverged.py) are checked alike; the seeds of this config's are kept in self.diverged_seeds."""
        # The main log and its shard logs are one trial: a seed done in any of them is done (a shard's
        # seeds merged into the main log, and a plain run's seeds not yet merged from the shards).
        main = log_path(self.args.out, self.script.name, self.variant, self.hardware)
        paths = [main, *shard_logs_of(main)]  # this job's own shard log among them, once it exists
        logged, self.diverged_seeds = set(), set()
        for path in paths:
            rows, records = read_rows(path), read_divergences(path)
            check_rows(path, rows, self.script.name, self.config, self.args.force)
            check_rows(divergence_path(path), records, self.script.name, self.config, self.args.force)
            logged |= {row['seed'] for row in rows}
            self.diverged_seeds |= {record['seed'] for record in records if same_config(record, self.config)}
        return logged

    def plan(self, logged):
        # A --gpus child does exactly the seeds its parent planned: replanning from the log here would race
        # with the other children appending to it.
        child_seeds = gpu_child_seeds()
        if child_seeds is not None:
            return [seed for seed in child_seeds if seed not in logged]
        if self.shard or self.args.resume:  # --resume: the one-slice case of a shard
            seeds = shard_seeds(self.args.seed, self.args.runs, self.shard or (1, 1), logged)
        else:
            seeds = next_seeds(self.args.seed, self.args.runs, logged)
        if self.gpu_ids and len(seeds) > GPU_SEEDS_LIMIT:
            raise UserError(f'--gpus hands each GPU process its seeds in its environment, which holds at most '
                            f'{GPU_SEEDS_LIMIT} seeds per command, and {len(seeds)} are planned: pass --runs '
                            f'{GPU_SEEDS_LIMIT} or less and run the command again for more, or use --shard K/N')
        return seeds

    def pending(self):
        """(run index, seed) pairs this process should do, in order; computed as they are read (stats/seeds.py)."""
        return RunPlan(self.seeds, self.args.seed)

    def record(self, result):
        """Appends the row of one finished run (the rung's result dict plus where it came from)."""
        missing = [key for key in RESULT_KEYS if key not in result]
        clashing = [key for key in METADATA if key in result]
        if missing or clashing:
            raise ValueError(f'result row lacks {missing} or overrides {clashing}: see the contract')
        check_finite_accuracy(result)  # a diverged run: recorded beside the log (record_divergence), not in it
        row = {'script': self.script.name, 'variant': self.variant, **result, **self.provenance,
               'date': provenance.utc_now(), **self.config}  # date: when this run finished
        with errors.defer_stops():  # a stop waits until the finished run is logged: it loses only a run in progress
            # The config is checked again under the log's lock: another process may have begun the log since.
            appended = append_row(self.path, row, new_seed=True, check_config=True, force=self.args.force)
            self.recorded.append(row['seed'])
        if not appended:
            print(f'warning: seed {row["seed"]} is already in {self.path}, logged by another process since this '
                  'one started; this run is not logged (two runs of one seed are not independent). To run in '
                  'parallel use --gpus or --shard K/N', file=sys.stderr)
        return row

    def delegate_to_gpus(self):
        """With --gpus: runs this script once per GPU on its share of the seeds, waits, reports, returns True.
        Without: returns False and this process does the runs itself."""
        if self.gpu_ids is None:
            return False
        children = []
        for index, gpu in enumerate(self.gpu_ids):
            seeds = self.seeds[index::len(self.gpu_ids)]
            if seeds:
                env = dict(os.environ, CUDA_VISIBLE_DEVICES=visible_device(gpu),
                           **{GPU_SEEDS_ENV: ','.join(map(str, seeds))})
                # The user's own flags, so each child resolves the same config and writes the same log.
                argv = [sys.executable, str(self.script), *strip_gpus_flag(sys.argv[1:])]
                children.append((gpu, subprocess.Popen(argv, env=env)))
        try:
            failed = [gpu for gpu, child in children if child.wait() != 0]
        finally:  # stopped (SIGTERM, Ctrl-C): stop the children too; each logs what it finished and says so
            for _, child in children:
                if child.poll() is None:
                    child.terminate()
            for _, child in children:  # within this process's own grace time (common/errors.py)
                try:
                    child.wait(timeout=errors.STOP_GRACE_SECONDS / 2)
                except subprocess.TimeoutExpired:
                    child.kill()
        self.report()
        if failed:
            raise UserError(f'the processes on GPU {", ".join(map(str, failed))} failed (their errors are above); '
                            f'the runs they finished are in {self.path}')
        return True

    def report(self):
        """Prints mean/std over this session's runs, a summary of the whole log and the verdict."""
        rows = read_rows(self.path)
        session = [row for row in rows if row['seed'] in set(self.seeds)]
        if session:
            columns = ('val_acc', 'tta_val_acc', 'time_seconds')
            print(f'mean/std over {len(session)} run{"s" * (len(session) != 1)}: '
                  + '  '.join(f'{key} {format_mean_std(values(session, key))}' for key in columns))
        else:
            print('this session did no runs: every planned seed was already in the log')
        if not rows:
            return
        mixed = sum(not same_config(row, self.config) for row in rows)
        # Same config, other code: pooled (a comment or a refactor changes the hash too), but said.
        other_code = sum(row.get('script_sha256') != self.provenance['script_sha256']
                         or row.get('versions') != self.provenance['versions'] for row in rows)
        summary = describe(rows)
        print(f'log {self.path}: {format_summary(summary)}'
              + (f' (pooling {mixed} rows of other configs, mixed with --force)' if mixed else '')
              + (f' ({other_code} rows ran another version of {self.script.name} or of torch/CUDA/Triton)'
                 if other_code else ''))
        print('verdict: ' + verdict(summary))
