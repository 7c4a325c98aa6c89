"""Seed plans: which seeds a trial runs, computed when read, never held (stats/trial.py explains the rules).

A plan of --runs 100000000 costs the memory of the seeds already logged, not of the seeds it plans; it compares
equal to the list of its items, so code and tests read it as a list.
"""
from collections.abc import Sequence


class LazySequence(Sequence):
    """A read-only sequence whose items are computed when read. It compares equal to a list of the same items, and
    a slice of it is a list (what one --gpus child gets: a share of a plan)."""

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self.item(i) for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(f'index {index} of a plan of {len(self)}')
        return self.item(index % len(self))

    def __eq__(self, other):
        return isinstance(other, Sequence) and len(self) == len(other) and all(a == b for a, b in zip(self, other))

    def __repr__(self):
        return repr(list(self)) if len(self) <= 20 else f'<{len(self)} items, {self[0]!r} to {self[-1]!r}>'


class SeedPlan(LazySequence):
    """The seeds of `span` (a range) that `logged` lacks, in order. They are not held: --runs 100000000 plans
    in the memory of the logged seeds (a list of them took 12 GB before the first run)."""

    def __init__(self, span, logged):
        self.span = span
        self.skipped_set = {span.index(seed) for seed in logged if seed in span}  # positions in span
        self.skipped = sorted(self.skipped_set)

    def __len__(self):
        return len(self.span) - len(self.skipped)

    def item(self, index):
        position = index
        for skipped in self.skipped:  # each skipped position at or before it moves it one place on
            if skipped > position:
                break
            position += 1
        return self.span[position]

    def __iter__(self):
        return (seed for position, seed in enumerate(self.span) if position not in self.skipped_set)

    def __contains__(self, seed):
        return seed in self.span and self.span.index(seed) not in self.skipped_set


class RunPlan(LazySequence):
    """(run index, seed) of each planned seed: run r has seed first + r."""

    def __init__(self, seeds, first):
        self.seeds, self.first = seeds, first

    def __len__(self):
        return len(self.seeds)

    def item(self, index):
        return self.seeds[index] - self.first, self.seeds[index]

    def __iter__(self):
        return ((seed - self.first, seed) for seed in self.seeds)


def next_seeds(first, count, logged):
    """The `count` smallest seeds >= first that are not in `logged`."""
    end = first + count
    for seed in sorted(seed for seed in logged if seed >= first):
        if seed >= end:
            break
        end += 1  # a logged seed inside the span takes one place of the plan: the span grows by one
    return SeedPlan(range(first, end), logged)


def shard_seeds(first, runs, shard, logged):
    """The seeds first + r, r < runs with r % N == K - 1, that are not in `logged`."""
    k, n = shard
    return SeedPlan(range(first + k - 1, first + runs, n), logged)


def format_seeds(seeds):
    if not seeds:
        return 'none'
    return ', '.join(map(str, seeds)) if len(seeds) <= 6 else f'{seeds[0]} to {seeds[-1]} ({len(seeds)} of them)'
