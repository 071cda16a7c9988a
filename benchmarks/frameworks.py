"""The benchmarked networks and the three frameworks that run them (used by bench_models.py).

Networks (``--model``): minidl's AlexNet variants (``--variant``; 10 classes, as
bench_alexnet), the CIFAR ResNets resnet20..resnet110 (32x32, 10 classes) and
torchvision's resnet18/resnet34 (224x224, 1000 classes). Each is built by minidl
with seed 0, so every process builds the same weights.

Frameworks, each in a process of its own:
  minidl        trains the model (zero_grad, forward, softmax cross-entropy, backward,
                SGD with momentum) and infers with it in eval mode under no_grad, both
                the model as it is ("plain") and ``nn.fuse_for_inference(model)`` ("fused")
  torch         the same network built in PyTorch (benchmarks/torch_alexnet.py for
                AlexNet's seed/paper/cifar variants, tests/support/torch_models.py for
                torchvision's AlexNet and the ResNets: same state_dict keys) with minidl's
                weights copied in; trains and infers the same way
  onnxruntime   minidl's own ONNX export of the unfused model (``minidl.onnx.export``),
                run by an InferenceSession on the CPU provider with default session
                options and threads (``--threads N`` sets intra_op_num_threads); inference only
"""
from __future__ import annotations

import copy
import sys
from dataclasses import dataclass

import numpy as np

import common
import minidl
import minidl.functional as F
from common import sync
from minidl import backend, nn
from minidl import models as zoo
from minidl.models.alexnet import INPUT_SIZE
from minidl.optim import SGD

LR, MOMENTUM = 0.001, 0.9
RESNETS = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet18", "resnet34")
MODELS = ("alexnet",) + RESNETS
TORCHVISION_RESNETS = ("resnet18", "resnet34")


@dataclass(frozen=True)
class ModelSpec:
    """Which network: ``model`` (one of MODELS), AlexNet's ``variant``, the number of classes."""

    model: str
    variant: str | None = None
    num_classes: int | None = None

    @property
    def name(self) -> str:
        return f"alexnet-{self.variant}" if self.model == "alexnet" else self.model

    @property
    def input_size(self) -> int:
        if self.model == "alexnet":
            return INPUT_SIZE[self.variant]
        return 224 if self.model in TORCHVISION_RESNETS else 32

    @property
    def classes(self) -> int:
        if self.num_classes:
            return self.num_classes
        return 1000 if self.model in TORCHVISION_RESNETS else 10


def model_spec(model: str, variant: str = "seed", num_classes: int | None = None) -> ModelSpec:
    """The ModelSpec of a command line's --model, --variant, --num-classes (ValueError if unknown)."""
    if model not in MODELS:
        raise ValueError(f"bench_models: --model must be one of {MODELS}, got {model!r}")
    if model == "alexnet" and variant not in INPUT_SIZE:
        raise ValueError(f"bench_models: --variant must be one of {tuple(INPUT_SIZE)}, got {variant!r}")
    return ModelSpec(model, variant if model == "alexnet" else None, num_classes)


def build_minidl(spec: ModelSpec):
    """minidl's network for ``spec`` (seed 0)."""
    if spec.model == "alexnet":
        return zoo.AlexNet(num_classes=spec.classes, variant=spec.variant)
    return getattr(zoo, spec.model)(num_classes=spec.classes)


def build_torch_twin(spec: ModelSpec, minidl_model):
    """The same network in PyTorch with ``minidl_model``'s weights and batch-norm statistics copied in."""
    import torch
    if spec.model == "alexnet" and spec.variant != "torchvision":
        from torch_alexnet import TorchAlexNet, copy_minidl_weights
        twin = TorchAlexNet(num_classes=spec.classes, variant=spec.variant)
        copy_minidl_weights(twin, minidl_model)
        return twin
    tests = str(common.ROOT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    from support import torch_models
    if spec.model == "alexnet":
        twin = torch_models.AlexNet(num_classes=spec.classes)
    elif spec.model in TORCHVISION_RESNETS:
        twin = getattr(torch_models, spec.model)(num_classes=spec.classes)
    else:
        twin = torch_models.cifar_resnet(int(spec.model[len("resnet"):]), num_classes=spec.classes)
    state = {k: torch.from_numpy(np.array(v, copy=True)) for k, v in minidl_model.state_dict().items()}
    missing, unexpected = twin.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"build_torch_twin: keys differ for {spec.name}; missing {missing}, unexpected {unexpected}")
    return twin


def make_batch(spec: ModelSpec, batch: int, seed: int = 0):
    """Random float32 images (N,3,S,S) and int64 labels (N,) on the host (bench_alexnet's for AlexNet)."""
    rng = np.random.default_rng(seed)
    s = spec.input_size
    return rng.standard_normal((batch, 3, s, s), dtype=np.float32), rng.integers(0, spec.classes, batch)


class MinidlRunner:
    """minidl's model, its SGD and one batch; the fused model is built at its first use."""

    name = "minidl"

    def __init__(self, spec, device, images, labels):
        self.device = device
        self.model = build_minidl(spec).to(device)
        self.optimizer = SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)
        self.x = minidl.tensor(images, device=device)
        self.labels = backend.to_device(labels, device)
        self.fused = None
        self.loss = None

    def train_step(self):
        self.optimizer.zero_grad()
        loss = F.softmax_cross_entropy(self.model(self.x), self.labels)
        loss.backward()
        self.optimizer.step()
        sync(self.device)
        self.loss = loss

    def infer(self):
        with minidl.no_grad():
            self.model(self.x)
        sync(self.device)

    def fuse(self):
        """Build the fused model from the model's current weights (in eval mode)."""
        self.fused = nn.fuse_for_inference(self.model)

    def infer_fused(self):
        if self.fused is None:
            self.fuse()
        with minidl.no_grad():
            self.fused(self.x)
        sync(self.device)

    def last_loss(self) -> float:
        return float(self.loss.item()) if self.loss is not None else float("nan")

    def fusion(self) -> dict:
        """What the rewrite changed: layer types -> count, in the model and in the fused model."""
        if self.fused is None:
            self.fuse()
        return {"plain": _layer_counts(self.model), "fused": _layer_counts(self.fused)}


def _layer_counts(model) -> dict:
    counts = {}
    for _, module in model.named_modules():
        if not any(True for _ in module.named_children()):
            counts[type(module).__name__] = counts.get(type(module).__name__, 0) + 1
    return counts


class TorchRunner:
    """The torch twin (minidl's weights), its SGD and the same batch."""

    name = "torch"

    def __init__(self, spec, device, images, labels):
        import torch
        self.torch, self.device = torch, device
        tdev = common.torch_device(device)
        self.model = build_torch_twin(spec, build_minidl(spec)).to(tdev)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)
        self.x = torch.from_numpy(images).to(tdev)
        self.labels = torch.from_numpy(labels).to(tdev)
        self.loss = None

    def train_step(self):
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.torch.nn.functional.cross_entropy(self.model(self.x), self.labels)
        loss.backward()
        self.optimizer.step()
        sync(self.device)
        self.loss = loss

    def infer(self):
        with self.torch.no_grad():
            self.model(self.x)
        sync(self.device)

    def last_loss(self) -> float:
        return float(self.loss.item()) if self.loss is not None else float("nan")

    def dense_flops(self, images: int = 2) -> dict:
        """FLOPs per image of a training step (forward + backward) and of inference, counted on a copy.

        torch.utils.flop_counter.FlopCounterMode counts the matrix products and
        convolutions as if done directly (2 * multiply-adds; backward: the input and
        weight gradients asked for); batch norm, ReLU, pooling and the SGD update are
        not counted. Counted on ``images`` images of the batch (FLOPs scale with the batch).
        """
        from torch.utils.flop_counter import FlopCounterMode
        torch = self.torch
        model = copy.deepcopy(self.model)
        x, labels = self.x[:images], self.labels[:images]
        n = x.shape[0]
        model.train()
        with FlopCounterMode(display=False) as counter:
            torch.nn.functional.cross_entropy(model(x), labels).backward()
        train = counter.get_total_flops()
        model.eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x)
        return {"train_per_image": train / n, "infer_per_image": counter.get_total_flops() / n,
                "images_counted": n, "counted_by": "torch.utils.flop_counter.FlopCounterMode on the torch twin"}


class OnnxRuntimeRunner:
    """An InferenceSession on minidl's ONNX export: CPU provider, default options (threads unless ``threads``)."""

    name = "onnxruntime"

    def __init__(self, path, images, threads: int = 0):
        import onnxruntime
        self.onnxruntime = onnxruntime
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.feed = {self.session.get_inputs()[0].name: np.ascontiguousarray(images)}
        self.threads = threads or "default (one per physical core)"

    def infer(self):
        self.session.run(None, self.feed)


def export_onnx(spec: ModelSpec, path) -> str | None:
    """Write minidl's ONNX export of ``spec``'s unfused model (variable batch) to ``path``; None if it worked,
    else the error as text."""
    import minidl.onnx
    try:
        minidl.onnx.export(build_minidl(spec), path, (3, spec.input_size, spec.input_size))
    except Exception as error:  # reported, not hidden: the benchmark goes on without ONNX Runtime
        return f"{type(error).__name__}: {error}"
    return None
