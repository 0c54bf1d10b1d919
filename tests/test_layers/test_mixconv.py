# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Tests of MixConv / MixGroupedPointwise against naive references written from
the MixConv paper: (a) one independent depthwise ``nn.Conv2d`` per channel
group, concatenated; (b) one depthwise conv whose kernel holds every group's
kernel zero-padded (and, for the dilated variant, dilated) to the largest."""
import io

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import mm_efficientconv.layers.mixconv  # noqa: F401  (registers the layers)
from mm_efficientconv.layers import cached_kernels
from mm_efficientconv.layers.deploy import switch_to_deploy
from mm_efficientconv.layers.mixconv import MixConv, MixGroupedPointwise, split_channels

TOL = 1e-5
PADDING_MODES = ('zeros', 'reflect', 'replicate', 'circular')

# (constructor kwargs, expected input splits)
CASES = [
    (dict(c=24, kernel_sizes=(3, 5, 7)), [8, 8, 8]),
    (dict(c=20, kernel_sizes=(3, 5, 7, 9)), [5, 5, 5, 5]),
    (dict(c=10, num_kernels=2), [5, 5]),
    (dict(c=10, kernel_sizes=(3, 5, 7)), [4, 3, 3]),
    (dict(c=32, kernel_sizes=(3, 5, 7, 9), split='exp'), [16, 8, 4, 4]),
    (dict(c=12, m=2, kernel_sizes=(3, 5, 7)), [4, 4, 4]),
    (dict(c=11, m=2, kernel_sizes=(3, 5), split='exp'), [5, 6]),
    (dict(c=12, stride=2, kernel_sizes=(3, 5, 7)), [4, 4, 4]),
    (dict(c=12, dilated=True, kernel_sizes=(3, 5, 7, 9)), [3, 3, 3, 3]),
    (dict(c=12, dilated=True, num_kernels=3, stride=2), [4, 4, 4]),  # dilated ignored
    (dict(c=12, dilation=2, kernel_sizes=(3, 5)), [6, 6]),
    (dict(c=9, k=5, kernel_sizes=(3, 5, 7), split='exp'), [4, 2, 3]),
    (dict(c=8, k=1, stride=(2, 1), kernel_sizes=(1, 3)), [4, 4]),
]


def _build(c, m=1, k=3, stride=1, dilation=1, bias=True, padding_mode='zeros', **kwargs):
    torch.manual_seed(0)
    layer = MixConv(c, c * m, k, stride=stride, padding=dilation * (k - 1) // 2,
                    dilation=dilation, groups=c, bias=bias, padding_mode=padding_mode, **kwargs)
    with torch.no_grad():  # non-trivial values everywhere, bias included
        for p in layer.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return layer


def _kernel_list(kwargs):
    if 'kernel_sizes' in kwargs:
        return list(kwargs['kernel_sizes'])
    return [2 * i + 3 for i in range(kwargs['num_kernels'])]


def _group_geometry(layer, kwargs):
    """(kernel, dilation multiplier) per group, from the paper's rules."""
    dilated = kwargs.get('dilated', False) and layer.stride == (1, 1)
    return [(3, (k - 1) // 2) if dilated and k > 3 else (k, 1) for k in _kernel_list(kwargs)]


def ref_per_group(layer, kwargs, x):
    """(a) Independent depthwise nn.Conv2d per group on its channel slice."""
    outs, start, ostart = [], 0, 0
    m = layer.out_channels // layer.in_channels
    D = layer.dilation
    for i, (ci, (k, g)) in enumerate(zip(layer.in_splits, _group_geometry(layer, kwargs))):
        dil = (g * D[0], g * D[1])
        conv = nn.Conv2d(ci, ci * m, k, layer.stride, padding=(dil[0] * (k - 1) // 2,
                                                               dil[1] * (k - 1) // 2),
                         dilation=dil, groups=ci, bias=layer.bias is not None,
                         padding_mode=layer.padding_mode).double()
        with torch.no_grad():
            conv.weight.copy_(layer.kernels[i])
            if layer.bias is not None:
                conv.bias.copy_(layer.bias[ostart:ostart + ci * m])
        outs.append(conv(x.double()[:, start:start + ci]))
        start += ci
        ostart += ci * m
    return torch.cat(outs, 1)


def ref_dense_kernel(layer, kwargs):
    """(b) The zero-padded (and dilated) single depthwise kernel, tap by tap."""
    geometry = _group_geometry(layer, kwargs)
    K = max(g * (k - 1) + 1 for k, g in geometry)
    weight = torch.zeros(layer.out_channels, 1, K, K, dtype=torch.float64)
    row = 0
    m = layer.out_channels // layer.in_channels
    for i, (ci, (k, g)) in enumerate(zip(layer.in_splits, geometry)):
        kern = layer.kernels[i].detach().double()
        centre = K // 2
        for a in range(k):
            for b in range(k):
                weight[row:row + ci * m, 0, centre + (a - k // 2) * g,
                       centre + (b - k // 2) * g] = kern[:, 0, a, b]
        row += ci * m
    return weight


def ref_dense(layer, kwargs, x):
    weight = ref_dense_kernel(layer, kwargs)
    K = weight.shape[-1]
    D = layer.dilation
    ph, pw = D[0] * (K - 1) // 2, D[1] * (K - 1) // 2
    x = x.double()
    if layer.padding_mode == 'zeros':
        x = F.pad(x, (pw, pw, ph, ph))
    else:
        x = F.pad(x, (pw, pw, ph, ph), mode=layer.padding_mode)
    bias = None if layer.bias is None else layer.bias.double()
    return F.conv2d(x, weight, bias, layer.stride, 0, D, layer.in_channels)


def _input(layer, size=13):
    torch.manual_seed(1)
    return torch.randn(2, layer.in_channels, size, size)


def _pad_for(layer, x):
    if layer.padding_mode == 'zeros':
        return x, layer.padding
    ph, pw = layer.padding
    return F.pad(x, (pw, pw, ph, ph), mode=layer.padding_mode), 0


# ----------------------------------------------------------------- splitting
def test_split_channels_rules():
    assert split_channels(32, 4, 'exp') == [16, 8, 4, 4]
    assert split_channels(10, 3) == [4, 3, 3]
    assert split_channels(10, 3, 'equal') == [4, 3, 3]
    assert split_channels(24, 3) == [8, 8, 8]
    assert split_channels(7, 1, 'exp') == [7]
    assert split_channels(9, 3, 'exp') == [4, 2, 3]
    assert split_channels(2, 3) == [2, 0, 0]  # zeros are reported, callers reject them
    with pytest.raises(ValueError, match='split'):
        split_channels(8, 2, 'uniform')
    with pytest.raises(ValueError, match='num_groups'):
        split_channels(8, 0)


@pytest.mark.parametrize('kwargs,splits', CASES)
def test_splits_and_attributes(kwargs, splits):
    layer = _build(**kwargs)
    m = kwargs.get('m', 1)
    assert list(layer.in_splits) == splits
    assert list(layer.out_splits) == [s * m for s in splits]
    geometry = _group_geometry(layer, kwargs)
    K = max(g * (k - 1) + 1 for k, g in geometry)
    assert layer.kernel_size == (K, K)
    D = layer.dilation
    assert layer.padding == (D[0] * (K - 1) // 2, D[1] * (K - 1) // 2)
    assert layer.groups == layer.in_channels
    assert not layer.plain
    assert [tuple(p.shape) for p in layer.kernels] == [
        (s * m, 1, k, k) for s, (k, _) in zip(splits, geometry)]
    assert tuple(layer.weight.shape) == (layer.out_channels, 1, K, K)
    assert sorted(dict(layer.named_parameters())) == sorted(
        [f'kernels.{i}' for i in range(len(splits))] + ['bias'])
    rep = repr(layer)
    for word in ('kernel_sizes=', 'splits=', 'dilated=', 'fuse='):
        assert word in rep


# --------------------------------------------------------------- equivalence
@pytest.mark.parametrize('bias', [True, False])
@pytest.mark.parametrize('padding_mode', PADDING_MODES)
@pytest.mark.parametrize('kwargs,splits', CASES)
def test_matches_references(kwargs, splits, padding_mode, bias):
    layer = _build(bias=bias, padding_mode=padding_mode, **kwargs)
    x = _input(layer)
    expected = ref_per_group(layer, kwargs, x)
    # The two paper-derived references agree with each other ...
    assert (ref_dense(layer, kwargs, x) - expected).abs().max() < 1e-10
    # ... and both evaluation paths of the layer agree with them.
    y_split = layer.forward_split(x)
    y_fused = layer.forward_fused(x)
    assert y_split.shape == expected.shape
    assert (y_split.double() - expected).abs().max() <= TOL
    assert (y_fused.double() - expected).abs().max() <= TOL
    for fuse in ('never', 'always', 'auto'):
        layer.fuse_mode = fuse
        assert (layer(x).double() - expected).abs().max() <= TOL
    # The reported dense kernel is the paper's zero-padded kernel.
    assert (layer.weight.double() - ref_dense_kernel(layer, kwargs)).abs().max() == 0
    # And F.conv2d with the reported geometry reproduces the layer.
    xp, pad = _pad_for(layer, x)
    y = F.conv2d(xp, layer.weight, layer.bias, layer.stride, pad, layer.dilation, layer.groups)
    assert (y.double() - expected).abs().max() <= TOL


@pytest.mark.parametrize('kwargs,splits', CASES[:1] + CASES[4:6] + CASES[8:9])
def test_gradients_reach_every_parameter(kwargs, splits):
    grads = {}
    for fuse in ('never', 'always', 'auto'):
        layer = _build(fuse=fuse, **kwargs).train()
        x = _input(layer).requires_grad_()
        weight = torch.randn_like(layer(x))
        (layer(x) * weight).sum().backward()
        for name, p in layer.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        grads[fuse] = {n: p.grad.clone() for n, p in layer.named_parameters()}
        grads[fuse]['x'] = x.grad.clone()
    for fuse in ('always', 'auto'):
        for name, g in grads['never'].items():
            # Gradients sum over every output position: compare relatively.
            scale = max(1.0, g.abs().max().item())
            assert (grads[fuse][name] - g).abs().max() <= TOL * scale, (fuse, name)


@pytest.mark.parametrize('padding_mode', ['zeros', 'reflect'])
@pytest.mark.parametrize('channels_last_input', [False, True])
def test_memory_format_is_kept(channels_last_input, padding_mode):
    kwargs = dict(c=12, kernel_sizes=(3, 5, 7))
    layer = _build(padding_mode=padding_mode, **kwargs)
    x = _input(layer)
    fmt = torch.channels_last if channels_last_input else torch.contiguous_format
    x = x.contiguous(memory_format=fmt).requires_grad_()
    expected = ref_per_group(layer, kwargs, x.detach())
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            y = layer(x)
        assert y.is_contiguous(memory_format=fmt)
        assert (y.double() - expected).abs().max() <= TOL
    layer(x).sum().backward()
    assert x.grad.shape == x.shape and all(k.grad is not None for k in layer.kernels)
    # the gradient reaching the op before the layer (not a leaf: autograd
    # does not restride it) has the format a stock depthwise conv gives
    stock = torch.nn.Conv2d(12, 12, 3, padding=1, groups=12, padding_mode=padding_mode)
    strides = []
    for conv in (layer, stock):
        h = x.detach().clone().requires_grad_() * 1.0
        h.register_hook(lambda g: strides.append(g.stride()))
        conv(h).sum().backward()
    assert strides[0] == strides[1], strides


def test_auto_picks_split_with_grad_and_fused_without():
    layer = _build(c=12, kernel_sizes=(3, 5, 7))
    calls = []
    split, fused = layer.forward_split, layer.forward_fused
    layer.forward_split = lambda x: calls.append('split') or split(x)
    layer.forward_fused = lambda x: calls.append('fused') or fused(x)
    x = _input(layer)
    layer.train()
    layer(x)
    with torch.no_grad():
        layer(x)
    layer.eval()
    layer(x)  # eval mode but gradients requested: still exact, split path
    with torch.no_grad():
        layer(x)
    for p in layer.parameters():
        p.requires_grad_(False)
    layer(x)  # frozen layer, input needs no grad
    layer(x.requires_grad_())  # gradient w.r.t. the input only
    assert calls == ['split', 'fused', 'split', 'fused', 'fused', 'split']


# ---------------------------------------------------------------- plain mode
@pytest.mark.parametrize('groups', [1, 2])
def test_plain_mode_for_dense_and_grouped_call_sites(groups):
    torch.manual_seed(3)
    layer = MixConv(8, 16, 3, stride=2, padding=1, groups=groups, kernel_sizes=(3, 5, 7),
                    split='exp', dilated=True)
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=groups)
    assert layer.plain and sorted(layer.state_dict()) == ['bias', 'weight']
    assert layer.kernel_size == (3, 3) and layer.groups == groups
    # Initialised as nn.Conv2d initialises itself.
    torch.manual_seed(3)
    expected = nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=groups)
    assert torch.equal(layer.weight, expected.weight) and torch.equal(layer.bias, expected.bias)
    # Same parameters, same function as nn.Conv2d.
    conv.load_state_dict(layer.state_dict())
    with torch.no_grad():
        layer.bias.normal_()
        conv.bias.copy_(layer.bias)
    x = torch.randn(2, 8, 9, 9)
    assert (layer(x) - conv(x)).abs().max() <= TOL
    assert isinstance(layer.weight, nn.Parameter)
    deployed = layer.switch_to_deploy()
    assert type(deployed) is nn.Conv2d and (deployed(x) - conv(x)).abs().max() <= TOL
    # An odd padding is fine at a plain call site (no centring needed).
    assert MixConv(8, 8, 3, padding=0, kernel_sizes=(3, 5)).plain


@pytest.mark.parametrize('padding', [0, 2, (0, 1)])
def test_plain_mode_keeps_the_call_site_padding(padding):
    torch.manual_seed(4)
    layer = MixConv(8, 8, 3, padding=padding, groups=8)
    conv = nn.Conv2d(8, 8, 3, padding=padding, groups=8)
    assert layer.plain and layer.padding == conv.padding
    conv.load_state_dict(layer.state_dict())
    x = torch.randn(2, 8, 9, 9)
    assert layer(x).shape == conv(x).shape
    assert (layer(x) - conv(x)).abs().max() <= TOL
    assert (layer.switch_to_deploy()(x) - conv(x)).abs().max() <= TOL


def test_plain_mode_for_a_single_kernel():
    layer = MixConv(8, 8, 3, padding=1, groups=8)
    assert layer.plain and layer.kernel_size == (3, 3) and layer.groups == 8
    layer = MixConv(8, 8, 3, padding=1, groups=8, kernel_sizes=(5, ))
    assert layer.plain and layer.kernel_size == (5, 5) and layer.padding == (2, 2)
    assert layer.weight.shape == (8, 1, 5, 5)
    layer = MixConv(8, 8, 3, padding=1, groups=8, num_kernels=1)
    assert layer.plain and layer.kernel_size == (3, 3)
    # The dilated variant of a single 7x7 group is a 3x3 conv with dilation 3.
    layer = MixConv(8, 8, 3, padding=1, groups=8, kernel_sizes=(7, ), dilated=True)
    assert layer.plain and layer.kernel_size == (3, 3) and layer.dilation == (3, 3)
    assert layer.padding == (3, 3)
    x = torch.randn(1, 8, 10, 10)
    assert layer(x).shape == x.shape
    # One input channel: nothing to mix.
    assert MixConv(1, 4, 3, padding=1, groups=1, kernel_sizes=(3, 5)).plain


@pytest.mark.parametrize('kwargs,word', [
    (dict(kernel_sizes=(3, 5), num_kernels=2), 'num_kernels'),
    (dict(kernel_sizes=(3, 4)), 'kernel_sizes'),
    (dict(kernel_sizes=()), 'kernel_sizes'),
    (dict(kernel_sizes=(3, 0)), 'kernel_sizes'),
    (dict(num_kernels=0), 'num_kernels'),
    (dict(kernel_sizes=(3, 5), split='uniform'), 'split'),
    (dict(kernel_sizes=(3, 5), fuse='sometimes'), 'fuse'),
    (dict(kernel_sizes=(3, 5), padding=0), 'padding'),
    (dict(kernel_sizes=(3, 5), padding=2), 'padding'),
    (dict(kernel_size=2, padding=1, kernel_sizes=(3, 5)), 'padding'),
    (dict(kernel_sizes=(3, 5), dilated=True, dilation=2, padding=2), 'dilation'),
    (dict(c=2, kernel_sizes=(3, 5, 7)), 'kernel_sizes'),
    (dict(c=2, kernel_sizes=(3, 5, 7)), 'in_channels'),
    (dict(c=4, kernel_sizes=(3, 5, 7, 9), split='exp'), r'\[2, 1, 0, 1\]'),
])
def test_bad_arguments(kwargs, word):
    kwargs = dict(kwargs)
    c = kwargs.pop('c', 8)
    call = dict(kernel_size=3, padding=1)
    call.update(kwargs)
    with pytest.raises(ValueError, match=word):
        MixConv(c, c, groups=c, **call)


def test_bad_arguments_are_rejected_at_plain_call_sites_too():
    with pytest.raises(ValueError, match='fuse'):
        MixConv(8, 8, 1, fuse='yes')
    with pytest.raises(ValueError, match='kernel_sizes'):
        MixConv(8, 8, 1, kernel_sizes=(2, 4))


# --------------------------------------------------------------------- cache
def test_fused_kernel_cached_only_inside_a_scope():
    layer = _build(c=12, kernel_sizes=(3, 5, 7)).eval()
    x = _input(layer)
    calls = []
    compose = layer.compute_weight
    layer.compute_weight = lambda: calls.append(1) or compose()
    with torch.no_grad():
        y0 = layer(x)
        layer(x)
        assert len(calls) == 2  # no implicit cache
        layer.kernels[0].data.mul_(2)  # a write that bypasses version counters
        assert (layer(x) - layer.forward_split(x)).abs().max() <= TOL
        assert (layer(x) - y0).abs().max() > 1e-3
        with cached_kernels():
            calls.clear()
            y1 = layer(x)
            assert torch.equal(layer(x), y1) and len(calls) == 1
            layer.kernels[1].add_(0.25)  # in-place update under no_grad: re-keyed
            assert (layer(x) - layer.forward_split(x)).abs().max() <= TOL
            assert len(calls) == 2
            # dtype changes re-key the entry
            layer.double()
            assert layer(x.double()).dtype == torch.float64
            layer.float()
    # training with gradients never uses the cache, even in a scope
    layer.train()
    layer.fuse_mode = 'always'
    with cached_kernels():
        calls.clear()
        layer(x).sum().backward()
        layer(x).sum().backward()
        assert len(calls) == 2
    assert all(k.grad is not None for k in layer.kernels)


# -------------------------------------------------------------------- deploy
@pytest.mark.parametrize('padding_mode', PADDING_MODES)
@pytest.mark.parametrize('kwargs,splits', [CASES[1], CASES[5], CASES[7], CASES[8], CASES[10]])
def test_switch_to_deploy(kwargs, splits, padding_mode):
    layer = _build(padding_mode=padding_mode, **kwargs)
    x = _input(layer)
    expected = ref_per_group(layer, kwargs, x)
    K = layer.kernel_size
    conv = layer.switch_to_deploy()
    assert type(conv) is nn.Conv2d
    assert conv.groups == layer.in_channels and conv.kernel_size == K
    assert conv.padding_mode == padding_mode
    assert (conv(x).double() - expected).abs().max() <= TOL
    # In place: a plain depthwise conv holding the padded kernel.
    assert layer.plain and layer.deploy and isinstance(layer.weight, nn.Parameter)
    assert sorted(layer.state_dict()) == ['bias', 'weight']
    assert (layer(x).double() - expected).abs().max() <= TOL
    # Idempotent.
    again = layer.switch_to_deploy()
    assert type(again) is nn.Conv2d and (again(x).double() - expected).abs().max() <= TOL
    # The deployed state dict loads back into a transform-mode MixConv.
    fresh = _build(padding_mode=padding_mode, **kwargs)
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    fresh.load_state_dict(conv.state_dict())
    assert not fresh.plain
    assert (fresh.forward_split(x).double() - expected).abs().max() <= TOL
    # And a training checkpoint loads into the layer deployed in place.
    layer.load_state_dict(fresh.state_dict())
    assert (layer(x).double() - expected).abs().max() <= TOL


def test_model_level_switch_to_deploy():
    torch.manual_seed(0)
    model = nn.Sequential(
        MixConv(8, 16, 1),  # dense 1x1: plain
        MixConv(16, 16, 3, padding=1, groups=16, kernel_sizes=(3, 5, 7)),
        nn.BatchNorm2d(16),
        MixConv(16, 32, 3, stride=2, padding=1, groups=16, num_kernels=2, split='exp'),
        MixGroupedPointwise(32, 16, num_splits=2),
        MixGroupedPointwise(16, 10, num_splits=3),
    ).eval()
    x = torch.randn(2, 8, 11, 11)
    with torch.no_grad():
        expected = model(x)
        assert switch_to_deploy(model) is model
        assert not any(isinstance(m, MixConv) for m in model.modules())
        assert isinstance(model[5], MixGroupedPointwise) and model[5].deploy  # uneven
        assert type(model[4]) is nn.Conv2d and model[4].groups == 2
        assert (model(x) - expected).abs().max() <= TOL
        switch_to_deploy(model)
        assert (model(x) - expected).abs().max() <= TOL


def test_stock_depthwise_checkpoint_loads_function_preserving():
    torch.manual_seed(0)
    stock = nn.Conv2d(12, 12, 3, padding=1, groups=12)
    layer = MixConv(12, 12, 3, padding=1, groups=12, kernel_sizes=(3, 5, 7))
    layer.load_state_dict(stock.state_dict())
    x = torch.randn(2, 12, 9, 9)
    assert (layer.forward_split(x) - stock(x)).abs().max() <= TOL
    with pytest.raises(RuntimeError, match='cannot load'):
        layer.load_state_dict({'weight': torch.zeros(12, 2, 3, 3), 'bias': torch.zeros(12)})


def test_default_init_and_tf_group_init():
    torch.manual_seed(0)
    layer = MixConv(24, 48, 3, padding=1, groups=24, kernel_sizes=(3, 5, 7))
    plain = MixConv(8, 8, 1)
    # PyTorch's default per-group nn.Conv2d init (timm's MixedConv2d start)
    for k, kernel in zip((3, 5, 7), layer.kernels):
        assert kernel.abs().max() <= 1 / k + 1e-6
    assert plain.weight.abs().max() <= 1 / 8**0.5
    for m in (layer, plain):
        m.kaiming_init_parts()  # TF MixNet's init (MixNet.init_weights)
        assert torch.count_nonzero(m.bias) == 0
    for k, kernel in zip((3, 5, 7), layer.kernels):
        std = (2.0 / (kernel.shape[0] * k * k))**0.5  # kaiming, fan_out, relu
        assert 0.6 * std < kernel.std().item() < 1.4 * std
    assert not hasattr(layer, 'init_weights')  # a stock conv has none


# ------------------------------------------------------- dtypes and export
def test_float64():
    kwargs = dict(c=12, kernel_sizes=(3, 5, 7), dilated=True)
    layer = _build(**kwargs).double()
    x = _input(layer).double()
    expected = ref_per_group(layer, kwargs, x)
    assert layer.forward_split(x).dtype == torch.float64
    assert (layer.forward_split(x) - expected).abs().max() < 1e-12
    assert (layer.forward_fused(x) - expected).abs().max() < 1e-12


def test_cpu_autocast_bf16():
    kwargs = dict(c=12, kernel_sizes=(3, 5, 7))
    layer = _build(**kwargs)
    x = _input(layer)
    expected = ref_per_group(layer, kwargs, x)
    scale = expected.abs().max().item()
    for fuse in ('never', 'always'):
        layer.fuse_mode = fuse
        with torch.autocast('cpu', dtype=torch.bfloat16):
            y = layer(x)
            y.float().sum().backward()
        assert y.dtype == torch.bfloat16
        assert (y.double() - expected).abs().max() <= 3e-2 * scale
        assert all(k.grad is not None for k in layer.kernels)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        layer.fuse_mode = 'auto'
        y = layer(x)
    assert y.dtype == torch.bfloat16 and (y.double() - expected).abs().max() <= 3e-2 * scale


def _deployed_example():
    kwargs = dict(c=12, kernel_sizes=(3, 5, 7, 9), dilated=True)
    layer = _build(**kwargs)
    x = _input(layer)
    expected = ref_per_group(layer, kwargs, x)
    return layer.switch_to_deploy().eval(), x, expected


def test_jit_trace_deploy_form():
    conv, x, expected = _deployed_example()
    with torch.no_grad():
        traced = torch.jit.trace(conv, x)
        assert (traced(x).double() - expected).abs().max() <= TOL


def test_jit_trace_transform_form_in_inference():
    kwargs = dict(c=12, kernel_sizes=(3, 5, 7))
    layer = _build(**kwargs).eval()
    x = _input(layer)
    with torch.no_grad():
        traced = torch.jit.trace(layer, x)
        assert (traced(x).double() - ref_per_group(layer, kwargs, x)).abs().max() <= TOL


def test_onnx_export_deploy_form():
    onnx = pytest.importorskip('onnx')
    conv, x, expected = _deployed_example()
    buf = io.BytesIO()
    torch.onnx.export(conv, (x, ), buf, input_names=['x'], output_names=['y'],
                      opset_version=17, dynamo=False)
    model = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(model)
    ops = [node.op_type for node in model.graph.node]
    assert ops == ['Conv']
    group = [a.i for a in model.graph.node[0].attribute if a.name == 'group']
    assert group == [12]
    ort = pytest.importorskip('onnxruntime')
    sess = ort.InferenceSession(buf.getvalue(), providers=['CPUExecutionProvider'])
    (y, ) = sess.run(None, {'x': x.numpy()})
    assert (torch.from_numpy(y).double() - expected).abs().max() <= TOL


# ------------------------------------------------------ OpenMMLab and timm
def test_conv_module():
    cnn = pytest.importorskip('mmcv.cnn')
    torch.manual_seed(0)
    cfg = dict(type='MixConv', kernel_sizes=(3, 5, 7))
    module = cnn.ConvModule(16, 16, 3, padding=1, groups=16, conv_cfg=cfg,
                            norm_cfg=dict(type='BN'), act_cfg=dict(type='ReLU'))
    assert isinstance(module.conv, MixConv) and not module.conv.plain
    assert module.conv.kernel_sizes == (3, 5, 7)
    before = [k.detach().clone() for k in module.conv.kernels]
    module.init_weights()  # ConvModule's kaiming_init writes the layer's weight
    assert all(not torch.equal(a, b) for a, b in zip(before, module.conv.kernels))
    std = (2 / (16 * 7 * 7))**0.5  # kaiming fan-out of the reported (16, 1, 7, 7) kernel
    values = torch.cat([k.detach().flatten() for k in module.conv.kernels])
    assert 0.7 * std < values.std().item() < 1.3 * std
    x = torch.randn(2, 16, 10, 10, requires_grad=True)
    y = module(x)
    assert y.shape == (2, 16, 10, 10)
    y.sum().backward()
    assert all(k.grad is not None for k in module.conv.kernels)
    # The 1x1 and dense call sites through build_conv_layer stay plain.
    pw = cnn.build_conv_layer(cfg, 16, 32, 1)
    assert isinstance(pw, MixConv) and pw.plain


def _check_mmpretrain_backbone(backbone, n_dw):
    mixed = [m for m in backbone.modules() if isinstance(m, MixConv) and not m.plain]
    plain = [m for m in backbone.modules() if isinstance(m, MixConv) and m.plain]
    assert len(mixed) == n_dw and len(plain) > 0
    assert all(m.groups == m.in_channels for m in mixed)
    assert all(m.groups != m.in_channels or m.in_channels == 1 for m in plain)
    backbone.train()
    x = torch.randn(2, 3, 64, 64)
    outs = backbone(x)
    sum(o.mean() for o in outs).backward()
    assert all(k.grad is not None for m in mixed for k in m.kernels)
    backbone.eval()
    with torch.no_grad():
        expected = backbone(x)
        switch_to_deploy(backbone)
        assert not any(isinstance(m, MixConv) for m in backbone.modules())
        for a, b in zip(backbone(x), expected):
            assert (a - b).abs().max() <= 1e-4 * max(1.0, b.abs().max().item())


def test_mmpretrain_mobilenet_v2():
    pytest.importorskip('mmcv.cnn')
    backbones = pytest.importorskip('mmpretrain.models.backbones')
    torch.manual_seed(0)
    cfg = dict(type='MixConv', kernel_sizes=(3, 5, 7))
    model = backbones.MobileNetV2(widen_factor=0.5, conv_cfg=cfg)
    model.init_weights()
    _check_mmpretrain_backbone(model, n_dw=17)


def test_mmpretrain_mobilenet_v3_small():
    pytest.importorskip('mmcv.cnn')
    backbones = pytest.importorskip('mmpretrain.models.backbones')
    torch.manual_seed(0)
    cfg = dict(type='MixConv', kernel_sizes=(3, 5, 7))
    model = backbones.MobileNetV3(arch='small', conv_cfg=cfg)
    model.init_weights()
    mixed = [m for m in model.modules() if isinstance(m, MixConv) and not m.plain]
    assert all(m.kernel_size == (7, 7) for m in mixed)
    _check_mmpretrain_backbone(model, n_dw=11)


@pytest.mark.parametrize('channels,stride,dilation,mult,bias', [
    (24, 1, 1, 1, False), (26, 1, 1, 1, True), (26, 2, 1, 1, True), (24, 1, 2, 1, False),
    (24, 1, 1, 2, True), (24, 2, 1, 2, False)])
def test_matches_timm_mixed_conv2d(channels, stride, dilation, mult, bias):
    layers = pytest.importorskip('timm.layers')
    torch.manual_seed(0)
    sizes = [3, 5, 7]
    theirs = layers.MixedConv2d(channels, channels * mult, sizes, stride=stride,
                                dilation=dilation, depthwise=True, bias=bias)
    ours = MixConv(channels, channels * mult, 3, stride=stride, padding=dilation,
                   dilation=dilation, groups=channels, bias=bias, kernel_sizes=sizes)
    assert list(ours.in_splits) == list(theirs.splits)
    with torch.no_grad():
        for i, conv in enumerate(theirs.values()):
            ours.kernels[i].copy_(conv.weight)
        if bias:
            ours.bias.copy_(torch.cat([c.bias for c in theirs.values()]))
    x = torch.randn(2, channels, 12, 12)
    expected = theirs(x)
    assert (ours.forward_split(x) - expected).abs().max() <= TOL
    assert (ours.forward_fused(x) - expected).abs().max() <= TOL


def test_channels_last_slices_off_the_cpu(monkeypatch):
    """Off the CPU (``meta`` stands in for a GPU) the split path hands each
    group's slice of a channels-last input to its conv as a channels-last
    tensor (cuDNN's strided-slice path is slower); NCHW input stays NCHW."""
    import mm_efficientconv.layers.mixconv as module
    layer = _build(c=12, kernel_sizes=(3, 5, 7)).to('meta')
    seen = []
    original = module.F.conv2d

    def spy(x, *args, **kwargs):
        seen.append(x.is_contiguous(memory_format=torch.channels_last))
        return original(x, *args, **kwargs)

    monkeypatch.setattr(module.F, 'conv2d', spy)
    x = torch.empty(2, 12, 9, 9, device='meta', requires_grad=True)
    layer.forward_split(x.contiguous(memory_format=torch.channels_last))
    assert seen == [True, True, True]
    seen.clear()
    layer.forward_split(x)
    assert seen == [False, False, False]
