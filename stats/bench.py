"""Benchmark results (speed, not accuracy) as evidence: one row per benchmark run, appended to
results/bench/<benchmark>__<hardware>.jsonl with the same provenance as a training run's row."""
from pathlib import Path

from common import provenance
from stats.log import append_row

BENCH = 'bench'  # the folder under results/; the README table leaves it out


def record_bench(benchmark, device, measurements, settings, out='results'):
    """Appends {benchmark, settings, measurements, provenance} and returns the log's path."""
    fields = provenance.provenance(None, device, out)  # no script_sha256: the commit names the benchmark's code
    path = Path(out) / BENCH / f'{benchmark}__{provenance.slugify(fields["device"])}.jsonl'
    append_row(path, {'benchmark': benchmark, 'settings': settings, 'measurements': measurements, **fields})
    return path
