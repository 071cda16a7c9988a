"""Weight files at the command line: a run's checkpoint, a ``.safetensors`` or a PyTorch ``.pth``, into a model.

    state, settings = read_weights("runs/resnet20/best.npz")   # settings: the run's, or None for bare weights
    note = fit_weights(model, state, "fc", "resnet18.pth", "resnet18", replace_classifier=True)
    model, class_names, settings = model_from_weights("resnet18.pth", model="resnet18")

What each file holds:

* ``.npz``: a minidl checkpoint. The checkpoint of a training run (``checkpoint.npz``,
  ``best.npz``) has the model's state and the run's settings, which say what model it is
  and how its images were prepared; a checkpoint with only a ``model`` entry, or a bare
  state_dict, holds weights alone.
* ``.safetensors``: a state_dict (``minidl.weights.save_safetensors``, PyTorch's
  ``safetensors.torch.save_file``).
* ``.pth`` / ``.pt``: PyTorch's ``torch.save`` file, read without PyTorch
  (``minidl.weights.load_torch``): a state_dict (torchvision's published weights), or a
  checkpoint dict holding one under "state_dict" or "model". Keys saved from a
  ``DataParallel``/``DistributedDataParallel`` wrapper lose their common ``module.`` prefix.

Bare weights carry no settings: the caller names the model (``--model``, ``--variant``),
and ``raw_settings`` gives such weights the preprocessing of their architecture:
ImageNet's resize 256, crop 224 and mean/std for torchvision's ImageNet models,
CIFAR-10's per-image standardisation for the others.

``fit_weights`` is strict: every key of the model must be in the file with its shape.
The one exception, for fine-tuning, is the classifier (the model's last dense layer):
when the file's has another number of classes, the model keeps its fresh one.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..checkpoint import CheckpointError, load_checkpoint
from ..data import cifar10, imagenet
from ..weights import TORCH_ONLY_SUFFIX, load_torch, read_safetensors
from .models import build_model, classifier_name, describe_model, model_name, published_normalization
from .recipes import OLD_RUN_DEFAULTS

TORCH_SUFFIXES = (".pth", ".pt")
WRAPPER_PREFIX = "module."                      # what torch.nn.DataParallel puts before every key


class InputError(Exception):
    """A weights file (or image) that cannot be used: the message is the one line the user sees."""


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, np.ndarray) for v in obj.values())


def _torch_state(obj, path) -> dict:
    """The state_dict inside what ``load_torch`` read: the object itself, or its "state_dict"/"model" entry."""
    for candidate in (obj, *(obj.get(key) for key in ("state_dict", "model") if isinstance(obj, dict))):
        if _is_state_dict(candidate):
            state = dict(candidate)
            if all(key.startswith(WRAPPER_PREFIX) for key in state):
                state = {key[len(WRAPPER_PREFIX):]: value for key, value in state.items()}
            return state
    held = ", ".join(map(repr, list(obj)[:6])) if isinstance(obj, dict) else f"a {type(obj).__name__}"
    raise InputError(f"--weights: {path} holds no state_dict (a dict of tensors), nor a checkpoint with one "
                     f"under 'state_dict' or 'model' (it holds {held or 'nothing'})")


def _read_checkpoint(path):
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":  # every .npz is a zip; a cut-off one still starts like this
            raise InputError(f"--weights: {path} is not a minidl checkpoint (not an .npz file)")
    try:
        state = load_checkpoint(path)
    except CheckpointError as exc:
        raise InputError(f"--weights: {exc}") from None
    settings, weights = state.get("settings"), state.get("model")
    if isinstance(settings, dict) and _is_state_dict(weights) and ("model" in settings or "variant" in settings):
        return dict(weights), dict(OLD_RUN_DEFAULTS, **settings)
    if _is_state_dict(weights):
        return dict(weights), None
    if _is_state_dict(state):
        return dict(state), None
    raise InputError(f"--weights: {path} is a minidl checkpoint but not one of a training run (no model and "
                     "settings in it); use checkpoint.npz or best.npz of a `minidl train` run")


def read_weights(path):
    """The weights in ``path`` and, for the checkpoint of a training run, its settings.

    Returns:
        (state, settings): state maps key -> host NumPy array; settings is the run's
        (with the defaults of older runs filled in) or None for bare weights.
    Raises:
        InputError naming the file when it is missing or holds no weights.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"--weights: {path} is a directory; give a weights file (.npz, .safetensors or .pth)")
    if not path.is_file():
        raise InputError(f"--weights: {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            return dict(read_safetensors(path)), None
        if suffix in TORCH_SUFFIXES:
            return _torch_state(load_torch(path), path), None
    except (ValueError, ImportError) as exc:
        raise InputError(f"--weights: {exc}") from None
    return _read_checkpoint(path)


def _shapes(model) -> dict:
    shapes = {key: tuple(p.shape) for key, p in model.named_parameters()}
    shapes.update((key, tuple(b.shape)) for key, b in model.named_buffers())
    return shapes


def _some(keys) -> str:
    return ", ".join(keys[:3]) + (f" ... ({len(keys)} in all)" if len(keys) > 3 else "")


def fit_weights(model, state: dict, classifier: str, path, what: str, replace_classifier: bool = False):
    """Load ``state`` into ``model`` (in place), strictly, but for a classifier of another class count.

    Args:
        model: the freshly built model.
        state: key -> array, e.g. from ``read_weights``.
        classifier: the module name of the model's last dense layer ("fc", "fc8", "classifier.6").
        path, what: the file and the model in words, for the messages.
        replace_classifier: when the file's classifier has another number of classes
            (same input features), keep the model's fresh classifier instead (fine-tuning).

    Returns:
        None, or a line saying that the classifier was replaced.
    Raises:
        InputError, one line: keys missing on either side, or the first key whose
        shapes differ, with both shapes.
    """
    shapes = _shapes(model)
    state = dict(state)
    note = None
    weight = f"{classifier}.weight"
    theirs, ours = tuple(np.shape(state.get(weight))), shapes.get(weight)
    if replace_classifier and len(theirs) == 2 and ours is not None and theirs[1] == ours[1] and theirs[0] != ours[0]:
        for key in (weight, f"{classifier}.bias"):
            state.pop(key, None)
        own = dict(model.named_parameters())
        state.update((key, own[key].data) for key in (weight, f"{classifier}.bias") if key in own)
        note = (f"the classifier {classifier} of {path} has {theirs[0]} classes, this run {ours[0]}: it starts "
                "fresh, every other layer from the file")
    missing = [key for key in shapes if key not in state]
    unexpected = [key for key in state if key not in shapes and not key.endswith(TORCH_ONLY_SUFFIX)]
    if missing or unexpected:
        parts = ([f"the model's {_some(missing)} not in the file"] if missing else []) + \
                ([f"the file's {_some(unexpected)} not in the model"] if unexpected else [])
        raise InputError(f"--weights: {path} does not fit {what}: {'; '.join(parts)}")
    for key, shape in shapes.items():
        if tuple(np.shape(state[key])) != shape:
            raise InputError(f"--weights: {path} does not fit {what}: {key} is {tuple(np.shape(state[key]))} in the "
                             f"file but {shape} in the model")
    try:
        model.load_state_dict(state)
    except ValueError as exc:
        raise InputError(f"--weights: {path} does not fit {what}: {exc}") from None
    return note


def raw_settings(model: str, variant: str | None) -> dict:
    """The settings that bare weights of ``model`` are used with: the architecture's preprocessing.

    torchvision's ImageNet models: ImageNet's evaluation crop (shorter side 256, the
    central 224) and mean/std; airbench94: CIFAR-10's per-channel mean and std; the others:
    CIFAR-10's per-image standardisation and bilinear resize to the input size.
    """
    settings = {"model": model, "variant": (variant or "seed") if model == "alexnet" else None, "seed": 0}
    published = published_normalization(settings)
    if model == "airbench94":   # per-channel normalisation, with the official training images' statistics
        settings.update(dataset="cifar10", preprocess="channel", channel_mean=list(cifar10.MEAN),
                        channel_std=list(cifar10.STD))
    elif published is None:
        settings.update(dataset="cifar10", preprocess="standardize")
    else:
        settings.update(dataset="imagenet", normalize="channel", mean=published[0], std=published[1],
                        resize_size=imagenet.RESIZE_SIZE)
    return settings


def model_from_weights(path, model: str | None = None, variant: str | None = None, default_model: str | None = None):
    """The model a weights file is for, with those weights, in eval mode on the host; its class names.

    A training run's checkpoint rebuilds its own model (``model``/``variant``, when
    given, must agree with it); bare weights need ``model`` or a ``default_model``
    (and ``variant`` for an AlexNet, default "seed"). The number of classes comes from the classifier's
    weight; the names from the run's settings, else from ``model.meta`` (CIFAR-10's
    for 10 classes, ImageNet's for 1000 on the ImageNet architectures).

    Returns:
        (model, class_names, settings).
    Raises:
        InputError, one line naming the file.
    """
    state, settings = read_weights(path)
    if settings is None:
        model = model or default_model
        if model is None:
            raise InputError(f"--weights: {path} is weights only, not one of a training run (no "
                             "settings in it): name the model they are for with --model (and --variant for an "
                             "AlexNet)")
        settings = raw_settings(model, variant)
        what = describe_model(settings)
    else:
        differ = ([f"--model {model}"] if model is not None and model != model_name(settings) else []) + \
                 ([f"--variant {variant}"] if variant is not None and variant != settings.get("variant") else [])
        if differ:
            raise InputError(f"--weights: {path} is a run of {describe_model(settings)}, not {' '.join(differ)}; "
                             "drop --model and --variant for a training checkpoint")
        what = f"the model its settings describe ({describe_model(settings)})"
        dataset = settings.get("dataset", "cifar10")
        if dataset not in ("cifar10", "folder"):
            # Only these pipelines are known here; another data set's evaluation
            # transform must be added before its runs can be classified exactly.
            raise InputError(f"--weights: {path} was trained on the {dataset!r} data set; minidl predict knows the "
                             "evaluation transforms of CIFAR-10 and image-folder runs only")
    classifier = classifier_name(settings)
    weight = state.get(f"{classifier}.weight")
    if weight is None or weight.ndim != 2:
        raise InputError(f"--weights: {path} holds no {describe_model(settings)} weights (no {classifier}.weight)")
    num_classes = int(weight.shape[0])
    try:
        net = build_model(settings, num_classes)
    except ValueError as exc:
        raise InputError(f"--weights: {path} does not fit {what}: {exc}") from None
    fit_weights(net, state, classifier, path, what)
    names = settings.get("class_names") or net.meta.class_names
    if names is None:
        raise InputError(f"--weights: {path} has {num_classes} classes but no class names in its settings")
    if len(names) != num_classes:
        raise InputError(f"--weights: {path} names {len(names)} classes but its model has {num_classes}")
    return net.eval(), [str(name) for name in names], settings
