#!/usr/bin/env python3
"""Train AlexNet on CIFAR-10 (or a folder of your own images) with minidl, on a GPU (CuPy) or the CPU (NumPy).

    python examples/alexnet_cifar10.py --device cuda                 # the "seed" model, 224x224
    python examples/alexnet_cifar10.py --variant cifar --device cpu  # minutes on a laptop
    python examples/alexnet_cifar10.py --variant cifar --resume      # continue a stopped run
    mpiexec -n 2 python examples/alexnet_cifar10.py --variant cifar  # data-parallel, 2 processes
    python examples/alexnet_cifar10.py --dataset folder --data-dir photos/ --variant paper   # photos/<class>/*.jpg

The same as ``minidl train`` (this script is its thin wrapper; read the code in
minidl/cli/train.py, recipes.py and datasets.py). Everything the run produces goes
to --out: history.csv, checkpoint.npz, best.npz, results.json and (with
matplotlib) curves.png and filters.png. ``--help`` lists every flag and recipe.

Exit codes: 0 done, 1 an error (message on stderr), 2 bad arguments, 3 the loss
became NaN/infinite (the last good checkpoint is kept), 130 interrupted (Ctrl-C).

Needs minidl importable: ``pip install -e .`` in the project's root (or PYTHONPATH).
"""
import sys

from minidl.cli import train

if __name__ == "__main__":
    sys.exit(train.main(prog="alexnet_cifar10"))
