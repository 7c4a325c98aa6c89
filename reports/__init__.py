"""Reports on the results logs, and their command line: `python -m reports summary|compare|merge|table|figure|
ladder|sidebyside` (`--help` for each).

table.py writes the README's results table, figure.py plots time against accuracy, ladder.py lists the rungs
and checks that each step of the ladder adds one feature, sidebyside.py runs one of our rungs against the
published airbench. reports imports stats (the logs and their statistics) and common; stats never imports
reports, so a rung's run path does not load them.
"""
