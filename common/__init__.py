"""Plumbing the scripts and packages share: one-line errors and stops (errors.py), flags (flags.py), atomic files
(files.py), the timer and the per-epoch table (table.py), provenance (provenance.py). It imports none of the
project's other packages, and nothing here at package level: `python -m reports` reads logs without loading torch.
"""
