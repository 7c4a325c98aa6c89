"""Benchmark results (speed, not accuracy) as evidence: one row per benchmark run, appended to
results/bench/<benchmark>__<hardware>.jsonl with the same provenance as a training run's row."""
from pathlib import Path

from stats import provenance
from stats.log import append_row

BENCH = 'bench'  # the folder under results/; the README table leaves it out


def record_bench(benchmark, device, measurements, settings, out='results'):
    """Appends {benchmark, settings, measurements, provenance} and returns the log's path."""
    name = provenance.device_name(device)
    path = Path(out) / BENCH / f'{benchmark}__{provenance.slugify(name)}.jsonl'
    append_row(path, {'benchmark': benchmark, 'settings': settings, 'measurements': measurements, 'device': name,
                      'date': provenance.utc_now(), 'git_commit': provenance.git_commit(Path(__file__).parent, out),
                      'versions': provenance.versions(), 'gpu_info': provenance.gpu_info(device)})
    return path
