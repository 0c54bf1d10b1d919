# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Tests of BSConvU / BSConvS against a naive dense reference built from the
paper's definition ``w[n, m] = W[n, m] * B[n]``."""
import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import mm_efficientconv.layers.bsconv  # noqa: F401  (registers the layers)
from mm_efficientconv.layers.bsconv import BSConvS, BSConvU
from mm_efficientconv.layers.deploy import switch_to_deploy

TOL = 1e-5
PADDING_MODES = ('zeros', 'reflect', 'replicate', 'circular')
GEOMETRIES = [
    dict(kernel_size=3, stride=1, padding=1, dilation=1),
    dict(kernel_size=3, stride=2, padding=1, dilation=1),
    dict(kernel_size=3, stride=1, padding=2, dilation=2),
    dict(kernel_size=(3, 5), stride=1, padding=(1, 2), dilation=1),
    dict(kernel_size=(3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2)),
]


def _seed():
    torch.manual_seed(0)


def _randomise(layer: nn.Module, scale: float = 0.5) -> nn.Module:
    """Non-trivial values everywhere (including norms' running stats)."""
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn_like(p) * scale)
        for name, b in layer.named_buffers():
            if 'running_var' in name:
                b.copy_(torch.rand_like(b) + 0.5)
            elif 'running_mean' in name:
                b.copy_(torch.randn_like(b) * 0.3)
    return layer


def _pointwise_product(layer) -> torch.Tensor:
    """The depth weights W (out, in) in float64, from the factors."""
    if isinstance(layer, BSConvU) or layer.merged:
        return layer.pw.weight.detach().double()[:, :, 0, 0]
    w1 = layer.pw1.weight.detach().double()[:, :, 0, 0]
    w2 = layer.pw2.weight.detach().double()[:, :, 0, 0]
    return w2 @ w1


def naive_dense_kernel(layer) -> torch.Tensor:
    """Paper definition, element by element over (n, m): w[n, m] = B[n] * W[n, m]."""
    blueprints = layer.dw.weight.detach().double()[:, 0]  # (out, kh, kw)
    depth = _pointwise_product(layer)
    kernel = torch.empty(layer.out_channels, layer.in_channels, *layer.kernel_size,
                         dtype=torch.float64)
    for n in range(layer.out_channels):
        for m in range(layer.in_channels):
            kernel[n, m] = blueprints[n] * depth[n, m]
    return kernel


def dense_conv(layer, x, weight, bias):
    """A regular conv with the layer's geometry (explicit pad for non-zero modes)."""
    if layer.padding_mode != 'zeros':
        ph, pw = layer.padding
        x = F.pad(x, (pw, pw, ph, ph), mode=layer.padding_mode)
        return F.conv2d(x, weight, bias, layer.stride, 0, layer.dilation)
    return F.conv2d(x, weight, bias, layer.stride, layer.padding, layer.dilation)


def _macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of every conv run during a forward. The blueprint
    conv ``dw`` runs through ``_conv_forward`` (its hooks do not fire), so it
    is counted on the BSConv layer's output."""
    total = []

    def conv_hook(mod, inputs, output):
        kh, kw = mod.kernel_size
        total.append(output.numel() * (mod.in_channels // mod.groups) * kh * kw)

    def bsconv_hook(mod, inputs, output):
        kh, kw = mod.kernel_size
        cin = mod.in_channels // mod.groups if mod.plain else 1
        total.append(output.numel() * cin * kh * kw)

    handles = []
    for m in model.modules():
        if isinstance(m, (BSConvU, BSConvS)):
            handles.append(m.register_forward_hook(bsconv_hook))
        elif isinstance(m, nn.Conv2d) and m.groups == 1:
            handles.append(m.register_forward_hook(conv_hook))
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return sum(total)


def _make(cls, cin, cout, **kwargs):
    if cls is BSConvS:
        kwargs.setdefault('p', 0.5)
    return cls(cin, cout, **kwargs)


# ----------------------------------------------------------------- 1 + 2
@pytest.mark.parametrize('cls', [BSConvU, BSConvS])
@pytest.mark.parametrize('geometry', GEOMETRIES)
@pytest.mark.parametrize('padding_mode', PADDING_MODES)
@pytest.mark.parametrize('bias', [True, False])
def test_matches_naive_dense_reference(cls, geometry, padding_mode, bias):
    _seed()
    layer = _randomise(_make(cls, 6, 10, bias=bias, padding_mode=padding_mode, **geometry))
    assert not layer.plain
    x = torch.randn(2, 6, 9, 11)
    out = layer(x)

    ref_bias = layer.bias.detach().double() if bias else None
    reference = dense_conv(layer, x.double(), naive_dense_kernel(layer), ref_bias)
    assert out.shape == reference.shape
    assert (out.double() - reference).abs().max().item() <= TOL

    # 2: the effective kernel exposed as `weight` reproduces the layer.
    assert layer.weight.shape == (10, 6, *layer.kernel_size)
    via_weight = dense_conv(layer, x, layer.weight, layer.bias)
    assert (via_weight - out).abs().max().item() <= TOL
    # ... and so does the plain conv built from it.
    plain = layer.to_plain_conv()
    assert type(plain) is nn.Conv2d
    assert (plain(x) - out).abs().max().item() <= TOL


def test_same_padding_string():
    _seed()
    layer = _randomise(BSConvU(4, 6, (3, 5), padding='same', dilation=2))
    x = torch.randn(1, 4, 10, 12)
    assert layer(x).shape == (1, 6, 10, 12)
    ref = dense_conv(layer, x.double(), naive_dense_kernel(layer), layer.bias.detach().double())
    assert (layer(x).double() - ref).abs().max().item() <= TOL


def test_registered_in_root_registry():
    from mmengine.registry import MODELS
    assert MODELS.get('BSConvU') is BSConvU
    assert MODELS.get('BSConvS') is BSConvS


# --------------------------------------------------------------------- 3
def test_parameter_counts_and_mid_channels():
    def count(m):
        return sum(p.numel() for p in m.parameters())

    assert count(BSConvU(8, 16, 3)) == 8 * 16 + 16 * 9 + 16
    assert count(BSConvU(8, 16, (3, 5), bias=False)) == 8 * 16 + 16 * 15
    layer = BSConvS(24, 16, 5)  # p=0.25 -> mid = ceil(6) = 6
    assert layer.mid_channels == 6
    assert count(layer) == 24 * 6 + 6 * 16 + 16 * 25 + 16
    assert count(BSConvS(24, 16, 5, bias=False)) == 24 * 6 + 6 * 16 + 16 * 25
    # mid = min(in, max(min_mid_channels, ceil(p * in)))
    assert BSConvS(8, 8, 3).mid_channels == 4  # max(4, 2)
    assert BSConvS(3, 8, 3).mid_channels == 3  # capped at in
    assert BSConvS(100, 8, 3, p=1 / 6).mid_channels == 17
    assert BSConvS(4, 8, 3, min_mid_channels=2).mid_channels == 2
    assert BSConvS(10, 8, 3, p=1.0).mid_channels == 10
    assert 'mid_channels=6' in repr(layer) and 'p=0.25' in repr(layer)


@pytest.mark.parametrize('cls', [BSConvU, BSConvS])
def test_gradients_reach_every_parameter(cls):
    _seed()
    layer = _randomise(_make(cls, 5, 7, kernel_size=3, stride=2, padding=1))
    x = torch.randn(2, 5, 8, 8, requires_grad=True)
    layer(x).square().sum().backward()
    names = [n for n, _ in layer.named_parameters()]
    expected = {'pw.weight', 'dw.weight', 'bias'} if cls is BSConvU else {
        'pw1.weight', 'pw2.weight', 'dw.weight', 'bias'}
    assert set(names) == expected
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad is not None


@pytest.mark.parametrize('cls', [BSConvU, BSConvS])
@pytest.mark.parametrize('cin,cout,kwargs', [
    (6, 8, dict(kernel_size=1)),
    (6, 8, dict(kernel_size=3, padding=1, groups=2)),
    (8, 8, dict(kernel_size=3, padding=1, groups=8)),
    (6, 8, dict(kernel_size=5, padding=2, convert_kernel_sizes=(3, ))),
    (6, 8, dict(kernel_size=(1, 7), padding=(0, 3), convert_kernel_sizes=(3, 5))),
    (6, 8, dict(kernel_size=3, stride=2, padding=1, bias=False, convert_kernel_sizes=[(3, 5)])),
])
def test_plain_mode_is_nn_conv2d(cls, cin, cout, kwargs):
    _seed()
    layer = cls(cin, cout, **kwargs)
    assert layer.plain
    has_bias = kwargs.get('bias', True)
    conv_kwargs = {k: v for k, v in kwargs.items() if k != 'convert_kernel_sizes'}
    conv = nn.Conv2d(cin, cout, **conv_kwargs)
    sd = layer.state_dict()
    assert list(sd) == (['weight', 'bias'] if has_bias else ['weight'])
    assert {k: v.shape for k, v in sd.items()} == {k: v.shape for k, v in conv.state_dict().items()}
    conv.load_state_dict(sd)
    x = torch.randn(2, cin, 9, 9)
    assert (layer(x) - conv(x)).abs().max().item() <= TOL
    assert layer.weight is layer._parameters['weight']
    if cls is BSConvS:
        loss = layer.reg_loss()
        assert loss.shape == () and loss.dtype == torch.float32 and loss.item() == 0
        assert layer.mid_channels is None
    deployed = layer.switch_to_deploy()
    assert type(deployed) is nn.Conv2d
    assert (deployed(x) - conv(x)).abs().max().item() <= TOL


def test_convert_kernel_sizes_selects():
    assert not BSConvU(4, 4, 5, convert_kernel_sizes=(3, 5)).plain
    assert not BSConvU(4, 4, (1, 7), convert_kernel_sizes=[(1, 7)]).plain
    assert BSConvU(4, 4, (7, 1), convert_kernel_sizes=[(1, 7)]).plain
    assert not BSConvU(4, 4, 7).plain  # None: every kernel larger than 1x1
    assert not BSConvU(4, 4, 3, convert_kernel_sizes=3).plain
    # a 1x1 kernel is never converted, even when listed
    assert BSConvU(4, 4, 1, convert_kernel_sizes=(1, 3)).plain


@pytest.mark.parametrize('kwargs,name', [
    (dict(p=0), 'p'),
    (dict(p=-0.5), 'p'),
    (dict(p=1.5), 'p'),
    (dict(p='0.5'), 'p'),
    (dict(p=True), 'p'),
    (dict(min_mid_channels=0), 'min_mid_channels'),
    (dict(min_mid_channels=2.0), 'min_mid_channels'),
    (dict(convert_kernel_sizes='3'), 'convert_kernel_sizes'),
    (dict(convert_kernel_sizes=[(3, )]), 'convert_kernel_sizes'),
    (dict(convert_kernel_sizes=[0]), 'convert_kernel_sizes'),
    (dict(convert_kernel_sizes=3.0), 'convert_kernel_sizes'),
    (dict(convert_kernel_sizes=[(3, 3, 3)]), 'convert_kernel_sizes'),
    (dict(mid_norm_cfg='BN'), 'mid_norm_cfg'),
    (dict(padding_mode='mirror'), 'padding_mode'),
    (dict(groups=3), 'groups'),
])
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=rf'^{name}\b'):
        BSConvS(8, 16, 3, **kwargs)
    if name not in ('p', 'min_mid_channels'):
        with pytest.raises(ValueError, match=rf'^{name}\b'):
            BSConvU(8, 16, 3, **kwargs)


def test_bad_extras_rejected_in_plain_mode_too():
    with pytest.raises(ValueError, match=r'^p\b'):
        BSConvS(8, 16, 1, p=2)
    with pytest.raises(TypeError):
        BSConvU(8, 16, 3, 1, 1, 1, 1, True, 'zeros', (3, ))  # extras are keyword-only


def test_default_init_has_stock_conv_statistics():
    """The constructor gives the effective kernel the statistics of
    ``nn.Conv2d``'s default init (per-filter norms of a kaiming-uniform draw)
    and a stock bias; BSConv-S starts with orthonormal projection rows."""
    _seed()
    bound = 1 / math.sqrt(64 * 9)
    for layer in (BSConvU(64, 64, 3, padding=1), BSConvS(64, 64, 3, padding=1, p=0.25)):
        std = layer.weight.detach().std().item()
        assert abs(std - bound / math.sqrt(3)) < 0.05 * bound, type(layer).__name__
        assert layer.bias.abs().max() <= bound and layer.bias.abs().max() > 0
    assert layer.reg_loss().item() < 1e-4  # orthonormal pw1 rows
    assert not hasattr(layer, 'init_weights')  # a stock conv has none
    plain = BSConvU(64, 64, 1)
    assert plain.weight.abs().max() <= 1 / 8
    # with a mid norm (no dense kernel) BSConv-S still starts orthonormal
    pytest.importorskip('mmcv')
    normed = BSConvS(64, 64, 3, padding=1, mid_norm_cfg=dict(type='BN'))
    assert normed.reg_loss().item() < 1e-4


# --------------------------------------------------------------------- 4
def test_reg_loss_hand_computation():
    _seed()
    layer = _randomise(BSConvS(12, 8, 3, p=0.5))
    w = layer.pw1.weight.detach().double().reshape(6, 12)
    gram = w @ w.t()
    expected = math.sqrt(sum((gram[i, j].item() - (1.0 if i == j else 0.0))**2
                             for i in range(6) for j in range(6)))
    loss = layer.reg_loss()
    assert loss.shape == () and loss.dtype == torch.float32
    assert abs(loss.item() - expected) <= 1e-5 * max(1.0, expected)


def test_reg_loss_zero_for_orthonormal_rows():
    _seed()
    layer = BSConvS(16, 8, 3, p=0.25)
    q, _ = torch.linalg.qr(torch.randn(16, 4, dtype=torch.float64))  # orthonormal columns
    with torch.no_grad():
        layer.pw1.weight.copy_(q.t().reshape(4, 16, 1, 1).float())
    assert layer.reg_loss().item() < 1e-6

    # exactly orthonormal (identity, mid == in): the loss is 0 and its gradient finite (zero)
    square = BSConvS(4, 8, 3, p=1.0)
    with torch.no_grad():
        square.pw1.weight.copy_(torch.eye(4).reshape(4, 4, 1, 1))
    loss = square.reg_loss()
    loss.backward()
    assert loss.item() == 0
    assert torch.equal(square.pw1.weight.grad, torch.zeros_like(square.pw1.weight))


def test_reg_loss_gradient_and_descent():
    _seed()
    layer = _randomise(BSConvS(16, 8, 3, p=0.5))
    loss = layer.reg_loss()
    loss.backward()
    assert layer.pw1.weight.grad is not None and layer.pw1.weight.grad.abs().sum() > 0
    for name in ('pw2', 'dw'):
        assert getattr(layer, name).weight.grad is None, name
    assert layer.bias.grad is None

    optimizer = torch.optim.SGD(layer.parameters(), lr=0.02)
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        loss = layer.reg_loss()
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
    assert all(b < a for a, b in zip(losses, losses[1:])), losses


def test_reg_loss_fp32_under_autocast():
    _seed()
    layer = _randomise(BSConvS(16, 8, 3, p=0.5))
    ref = layer.reg_loss().item()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        loss = layer.reg_loss()
    assert loss.dtype == torch.float32
    assert abs(loss.item() - ref) <= 1e-5 * max(1.0, ref)


# --------------------------------------------------------------------- 5
def test_bsconvs_deploy_merges_when_cheaper():
    _seed()
    layer = _randomise(BSConvS(32, 32, 3, padding=1, p=0.75))  # mid 24: 1024 < 24 * 64
    x = torch.randn(1, 32, 8, 8)
    before, macs_before, kernel = layer(x), _macs(layer, x), layer.weight.detach().clone()
    assert layer.switch_to_deploy() is layer
    assert layer.deploy and layer.merged
    assert not hasattr(layer, 'pw1') and not hasattr(layer, 'pw2')
    assert list(layer.state_dict()) == ['bias', 'pw.weight', 'dw.weight']
    assert [n for n, _ in layer.named_children()] == ['pw', 'dw']
    assert (layer(x) - before).abs().max().item() <= TOL
    assert (layer.weight - kernel).abs().max().item() <= TOL
    assert _macs(layer, x) < macs_before
    assert _macs(layer, x) == 32 * 32 * 64 + 32 * 9 * 64
    assert 'merged=True' in repr(layer)
    with pytest.raises(RuntimeError, match='reg_loss'):
        layer.reg_loss()
    # idempotent
    state = copy.deepcopy(layer.state_dict())
    assert layer.switch_to_deploy() is layer
    assert all(torch.equal(v, layer.state_dict()[k]) for k, v in state.items())
    assert list(layer.state_dict()) == list(state)
    assert (layer(x) - before).abs().max().item() <= TOL


@pytest.mark.parametrize('p', [0.25, 0.5])  # mid * (in + out) <= in * out: keep
def test_bsconvs_deploy_keeps_when_not_cheaper(p):
    _seed()
    layer = _randomise(BSConvS(32, 32, 3, padding=1, p=p))
    x = torch.randn(1, 32, 8, 8)
    before, macs_before = layer(x), _macs(layer, x)
    keys = list(layer.state_dict())
    assert layer.switch_to_deploy() is layer
    assert layer.deploy and not layer.merged
    assert list(layer.state_dict()) == keys
    assert _macs(layer, x) == macs_before
    assert torch.equal(layer(x), before)
    assert layer.reg_loss().item() > 0  # the projection still exists
    assert layer.switch_to_deploy() is layer


def test_bsconvu_deploy_is_identity():
    _seed()
    layer = _randomise(BSConvU(6, 8, 3, padding=1))
    x = torch.randn(1, 6, 7, 7)
    before = layer(x)
    keys = list(layer.state_dict())
    assert layer.switch_to_deploy() is layer and layer.deploy
    assert list(layer.state_dict()) == keys
    assert torch.equal(layer(x), before)
    assert layer.switch_to_deploy() is layer


def test_model_level_switch_to_deploy():
    _seed()
    model = nn.Sequential(
        BSConvS(32, 32, 3, padding=1, p=0.75),
        nn.ReLU(),
        BSConvS(32, 32, 3, padding=1, p=0.25),
        BSConvU(32, 16, 3, stride=2, padding=1),
        BSConvS(16, 16, 1),
        nn.Sequential(BSConvU(16, 16, 3, padding=1, groups=16)),
    )
    _randomise(model, scale=0.1)  # keeps the outputs O(1) through the stack
    x = torch.randn(2, 32, 8, 8)
    before = model(x)
    assert 0.1 < before.abs().max().item() < 10
    out_model = switch_to_deploy(model)
    assert out_model is model
    assert model[0].merged and not model[2].merged and model[3].deploy
    assert type(model[4]) is nn.Conv2d and type(model[5][0]) is nn.Conv2d
    assert (model(x) - before).abs().max().item() <= TOL
    state = copy.deepcopy(model.state_dict())
    switch_to_deploy(model)
    assert list(model.state_dict()) == list(state)
    assert (model(x) - before).abs().max().item() <= TOL


# --------------------------------------------------------------------- 6
@pytest.mark.parametrize('cls', [BSConvU, BSConvS])
def test_float64_and_bf16_autocast(cls):
    _seed()
    layer = _randomise(_make(cls, 6, 8, kernel_size=3, padding=1, padding_mode='reflect')).double()
    x = torch.randn(2, 6, 7, 7, dtype=torch.float64)
    out = layer(x)
    assert out.dtype == torch.float64
    ref = dense_conv(layer, x, naive_dense_kernel(layer), layer.bias.detach())
    assert (out - ref).abs().max().item() <= 1e-12

    layer = layer.float()
    x = x.float()
    full = layer(x)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        low = layer(x)
    assert low.dtype == torch.bfloat16
    assert ((low.float() - full).abs().max() / full.abs().max()).item() < 5e-2


@pytest.mark.parametrize('cls', [BSConvU, BSConvS])
def test_jit_trace_deploy_form(cls):
    _seed()
    kwargs = dict(p=1.0) if cls is BSConvS else {}
    layer = _randomise(cls(8, 8, 3, stride=2, padding=1, **kwargs))
    layer.eval()
    layer.switch_to_deploy()
    x = torch.randn(1, 8, 9, 9)
    traced = torch.jit.trace(layer, (x, ))
    x2 = torch.randn(2, 8, 11, 11)
    assert (traced(x2) - layer(x2)).abs().max().item() <= TOL


@pytest.mark.parametrize('cls', [BSConvU, BSConvS])
def test_onnx_export_deploy_form(cls, tmp_path):
    onnx = pytest.importorskip('onnx')
    _seed()
    kwargs = dict(p=1.0) if cls is BSConvS else {}
    model = nn.Sequential(cls(8, 8, 3, padding=1, **kwargs), nn.ReLU(), cls(8, 4, 1)).eval()
    _randomise(model)
    switch_to_deploy(model)
    x = torch.randn(1, 8, 9, 9)
    path = str(tmp_path / 'bsconv.onnx')
    torch.onnx.export(model, (x, ), path, input_names=['x'], output_names=['y'],
                      opset_version=17, dynamo=False)
    onnx.checker.check_model(onnx.load(path))
    ort = pytest.importorskip('onnxruntime')
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    (y, ) = session.run(None, {'x': x.numpy()})
    assert (torch.from_numpy(y) - model(x).detach()).abs().max().item() <= TOL


# --------------------------------------------------------------------- 7
@pytest.mark.parametrize('cls,norm_cfg', [
    (BSConvU, dict(type='BN')),
    (BSConvS, dict(type='BN')),
    (BSConvS, dict(type='GN', num_groups=2)),
])
def test_mid_norm_train_and_eval(cls, norm_cfg):
    pytest.importorskip('mmcv')
    _seed()
    layer = _make(cls, 8, 8, kernel_size=3, padding=1, mid_norm_cfg=norm_cfg)
    names = ('bn', ) if cls is BSConvU else (('bn1', 'bn2') if norm_cfg['type'] == 'BN' else
                                              ('gn1', 'gn2'))
    assert layer.mid_norm_names == names
    assert [n for n, _ in layer.named_children()] == (
        ['pw', names[0], 'dw'] if cls is BSConvU else ['pw1', names[0], 'pw2', names[1], 'dw'])
    x = torch.randn(2, 8, 6, 6)
    layer.train()
    out = layer(x)
    out.square().sum().backward()
    assert all(p.grad is not None for p in layer.parameters())
    with pytest.raises(RuntimeError, match='training'):
        layer.weight
    layer.eval()
    with torch.no_grad():
        y = layer(x)
    assert y.shape == (2, 8, 6, 6) and torch.isfinite(y).all()
    with pytest.raises(NotImplementedError):
        layer.weight
    if cls is BSConvS:
        layer.switch_to_deploy()
        assert not layer.merged  # a mid norm is never merged away
        assert torch.equal(layer(x), y)


@pytest.mark.parametrize('padding,padding_mode,folds', [
    (0, 'zeros', True),
    (1, 'reflect', True),
    ((1, 2), 'circular', True),
    (1, 'zeros', False),
])
@pytest.mark.parametrize('bias', [True, False])
def test_bsconvu_folds_eval_batchnorm_where_exact(padding, padding_mode, folds, bias):
    pytest.importorskip('mmcv')
    _seed()
    layer = _randomise(BSConvU(6, 8, (3, 5), padding=padding, padding_mode=padding_mode,
                               bias=bias, mid_norm_cfg=dict(type='BN')))
    layer.eval()
    x = torch.randn(2, 6, 9, 9)
    with torch.no_grad():
        before = layer(x)
    assert layer.switch_to_deploy() is layer
    assert (not hasattr(layer, 'bn')) == folds
    assert (layer.mid_norm_names == ()) == folds
    with torch.no_grad():
        assert (layer(x) - before).abs().max().item() <= TOL
    if folds:
        assert layer.bias is not None
        ref = dense_conv(layer, x, layer.weight, layer.bias)
        assert (ref - before).abs().max().item() <= TOL
    assert layer.switch_to_deploy() is layer


def test_bsconvu_keeps_batchnorm_in_training_mode():
    pytest.importorskip('mmcv')
    layer = BSConvU(4, 4, 3, mid_norm_cfg=dict(type='BN')).train()
    layer.switch_to_deploy()
    assert hasattr(layer, 'bn') and layer.deploy


# --------------------------------------------------------------------- 8
def test_build_conv_layer_and_conv_module():
    cnn = pytest.importorskip('mmcv.cnn')
    conv = cnn.build_conv_layer(dict(type='BSConvS', p=0.5), 8, 16, 3, stride=2, padding=1)
    assert isinstance(conv, BSConvS) and conv.mid_channels == 4 and conv.stride == (2, 2)

    _seed()
    module = cnn.ConvModule(8, 16, 3, padding=1, conv_cfg=dict(type='BSConvU'),
                            norm_cfg=dict(type='BN'))
    assert isinstance(module.conv, BSConvU) and not module.conv.plain
    assert module.conv.bias is None  # bias='auto' with a norm
    twin = cnn.ConvModule(8, 16, 3, padding=1, norm_cfg=dict(type='BN'))
    _seed()
    module.init_weights()  # ConvModule's kaiming_init reaches the layer as a stock conv
    twin.init_weights()
    std, ref = module.conv.weight.detach().std().item(), twin.conv.weight.detach().std().item()
    assert abs(std / ref - 1) < 0.15
    _randomise(module.conv)
    x = torch.randn(2, 8, 6, 6)
    out = module(x)
    assert out.shape == (2, 16, 6, 6)
    out.sum().backward()
    assert all(p.grad is not None for p in module.parameters())


def _stray_convs(model: nn.Module) -> list:
    """nn.Conv2d modules that are not the factors of a BSConv layer."""
    owned = {id(c) for m in model.modules() if isinstance(m, (BSConvU, BSConvS))
             for c in m.children()}
    return [m for m in model.modules() if isinstance(m, nn.Conv2d) and id(m) not in owned]


def _check_converted(conv):
    """3x3 (or larger) groups=1 convs are converted, the rest plain."""
    converted = conv.groups == 1 and conv.kernel_size != (1, 1)
    assert conv.plain != converted, repr(conv)
    return converted


def test_mmpretrain_resnet18_bsconvu():
    pytest.importorskip('mmcv.ops')
    models = pytest.importorskip('mmpretrain.models')
    _seed()
    model = models.ResNet(depth=18, conv_cfg=dict(type='BSConvU'), out_indices=(2, 3))
    model.init_weights()
    convs = [m for m in model.modules() if isinstance(m, BSConvU)]
    assert not _stray_convs(model)
    assert sum(_check_converted(m) for m in convs) == 17  # stem 7x7 + 16 block 3x3
    assert sum(m.plain for m in convs) == 3  # 1x1 downsample convs
    assert not model.layer1[0].conv1.plain and model.layer2[0].downsample[0].plain
    x = torch.randn(1, 3, 64, 64)
    outs = model(x)
    assert [o.shape for o in outs] == [(1, 256, 4, 4), (1, 512, 2, 2)]
    sum(o.sum() for o in outs).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_mmpretrain_mobilenetv2_bsconvs():
    pytest.importorskip('mmcv.ops')
    models = pytest.importorskip('mmpretrain.models')
    _seed()
    model = models.MobileNetV2(widen_factor=0.5, conv_cfg=dict(type='BSConvS'))
    model.init_weights()
    convs = [m for m in model.modules() if isinstance(m, BSConvS)]
    assert not _stray_convs(model)
    converted = [m for m in convs if _check_converted(m)]
    assert converted == [model.conv1.conv]  # only the 3x3 stem; 1x1 and depthwise stay plain
    assert model.conv1.conv.mid_channels == 3
    x = torch.randn(1, 3, 64, 64)
    (out, ) = model(x)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert sum(m.reg_loss() for m in convs).item() > 0


def test_mmdet_resnet50_bsconvu():
    pytest.importorskip('mmcv.ops')
    backbones = pytest.importorskip('mmdet.models.backbones')
    _seed()
    model = backbones.ResNet(depth=50, conv_cfg=dict(type='BSConvU'), out_indices=(0, 1, 2, 3))
    model.init_weights()
    convs = [m for m in model.modules() if isinstance(m, BSConvU)]
    assert not _stray_convs(model)
    assert sum(_check_converted(m) for m in convs) == 1 + 16  # stem + every block's conv2
    model.eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1:] for o in outs] == [(256, 16, 16), (512, 8, 8), (1024, 4, 4),
                                           (2048, 2, 2)]


def test_mmseg_dilated_resnet_bsconvu():
    pytest.importorskip('mmcv.ops')
    backbones = pytest.importorskip('mmseg.models.backbones')
    _seed()
    model = backbones.ResNetV1c(depth=18, strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4),
                                conv_cfg=dict(type='BSConvU'), out_indices=(3, ))
    model.init_weights()
    dilated = [m for m in model.modules() if isinstance(m, BSConvU) and m.dilation == (4, 4)]
    assert dilated and all(not m.plain for m in dilated)
    model.eval()
    with torch.no_grad():
        (out, ) = model(torch.randn(1, 3, 32, 32))
    assert out.shape == (1, 512, 4, 4)


@pytest.mark.parametrize('cls', [BSConvU, BSConvS])
@pytest.mark.parametrize('kernel_size,padding,groups', [(3, 0, 1), (3, (0, 2), 1), (1, 1, 1),
                                                        (3, 0, 2)])
def test_call_site_padding_is_kept(cls, kernel_size, padding, groups):
    """Transform and plain mode keep the call-site padding (output shape and
    values of ``nn.Conv2d`` with the effective kernel)."""
    _seed()
    layer = cls(8, 8, kernel_size, padding=padding, groups=groups)
    conv = nn.Conv2d(8, 8, kernel_size, padding=padding, groups=groups)
    with torch.no_grad():
        conv.weight.copy_(layer.weight)
        conv.bias.copy_(layer.bias)
    x = torch.randn(2, 8, 9, 9)
    assert layer.padding == conv.padding and layer(x).shape == conv(x).shape
    assert (layer(x) - conv(x)).abs().max() <= 1e-5
