"""airbench94's network written in torch.nn, for comparing minidl's against it (same module names and keys).

Written from the paper's description (arXiv 2404.00498), as minidl's is: a 2x2 whitening
convolution with bias, GELU, three blocks of conv 3x3 -> max pool 2 -> BN -> GELU ->
conv 3x3 -> BN -> GELU, a global max pool, a bias-free head scaled by 1/9. Only the
forward matters here: the weights are loaded from minidl's state_dict.
Import only where PyTorch is installed (``pytest.importorskip("torch")`` first).
"""
import torch
from torch import nn


class Block(nn.Sequential):
    def __init__(self, cin, cout, eps, momentum):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = nn.BatchNorm2d(cout, eps=eps, momentum=momentum)
        self.act1 = nn.GELU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(cout, eps=eps, momentum=momentum)
        self.act2 = nn.GELU()


class Airbench94(nn.Module):
    def __init__(self, num_classes=10, widths=(64, 256, 256), eps=1e-12, momentum=0.4, scale=1 / 9):
        super().__init__()
        self.whiten = nn.Conv2d(3, 24, 2, bias=True)
        self.act = nn.GELU()
        self.block1 = Block(24, widths[0], eps, momentum)
        self.block2 = Block(widths[0], widths[1], eps, momentum)
        self.block3 = Block(widths[1], widths[2], eps, momentum)
        self.pool = nn.MaxPool2d(3)
        self.head = nn.Linear(widths[2], num_classes, bias=False)
        self.scale = scale

    def forward(self, x):
        x = self.act(self.whiten(x))
        x = self.block3(self.block2(self.block1(x)))
        return self.head(torch.flatten(self.pool(x), 1)) * self.scale
