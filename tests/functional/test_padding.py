"""F.pad against PyTorch's constant padding, its gradient, and the layout a channels-last input keeps."""
import numpy as np
import pytest

import minidl
import minidl.functional as F
import minidl.kernels
from minidl.gradcheck import check_gradients

from support.arrays import channels_last, is_channels_last


@pytest.mark.parametrize("shape,pad", [((2, 3, 4, 5), (1, 2)), ((2, 3, 4, 5), (1, 0, 2, 3)),
                                       ((2, 3, 4, 5), (0, 0, 0, 0, 4, 4)), ((3, 4), (-1, 2, 1, -2)),
                                       ((2, 3, 4, 5), (2, -1, -1, 0, 1, 0))])
def test_pad_matches_pytorch_forward_and_backward(kernel_mode, shape, pad):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.pad(tx, pad, value=0.5)
    gy = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(gy))
    mx = minidl.tensor(x, requires_grad=True)
    my = F.pad(mx, pad, value=0.5)
    my.backward(gy)
    np.testing.assert_array_equal(my.numpy(), ty.detach().numpy())
    np.testing.assert_array_equal(mx.grad.numpy(), tx.grad.numpy())
    mx.grad = None
    check_gradients(lambda t: F.pad(t, pad), [mx])


def test_a_channels_last_input_and_its_strided_views_keep_their_layout():
    x = channels_last(np.random.default_rng(1).standard_normal((2, 4, 6, 6)))
    for data in (x, x[:, :, ::2, ::2]):                     # the ResNet shortcut pads the subsampled map
        t = minidl.tensor(data, requires_grad=True)
        with minidl.kernels.use("fast"):
            y = F.pad(t, (0, 0, 0, 0, 2, 2))
            y.backward(np.ones(y.shape))
        assert is_channels_last(y.data)
        np.testing.assert_array_equal(y.numpy()[:, 2:6], np.asarray(data))
        np.testing.assert_array_equal(y.numpy()[:, :2], 0)
        assert t.grad.shape == data.shape and (t.grad.numpy() == 1).all()


def test_errors():
    x = minidl.tensor(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="pad: pad must be an even number of ints"):
        F.pad(x, (1, 2, 3))
    with pytest.raises(ValueError, match="pad: 3 dimensions to pad, but input has shape"):
        F.pad(x, (1, 1, 1, 1, 1, 1))
    with pytest.raises(ValueError, match="mode='constant'"):
        F.pad(x, (1, 1), mode="reflect")
    with pytest.raises(ValueError, match="crops more than"):
        F.pad(x, (-2, -2))
