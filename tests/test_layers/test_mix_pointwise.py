# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Tests of MixGroupedPointwise (MixNet's grouped 1x1 conv with uneven splits)
against one ``nn.Conv2d`` per channel part, concatenated."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mm_efficientconv.layers import MixGroupedPointwise

TOL = 1e-5


def test_import_paths():
    from mm_efficientconv.layers.mix_pointwise import MixGroupedPointwise as a
    from mm_efficientconv.layers.mixconv import MixGroupedPointwise as b
    assert a is b is MixGroupedPointwise


def _ref_grouped(layer, x):
    outs, i0, o0 = [], 0, 0
    for kernel, ci, co in zip(layer.kernels, layer.in_splits, layer.out_splits):
        conv = nn.Conv2d(ci, co, 1, layer.stride, bias=layer.bias is not None).double()
        with torch.no_grad():
            conv.weight.copy_(kernel)
            if layer.bias is not None:
                conv.bias.copy_(layer.bias[o0:o0 + co])
        outs.append(conv(x.double()[:, i0:i0 + ci]))
        i0 += ci
        o0 += co
    return torch.cat(outs, 1)


@pytest.mark.parametrize('cin,cout,n,splits,even', [
    (16, 24, 2, ([8, 8], [12, 12]), True),
    (20, 30, 3, ([8, 6, 6], [10, 10, 10]), False),
    (10, 14, 4, ([4, 2, 2, 2], [5, 3, 3, 3]), False),
    (24, 12, 3, ([8, 8, 8], [4, 4, 4]), True),
])
@pytest.mark.parametrize('bias', [True, False])
@pytest.mark.parametrize('stride', [1, 2])
def test_grouped_pointwise(cin, cout, n, splits, even, bias, stride):
    torch.manual_seed(0)
    layer = MixGroupedPointwise(cin, cout, stride=stride, bias=bias, num_splits=n)
    assert (list(layer.in_splits), list(layer.out_splits)) == splits
    assert layer.even == even and layer.groups == 1
    assert sum(p.numel() for p in layer.parameters()) == \
        sum(i * o for i, o in zip(*splits)) + (cout if bias else 0)
    x = torch.randn(2, cin, 7, 7)
    expected = _ref_grouped(layer, x)
    assert (layer(x).double() - expected).abs().max() <= TOL
    with torch.no_grad():
        assert (layer(x).double() - expected).abs().max() <= TOL
    # Block-diagonal dense weight.
    weight = layer.weight
    assert weight.shape == (cout, cin, 1, 1)
    y = F.conv2d(x, weight, layer.bias, layer.stride, layer.padding, layer.dilation, layer.groups)
    assert (y.double() - expected).abs().max() <= TOL
    mask = torch.zeros(cout, cin, dtype=torch.bool)
    o0 = i0 = 0
    for ci, co in zip(*splits):
        mask[o0:o0 + co, i0:i0 + ci] = True
        o0, i0 = o0 + co, i0 + ci
    assert torch.count_nonzero(weight[..., 0, 0][~mask]) == 0
    # Gradients.
    layer(x).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())
    # Deploy.
    state = copy.deepcopy(layer.state_dict())
    deployed = layer.switch_to_deploy()
    if even:
        assert type(deployed) is nn.Conv2d and deployed.groups == n
        assert layer.plain and layer.groups == n
        assert layer.weight.shape == (cout, cin // n, 1, 1)
        y = F.conv2d(x, layer.weight, layer.bias, layer.stride, layer.padding, layer.dilation,
                     layer.groups)
        assert (y.double() - expected).abs().max() <= TOL
        assert sum(p.numel() for p in deployed.parameters()) == \
            sum(p.numel() for p in layer.parameters())
        # The deployed checkpoint loads into a split layer, and back.
        fresh = MixGroupedPointwise(cin, cout, stride=stride, bias=bias, num_splits=n)
        fresh.load_state_dict(deployed.state_dict())
        assert (fresh(x).double() - expected).abs().max() <= TOL
        layer.load_state_dict(state)
    else:
        assert deployed is layer and layer.deploy and not layer.plain
    assert (deployed(x).double() - expected).abs().max() <= TOL
    assert (layer.switch_to_deploy()(x).double() - expected).abs().max() <= TOL  # idempotent


def test_grouped_pointwise_dense_weight_loads_and_plain_mode():
    torch.manual_seed(0)
    src = MixGroupedPointwise(10, 14, num_splits=4)
    dense = {'weight': src.weight.detach().clone(), 'bias': src.bias.detach().clone()}
    dst = MixGroupedPointwise(10, 14, num_splits=4)
    dst.load_state_dict(dense)
    x = torch.randn(1, 10, 5, 5)
    assert (dst(x) - src(x)).abs().max() <= TOL
    plain = MixGroupedPointwise(10, 14, num_splits=1)
    assert plain.plain and sorted(plain.state_dict()) == ['bias', 'weight']
    assert plain.weight.shape == (14, 10, 1, 1)
    assert type(plain.switch_to_deploy()) is nn.Conv2d


@pytest.mark.parametrize('kwargs,word', [
    (dict(kernel_size=3), 'kernel_size'),
    (dict(groups=2), 'groups'),
    (dict(num_splits=0), 'num_splits'),
    (dict(num_splits=9), 'num_splits'),
])
def test_grouped_pointwise_bad_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        MixGroupedPointwise(8, 8, **kwargs)


def test_default_init_and_tf_part_init():
    torch.manual_seed(0)
    layer = MixGroupedPointwise(64, 96, num_splits=2)
    for kernel in layer.kernels:  # PyTorch's default, each part a conv of its own
        assert kernel.abs().max() <= 1 / kernel.shape[1]**0.5 + 1e-6
    layer.kaiming_init_parts()  # TF MixNet's init (MixNet.init_weights)
    assert torch.count_nonzero(layer.bias) == 0
    for kernel in layer.kernels:
        std = (2.0 / kernel.shape[0])**0.5
        assert 0.8 * std < kernel.std().item() < 1.2 * std
    assert not hasattr(layer, 'init_weights')


def test_written_dense_kernel_keeps_the_blocks():
    torch.manual_seed(0)
    src = MixGroupedPointwise(10, 14, num_splits=3)
    dst = MixGroupedPointwise(10, 14, num_splits=3)
    dst.weight.data.copy_(src.weight)
    assert all(torch.equal(a, b) for a, b in zip(src.kernels, dst.kernels))


def test_float64():
    pw = MixGroupedPointwise(10, 14, num_splits=3).double()
    xp = torch.randn(1, 10, 4, 4, dtype=torch.float64)
    assert (pw(xp) - _ref_grouped(pw, xp)).abs().max() < 1e-12


def test_even_splits_one_grouped_conv_on_the_cpu_split_elsewhere(monkeypatch):
    """The CPU runs even splits as one grouped conv; other devices (a GPU,
    where cuDNN's grouped 1x1 conv is slower) split/concat. ``meta`` stands in
    for a non-CPU device here."""
    import mm_efficientconv.layers.mix_pointwise as module
    calls, conv2d = [], F.conv2d

    def spy(x, weight, *args):
        calls.append(args[-1] if len(args) == 5 else 1)
        return conv2d(x, weight, *args)

    monkeypatch.setattr(module.F, 'conv2d', spy)
    layer = MixGroupedPointwise(8, 12, num_splits=2)
    x = torch.randn(2, 8, 5, 5)
    want = conv2d(x, layer.weight, layer.bias)  # the block-diagonal dense kernel
    calls.clear()
    torch.testing.assert_close(layer(x), want)
    assert calls == [2]
    calls.clear()
    out = layer.to('meta')(x.to('meta').contiguous(memory_format=torch.channels_last))
    assert calls == [1, 1] and out.shape == (2, 12, 5, 5)
