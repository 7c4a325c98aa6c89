"""The run path: n-seed trials, the JSON Lines results log, the statistics a trial reports, benchmark rows.

Rungs use `stats.Trial` (trial.py) and `stats.FLAGS` (flags.py), nothing else from here. The reports on the logs
(summaries, the README table, the figure, the ladder check, the side-by-side) are in reports/:
`python -m reports --help`.
"""
from stats.flags import FLAGS
from stats.trial import Trial
