"""The ``minidl`` command: ``minidl train``, ``minidl predict``, ``minidl layers``.

    minidl train --variant cifar --device cpu                       # train AlexNet on CIFAR-10
    minidl train --model resnet20                                   # or a ResNet
    minidl predict cat.jpg --weights runs/alexnet_cifar/best.npz     # classify your own images
    minidl layers --data-dir ~/data                                 # one image, layer by layer

Installed as a console script (``[project.scripts]`` in pyproject.toml); ``python -m
minidl`` runs the same. One module per subcommand, each with ``main(argv, prog)``
returning the exit code: ``train`` (with ``recipes``, the run's settings, and
``datasets``, its data), ``predict`` and ``layers`` (with ``layer_pictures``);
``models`` (which model, building it), ``model_files`` (weight files into a model) and
``common`` hold what they share. Every failure is one line on stderr and a non-zero exit code, never a
traceback. The scripts in examples/ call these same functions.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .common import ArgumentParser

# name -> (module, one line of help)
COMMANDS = {
    "train": ("train", "train AlexNet or a ResNet on CIFAR-10 or a folder of your own images"),
    "predict": ("predict", "classify your own images with a trained checkpoint or a .pth (top-5 classes)"),
    "layers": ("layers", "one image through a network (the seed AlexNet by default), layer by layer"),
}


def command(name: str):
    """The module of subcommand ``name`` (imported on first use: ``minidl --help`` stays quick)."""
    return importlib.import_module(f"{__name__}.{COMMANDS[name][0]}")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__
    listing = "\n".join(f"  {name:<9}{text}" for name, (_, text) in COMMANDS.items())
    p = ArgumentParser(prog="minidl", usage="minidl [--version] COMMAND [ARGS ...]",
                       description="minidl, a from-scratch deep learning engine: its command line.",
                       epilog=f"commands:\n{listing}\n\n`minidl COMMAND --help` shows a command's options.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"minidl {__version__}")
    p.add_argument("command", metavar="COMMAND", choices=sorted(COMMANDS), help=", ".join(COMMANDS))
    return p


def main(argv=None) -> int:
    """Run ``minidl COMMAND ARGS``; returns the exit code (2 for an unknown command, as argparse)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in COMMANDS:
        return command(argv[0]).main(argv[1:], prog=f"minidl {argv[0]}")
    build_parser().parse_args(argv[:1])   # --help, --version, or a usage error naming the commands
    return 2
