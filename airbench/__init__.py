"""This project's GPU-resident CIFAR-10 loader package (not the pip package `airbench`, which it does not use):
the uint8 dataset kept on the device, flips, translations and cutout done in batched tensor ops (augment.py), no
CPU workers. data.py finds and checks the files; bench.py times epochs; flags.py declares --data-dir and --subset."""
from airbench.data import load_cifar10
from airbench.loader import CifarLoader, load_data
from airbench.flags import FLAGS
