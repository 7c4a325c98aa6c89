"""The GPU-resident CIFAR-10 loader: the uint8 dataset kept on the device, flips, translations and cutout done
in batched tensor ops (augment.py), no CPU workers. data.py finds and checks the files; bench.py times epochs."""
from cifar_loader.data import load_cifar10
from cifar_loader.loader import CifarLoader, load_data
from cifar_loader.flags import FLAGS
