#!/usr/bin/env python3
"""One CIFAR-10 image through the seed AlexNet (or --model), one layer at a time: the reading guide's companion.

    python examples/layer_by_layer.py --data-dir ../shared/data             # test image 0, fresh weights
    python examples/layer_by_layer.py --model resnet20 --data-dir ../shared/data   # a residual network
    python examples/layer_by_layer.py --index 7 --weights runs/alexnet_seed/best.npz  # a trained model

The same as ``minidl layers`` (this script is its thin wrapper; the walk is in
minidl/cli/layers.py): for every layer, what it computes, the output-size
arithmetic, the parameter count and the output's statistics, then the class
probabilities; with matplotlib, pictures of the input, the filters, the
architecture and every feature map in --out, and the autograd graph of the loss.
"""
import sys

from minidl.cli import layers

if __name__ == "__main__":
    sys.exit(layers.main(prog="layer_by_layer"))
