"""`python -m stats` was the reports' command line until the run path and the reports were split."""
import sys

sys.exit('error: the reports moved: use python -m reports (summary, compare, merge, table, figure, ladder, '
         'sidebyside)')
