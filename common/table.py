"""The per-epoch table every script prints, and the CUDA-event timer it reports.

Columns: run | epoch | train_loss | train_acc | val_acc | tta_val_acc | time_seconds. Rows come from an
explicit dict; a missing entry prints blank.
"""
import math
import sys
import time

import torch

from common import errors

COLUMNS = ['run', 'epoch', 'train_loss', 'train_acc', 'val_acc', 'tta_val_acc', 'time_seconds']
WIDTH = 12


def format_cell(value):
    if isinstance(value, float):
        return f'{value:.4f}'
    return '' if value is None else str(value)


def print_table_header():
    print('| ' + ' | '.join(name.center(WIDTH) for name in COLUMNS) + ' |')
    print('|' + '|'.join('-' * (WIDTH + 2) for _ in COLUMNS) + '|')


def print_table_row(row):
    unknown = set(row) - set(COLUMNS)
    if unknown:
        raise KeyError(f'not table columns: {sorted(unknown)}')
    print('| ' + ' | '.join(format_cell(row.get(name)).rjust(WIDTH) for name in COLUMNS) + ' |', flush=True)


def check_finite_loss(run, epoch, train_loss):
    """train_loss, or a one-line stop when it is NaN or infinite: a diverged run is no result (common/errors.py)."""
    if not math.isfinite(train_loss):
        raise errors.diverged(run, f'its training loss is {train_loss} at epoch {epoch}')
    return train_loss


class Timer:
    """Accumulates the seconds spent inside `with timer:` blocks. On CUDA it records events and
    synchronizes at each stop, so queued GPU work is counted in the block that issued it; on the CPU it
    reads the wall clock."""

    def __init__(self, device):
        self.cuda = torch.device(device).type == 'cuda'
        self.seconds = 0.0

    def __enter__(self):
        if self.cuda:
            self.start = torch.cuda.Event(enable_timing=True)
            self.start.record()
        else:
            self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            torch.cuda.synchronize()
            self.seconds += 1e-3 * self.start.elapsed_time(end)
        else:
            self.seconds += time.perf_counter() - self.start


def reset_peak_memory(device):
    if torch.device(device).type == 'cuda':
        torch.cuda.reset_peak_memory_stats()


def peak_memory_bytes(device):
    return torch.cuda.max_memory_allocated() if torch.device(device).type == 'cuda' else None


def compiled_graphs():
    """How many graphs torch.compile has made in this process so far (0 without it)."""
    from torch._dynamo.utils import counters
    return counters['stats']['unique_graphs']


def warn_if_compiled(run, graphs_before):
    """A timed run that compiles pays for it inside its timer: the untimed warm-up run should have met every
    shape, mode and flag (requires_grad included) that a timed run meets."""
    new = compiled_graphs() - graphs_before
    if new and run != 'warmup':
        print(f'warning: run {run} compiled {new} new graph{"s" * (new != 1)} after the warm-up run: its time '
              'includes compilation', file=sys.stderr)
