"""n-seed trials, the JSON Lines results log, their statistics, the README table and the ladder diff report.

Rungs use `stats.Trial` (trial.py). `python -m stats --help` lists the commands: summary, compare, merge,
table, figure, ladder.
"""
from stats.summary import compare, describe, verdict
from stats.trial import Trial
