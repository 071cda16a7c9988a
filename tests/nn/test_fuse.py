"""nn.fuse_for_inference: the rewritten model computes the evaluation-mode outputs, with fewer layers."""
import numpy as np
import pytest

import minidl
import minidl.nn as nn
from minidl.gradcheck import check_gradients
from minidl.models import AlexNet


def _with_statistics(model, seed=0):
    """Random running statistics and affine maps, so that folding them is tested, not skipped."""
    rng = np.random.default_rng(seed)
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            c = module.num_features
            if module.running_mean is not None:
                module.running_mean[...] = rng.standard_normal(c) * 0.3
                module.running_var[...] = rng.uniform(0.5, 2.0, c)
            if module.weight is not None:
                module.weight.data[...] = rng.uniform(0.5, 1.5, c)
                module.bias.data[...] = rng.standard_normal(c) * 0.1
    return model


def _logits(model, x):
    with minidl.no_grad():
        return model(minidl.tensor(x)).numpy()


@pytest.mark.parametrize("variant,batch", [("cifar", 6), ("paper", 2), ("seed", 2)])
def test_alexnets_fused_give_their_evaluation_logits(kernel_mode, variant, batch):
    model = _with_statistics(AlexNet(variant=variant, num_classes=10, widths=None))
    s = model.input_size
    x = np.random.default_rng(1).standard_normal((batch, 3, s, s)).astype(np.float32)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    fast = nn.fuse_for_inference(model)
    want = _logits(model.eval(), x)
    np.testing.assert_allclose(_logits(fast, x), want, rtol=2e-5, atol=2e-5 * np.abs(want).max())
    for k, v in model.state_dict().items():      # the model itself is untouched
        np.testing.assert_array_equal(v, before[k])
    kinds = [type(m).__name__ for _, m in fast.named_children()]
    assert "BatchNorm2d" not in kinds and "Dropout" not in kinds
    if variant != "paper":                       # LRN sits between the paper's ReLUs and pools
        assert kinds.count("ReLUMaxPool2d") == 3 and "ReLU" not in kinds[:kinds.index("Flatten")]
    assert all(not p.requires_grad for p in fast.parameters())


def test_a_sequential_folds_conv_and_linear_batch_norms_and_drops_the_identities():
    rng = np.random.default_rng(3)
    model = _with_statistics(nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False, rng=rng), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1, rng=rng), nn.BatchNorm2d(8, track_running_stats=False),   # not foldable
        nn.ReLU(), nn.Dropout(0.5), nn.Identity(), nn.Flatten(),
        nn.Linear(8 * 4 * 4, 6, rng=rng), nn.BatchNorm1d(6), nn.Linear(6, 3, rng=rng)))
    fast = nn.fuse_for_inference(model)
    kinds = [type(m).__name__ for m in fast.children()]
    assert kinds == ["FusedConv2d", "ReLUMaxPool2d", "FusedConv2d", "BatchNorm2d", "ReLU", "Flatten",
                     "FusedLinear", "Linear"]
    x = rng.standard_normal((5, 3, 8, 8)).astype(np.float32)
    model.eval()
    # the unfoldable batch norm normalises with the batch's statistics in both
    np.testing.assert_allclose(_logits(fast, x), _logits(model, x), rtol=1e-5, atol=1e-5)


def test_gradients_through_a_fused_model_are_those_of_the_unfused_ops():
    rng = np.random.default_rng(4)
    model = _with_statistics(nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, rng=rng, dtype=np.float64),
                                           nn.BatchNorm2d(4, dtype=np.float64), nn.ReLU(), nn.MaxPool2d(2)))
    fast = nn.fuse_for_inference(model)
    x = minidl.tensor(rng.standard_normal((2, 2, 6, 6)), requires_grad=True)
    check_gradients(fast, [x])


def test_errors():
    with pytest.raises(TypeError, match="fuse_for_inference: expected a minidl Module"):
        nn.fuse_for_inference(lambda x: x)


@pytest.mark.parametrize("stem", ["cifar", "imagenet"])
def test_resnets_fused_fold_every_batch_norm_and_give_their_evaluation_logits(kernel_mode, stem):
    from minidl.models.resnet import FusedBasicBlock, ResNet
    # option A shortcuts for the CIFAR stem, option B (1x1 conv + batch norm, folded too) for ImageNet's
    model = _with_statistics(ResNet((2, 1), 10, stem=stem, widths=(16, 32), seed=2))
    size = 32 if stem == "cifar" else 48
    x = np.random.default_rng(5).standard_normal((3, 3, size, size)).astype(np.float32)
    fast = nn.fuse_for_inference(model)
    want = _logits(model.eval(), x)
    np.testing.assert_allclose(_logits(fast, x), want, rtol=2e-5, atol=2e-5 * np.abs(want).max())
    kinds = [type(m).__name__ for m in fast.modules()]
    assert "BatchNorm2d" not in kinds and kinds.count("FusedBasicBlock") == 3
    assert all(type(b) is FusedBasicBlock for stage in (fast.layer1, fast.layer2) for b in stage.children())
    assert fast.summary(print_fn=None).count("FusedConv2d") >= 6     # summaries still open the blocks


def test_the_copy_leaves_gradients_and_hooks_behind_and_shares_a_process_group():
    class Group:                                  # stands in for a communicator, which cannot be copied
        def all_reduce(self, values, op):
            return values

        def __deepcopy__(self, memo):
            raise AssertionError("the process group was copied")

    rng = np.random.default_rng(6)
    group = Group()
    model = nn.Sequential(nn.Conv2d(2, 3, 3, rng=rng), nn.SyncBatchNorm(3, track_running_stats=False,
                                                                         process_group=group),
                          nn.Flatten(), nn.Linear(12, 2, rng=rng))
    dense = model[3]                              # a layer the rewrite keeps as it is
    dense.weight.grad = np.ones_like(dense.weight.data)
    dense.weight.register_post_accumulate_grad_hook(lambda leaf: None)
    fast = nn.fuse_for_inference(model)
    assert type(fast[3]) is nn.Linear and fast[3].weight is not dense.weight
    assert fast[3].weight.grad is None and fast[3].weight._grad_hooks is None
    assert fast[1].process_group is group         # unfoldable (no running statistics), so it stays, synchronised
    assert dense.weight.grad is not None and dense.weight._grad_hooks    # the model keeps its own
