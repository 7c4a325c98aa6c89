"""Shared pieces of the ladder: the GPU-resident CIFAR-10 loader, flags, the per-epoch table, the timer."""
from airbench.data import load_cifar10
from airbench.errors import UserError
from airbench.flags import parse_flags
from airbench.loader import CifarLoader, load_data
from airbench.table import (Timer, compiled_graphs, peak_memory_bytes, print_table_header, print_table_row,
                            reset_peak_memory, warn_if_compiled)
