# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Initialisers reach the layers as they reach a stock ``nn.Conv2d``: mmengine
``init_cfg`` entries (by layer type and by ``override``), mmcv/mmengine
``*_init`` helpers and in-place writes to ``weight`` all end in the layer's
own parameters, with the effective-kernel statistics a stock conv gets."""
import math

import pytest
import torch
import torch.nn as nn

from mm_efficientconv.layers import (BSConvS, BSConvU, DOConv, MixConv, MixGroupedPointwise)

pytestmark = pytest.mark.usefixtures('one_thread')

LAYERS = {
    'doconv': lambda: DOConv(32, 48, 3, padding=1),
    'doconv_grouped_dmul': lambda: DOConv(32, 48, 3, padding=1, groups=2, D_mul=12),
    'bsconv_u': lambda: BSConvU(32, 48, 3, padding=1),
    'bsconv_s': lambda: BSConvS(32, 48, 3, padding=1),
    'mixconv': lambda: MixConv(48, 48, 3, padding=1, groups=48, kernel_sizes=(3, 5, 7)),
    'mix_pointwise': lambda: MixGroupedPointwise(32, 48, num_splits=2),
}

INIT_CFGS = {
    'xavier_uniform': dict(type='Xavier', layer='Conv2d', distribution='uniform'),
    'xavier_normal': dict(type='Xavier', layer='Conv2d'),
    'normal_0.01': dict(type='Normal', layer='Conv2d', std=0.01),
    'kaiming_fan_out': dict(type='Kaiming', layer='Conv2d'),
    'kaiming_fan_in_uniform': dict(type='Kaiming', layer=['Conv2d'], mode='fan_in',
                                   distribution='uniform'),
    'uniform': dict(type='Uniform', layer='Conv2d', a=-0.05, b=0.05),
    'trunc_normal': dict(type='TruncNormal', layer='Conv2d', std=0.02),
}


def _stock_twin(layer):
    """A stock conv with the layer's reported geometry."""
    return nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                     layer.padding, layer.dilation, layer.groups, layer.bias is not None)


def _effective(layer):
    """The layer's kernel values (for MixConv / the grouped 1x1 only the taps
    the layer has)."""
    weight = layer.weight.detach()
    if isinstance(layer, MixConv):
        return torch.cat([k.detach().flatten() for k in layer.kernels])
    if isinstance(layer, MixGroupedPointwise):
        return torch.cat([k.detach().flatten() for k in layer.kernels])
    return weight.flatten()


def _assert_same_stats(ours, stock, name=''):
    n = ours.numel()
    tol = 0.05 + 3 / math.sqrt(n)
    s_ours, s_stock = ours.std().item(), stock.std().item()
    assert abs(s_ours / s_stock - 1) < tol, f'{name}: std {s_ours:.5g} vs stock {s_stock:.5g}'
    assert abs(ours.mean().item() - stock.mean().item()) < 4 * s_stock / math.sqrt(n), name


@pytest.mark.parametrize('init', list(INIT_CFGS))
@pytest.mark.parametrize('name', list(LAYERS))
def test_init_cfg_by_layer_type(name, init):
    from mmengine.model import initialize
    torch.manual_seed(0)
    ours = nn.Sequential(LAYERS[name]())
    stock = nn.Sequential(_stock_twin(ours[0]))
    before = [p.detach().clone() for p in ours.parameters()]
    initialize(ours, dict(INIT_CFGS[init], bias=0.125))
    initialize(stock, dict(INIT_CFGS[init], bias=0.125))
    assert any(not torch.equal(a, b) for a, b in zip(before, ours.parameters()))
    _assert_same_stats(_effective(ours[0]), stock[0].weight.detach().flatten(), init)
    assert torch.all(ours[0].bias == 0.125)
    # the layer computes with what the initialiser wrote: F.conv2d(weight) == forward
    x = torch.randn(2, ours[0].in_channels, 9, 9)
    with torch.no_grad():
        ref = ours[0]._conv_forward(x, ours[0].weight, ours[0].bias)
        assert (ours(x) - ref).abs().max() <= 1e-5 * max(1.0, ref.abs().max().item())


@pytest.mark.parametrize('name', list(LAYERS))
def test_constant_init_is_exact(name):
    from mmengine.model import constant_init, initialize
    torch.manual_seed(0)
    layer = LAYERS[name]()
    initialize(nn.Sequential(layer), dict(type='Constant', layer='Conv2d', val=0.25, bias=0.5))
    assert torch.all(_effective(layer) == 0.25) or torch.allclose(
        _effective(layer), torch.full_like(_effective(layer), 0.25), atol=1e-6)
    assert torch.all(layer.bias == 0.5)
    constant_init(layer, 0.0, bias=0.0)
    assert torch.count_nonzero(layer.weight) == 0


@pytest.mark.parametrize('name', list(LAYERS))
def test_override_by_name_and_mmengine_helpers(name):
    from mmengine.model import BaseModule, kaiming_init, normal_init, xavier_init

    class Head(BaseModule):

        def __init__(self):
            super().__init__(init_cfg=dict(type='Normal', layer='Linear', std=1.0,
                                           override=dict(name='conv_cls', type='Normal',
                                                         std=0.01, bias=-4.0)))
            self.conv_cls = LAYERS[name]()

    torch.manual_seed(1)
    head = Head()
    head.init_weights()
    stock = nn.Conv2d(1, 1, 1)
    stock.weight = nn.Parameter(torch.empty_like(head.conv_cls.weight).normal_(0, 0.01))
    _assert_same_stats(_effective(head.conv_cls), stock.weight.detach().flatten(), 'override')
    assert torch.all(head.conv_cls.bias == -4.0)
    for helper, kwargs in ((xavier_init, dict(distribution='uniform')),
                           (normal_init, dict(std=0.02)), (kaiming_init, {})):
        torch.manual_seed(2)
        layer = LAYERS[name]()
        twin = _stock_twin(layer)
        helper(layer, **kwargs)
        helper(twin, **kwargs)
        _assert_same_stats(_effective(layer), twin.weight.detach().flatten(), helper.__name__)


@pytest.mark.parametrize('name', list(LAYERS))
def test_in_place_writes_take_effect(name):
    torch.manual_seed(3)
    layer = LAYERS[name]()
    source = LAYERS[name]()  # a kernel the layer can represent exactly
    x = torch.randn(2, layer.in_channels, 9, 9)
    with torch.no_grad():
        layer.weight.data.copy_(source.weight)
        if layer.bias is not None:
            layer.bias.copy_(source.bias)
        assert torch.allclose(layer(x), source(x), atol=1e-5)
        layer.weight.mul_(2)
        assert torch.allclose(layer.weight, 2 * source.weight, atol=1e-5)
        layer.weight.detach().zero_()
        assert torch.count_nonzero(layer.weight) == 0
        layer.weight = source.weight  # assignment stores the kernel
        assert torch.allclose(layer.weight, source.weight, atol=1e-5)
        assert 'weight' not in dict(layer.named_parameters())
    nn.init.kaiming_normal_(layer.weight, mode='fan_out')
    twin = _stock_twin(layer)
    nn.init.kaiming_normal_(twin.weight, mode='fan_out')
    _assert_same_stats(_effective(layer), twin.weight.detach().flatten(), 'kaiming_normal_')
    # the result of an out-of-place op is an ordinary tensor
    assert type(layer.weight * 2) is torch.Tensor


@pytest.mark.parametrize('d_mul', [None, 12])
def test_plain_init_written_into_doconv_gives_the_identical_function(d_mul):
    torch.manual_seed(4)
    conv = nn.Conv2d(8, 16, 3, padding=1, groups=2)
    nn.init.xavier_uniform_(conv.weight)
    layer = DOConv(8, 16, 3, padding=1, groups=2, D_mul=d_mul)
    layer.weight.data.copy_(conv.weight)
    with torch.no_grad():
        layer.bias.copy_(conv.bias)
    x = torch.randn(2, 8, 9, 9)
    assert (layer(x) - conv(x)).abs().max().item() <= 1e-6
    if d_mul is None:
        assert torch.count_nonzero(layer.D) == 0  # D' = 0: exactly that conv


def test_bsconv_projection_of_a_general_kernel_keeps_filter_norms():
    torch.manual_seed(5)
    for layer in (BSConvU(16, 24, 3, padding=1), BSConvS(16, 24, 3, padding=1)):
        kernel = torch.randn(24, 16, 3, 3)
        layer.weight.data.copy_(kernel)
        got = layer.weight.detach()
        assert torch.allclose(got.flatten(1).norm(dim=1), kernel.flatten(1).norm(dim=1),
                              rtol=1e-4)
    # BSConv-S: the written projection has orthonormal rows
    assert layer.reg_loss().item() < 1e-4


def _pairs(stock, ours, types):
    mods = dict(ours.named_modules())
    for name, m in stock.named_modules():
        if type(m) is nn.Conv2d and name in mods and isinstance(mods[name], types):
            yield name, m, mods[name]


def _check_model_pairs(stock, ours, types, min_pairs=1):
    count = 0
    for name, m, o in _pairs(stock, ours, types):
        count += 1
        _assert_same_stats(o.weight.detach().flatten(), m.weight.detach().flatten(), name)
    assert count >= min_pairs


CODEBASE_LAYERS = {'DOConv': DOConv, 'BSConvU': BSConvU, 'BSConvS': BSConvS}


@pytest.mark.parametrize('conv', list(CODEBASE_LAYERS))
def test_mmdet_fpn_and_retina_head(conv, mmdet_scope):
    from mmdet.registry import MODELS
    layer_type = CODEBASE_LAYERS[conv]

    def build(cfg):
        torch.manual_seed(6)
        model = MODELS.build(cfg)
        model.init_weights()
        return model

    fpn = dict(type='FPN', in_channels=[16, 32], out_channels=32, num_outs=2)
    _check_model_pairs(build(fpn), build(dict(fpn, conv_cfg=dict(type=conv))), layer_type)
    head = dict(type='RetinaHead', num_classes=3, in_channels=32, feat_channels=32,
                stacked_convs=2,
                anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4,
                                      scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
                                      strides=[8, 16]),
                bbox_coder=dict(type='DeltaXYWHBBoxCoder'))
    _check_model_pairs(build(head), build(dict(head, conv_cfg=dict(type=conv))), layer_type, 4)


@pytest.mark.parametrize('conv', list(CODEBASE_LAYERS))
def test_mmseg_head(conv, mmseg_scope):
    from mmseg.registry import MODELS
    layer_type = CODEBASE_LAYERS[conv]

    def build(cfg):
        torch.manual_seed(7)
        model = MODELS.build(cfg)
        model.init_weights()
        return model

    head = dict(type='FCNHead', in_channels=32, channels=32, num_convs=2, concat_input=True,
                num_classes=3)
    _check_model_pairs(build(head), build(dict(head, conv_cfg=dict(type=conv))), layer_type, 3)


@pytest.mark.parametrize('conv', ['DOConv', 'BSConvU', 'BSConvS', 'MixConv'])
def test_mmpretrain_backbone(conv, mmpretrain_scope):
    from mmpretrain.registry import MODELS
    layer_type = dict(CODEBASE_LAYERS, MixConv=MixConv)[conv]

    def build(cfg):
        torch.manual_seed(8)
        model = MODELS.build(cfg)
        model.init_weights()
        return model

    for cfg in (dict(type='MobileNetV2', widen_factor=0.5), dict(type='ResNet_CIFAR', depth=18)):
        ours = build(dict(cfg, conv_cfg=dict(type=conv)))
        _check_model_pairs(build(cfg), ours, layer_type,
                           min_pairs=3 if conv != 'MixConv' else 0)
