"""examples/pytorch_cifar10_tutorial.py: PyTorch's CIFAR-10 tutorial, ported line by line, runs end to end.

The script is the test of the conventions a PyTorch user meets first (import minidl as
torch, nn.CrossEntropyLoss, torch.flatten, torch.max(outputs, 1), labels.size(0),
(predicted == labels).sum().item(), a tensor as an index, torch.save/load): any of them
breaking stops it.
"""
import os
import re
import subprocess
import sys

import minidl

from support.cifar_fixture import write_cifar10
from support.commands import EXAMPLES, ROOT


def test_the_ported_tutorial_trains_tests_and_saves(tmp_path):
    write_cifar10(tmp_path / "data", n_per_batch=8, n_test=12)
    out = tmp_path / "cifar_net.pth"
    done = subprocess.run([sys.executable, str(EXAMPLES / "pytorch_cifar10_tutorial.py"), "--data-dir",
                           str(tmp_path / "data"), "--epochs", "1", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "Finished Training"
    assert re.fullmatch(r"Accuracy of the network on the 12 test images: \d+ %", lines[1])
    assert len([line for line in lines if line.startswith("Accuracy for class:")]) == 10
    state = minidl.load(out)
    assert list(state) == ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight", "fc1.bias",
                           "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"]
