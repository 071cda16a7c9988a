#!/usr/bin/env python3
"""Classify your own images with a trained model: the top-5 classes and their probabilities.

    python examples/predict.py cat.jpg truck.png --weights runs/alexnet_cifar/best.npz
    python examples/predict.py cat.jpg --weights resnet18-f37072fd.pth --model resnet18   # torchvision's weights

The same as ``minidl predict`` (this script is its thin wrapper; the code is in
minidl/cli/predict.py): the model comes from the checkpoint that
examples/alexnet_cifar10.py (``minidl train``) wrote, and each image is prepared
exactly as that run's evaluation images were. Needs Pillow: ``pip install -e ".[images]"``.

Exit codes: 0 every image classified, 1 an error (one line on stderr per bad
image or for a bad weights file; good images are still classified), 2 bad arguments.
"""
import sys

from minidl.cli import predict

if __name__ == "__main__":
    sys.exit(predict.main(prog="predict"))
