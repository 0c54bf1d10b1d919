# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Tests of DOConv against naive references written from the DO-Conv paper."""
import copy
import io
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import mm_efficientconv.layers.doconv as doconv_module
from mm_efficientconv.layers.deploy import switch_to_deploy
from mm_efficientconv.layers.doconv import DOConv
from mm_efficientconv.layers.kernel_cache import cached_kernels

TOL = 1e-5


# --------------------------------------------------------------- references
def _pad(x, layer):
    ph, pw = layer.padding
    if layer.padding_mode == 'zeros':
        return F.pad(x, (pw, pw, ph, ph))
    return F.pad(x, (pw, pw, ph, ph), mode=layer.padding_mode)


def full_d(layer):
    """``D = D' + I`` in float64, built with an explicit loop over taps."""
    d = layer.D.detach().double().clone()
    for s in range(layer.num_taps):
        d[:, s, s] += 1
    return d


def feature_composition(x, layer):
    """The paper's feature composition, in float64: a depthwise conv of ``x``
    with each channel's ``(kh*kw, D_mul)`` kernel ``D' + I`` gives
    ``in * D_mul`` channels (ordered channel-major), then a grouped 1x1 conv
    with ``W`` mixes them."""
    kh, kw = layer.kernel_size
    d_mul = layer.D_mul
    cin, cout, g = layer.in_channels, layer.out_channels, layer.groups
    dw_kernel = full_d(layer).permute(0, 2, 1).reshape(cin * d_mul, 1, kh, kw)
    feats = F.conv2d(_pad(x.double(), layer), dw_kernel, None, layer.stride, 0,
                     layer.dilation, cin)
    pw_kernel = layer.W.detach().double().reshape(cout, cin // g * d_mul, 1, 1)
    bias = None if layer.bias is None else layer.bias.detach().double()
    return F.conv2d(feats, pw_kernel, bias, 1, 0, 1, g)


def loop_composition(layer):
    """Explicit per-slice composition (slow): slice ``c`` of output ``o``
    reads true input channel ``(o // (out / g)) * (in / g) + c``."""
    cin, cout, g = layer.in_channels, layer.out_channels, layer.groups
    d = full_d(layer)
    w = layer.W.detach().double()
    kernel = torch.zeros(cout, cin // g, layer.num_taps, dtype=torch.float64)
    for o in range(cout):
        group = o // (cout // g)
        for c in range(cin // g):
            i = group * (cin // g) + c
            for s in range(layer.num_taps):
                kernel[o, c, s] = sum(d[i, s, k] * w[o, c, k] for k in range(layer.D_mul))
    return kernel.reshape(cout, cin // g, *layer.kernel_size)


def reference_layout_composition(W, D_full, groups, kernel_size):
    """How yangyanli/DO-Conv composes (W reshaped to (out/g, in, D_mul))."""
    out_c, in_g, d_mul = W.shape
    w = W.reshape(out_c // groups, in_g * groups, d_mul)
    return torch.einsum('ims,ois->oim', D_full, w).reshape(out_c, in_g, *kernel_size)


def randomize(layer, scale=0.3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.D.copy_(torch.randn(layer.D.shape, generator=gen) * scale)
        if layer.bias is not None:
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=gen))
    return layer


CASES = {
    'dense': dict(in_channels=4, out_channels=6, kernel_size=3, padding=1),
    'grouped': dict(in_channels=4, out_channels=6, kernel_size=3, padding=1, groups=2),
    'depthwise': dict(in_channels=4, out_channels=4, kernel_size=3, padding=1, groups=4),
    'depthwise_mult2': dict(in_channels=3, out_channels=6, kernel_size=3, padding=1, groups=3),
    'stride2': dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1),
    'dilation2': dict(in_channels=4, out_channels=4, kernel_size=3, padding=2, dilation=2),
    'nonsquare': dict(in_channels=4, out_channels=6, kernel_size=(3, 5), padding=(1, 2)),
    'nonsquare_pad_only': dict(in_channels=4, out_channels=6, kernel_size=3, padding=(0, 2)),
    'reflect': dict(in_channels=4, out_channels=6, kernel_size=(3, 5), padding=(1, 2),
                    padding_mode='reflect', groups=2),
    'replicate': dict(in_channels=4, out_channels=6, kernel_size=(3, 5), padding=(1, 2),
                      padding_mode='replicate'),
    'circular': dict(in_channels=4, out_channels=8, kernel_size=(3, 5), padding=(1, 2),
                     padding_mode='circular', groups=4),
    'dmul_gt': dict(in_channels=4, out_channels=6, kernel_size=3, padding=1, groups=2,
                    D_mul=13),
    'dmul_gt_dw_mult': dict(in_channels=2, out_channels=6, kernel_size=(1, 3),
                            padding=(0, 1), groups=2, D_mul=5, stride=(1, 2)),
    'no_bias': dict(in_channels=4, out_channels=6, kernel_size=2, bias=False),
}


# ------------------------------------------------------------- equivalence
@pytest.mark.parametrize('name', sorted(CASES))
def test_matches_feature_composition(name):
    torch.manual_seed(0)
    layer = randomize(DOConv(**CASES[name]))
    x = torch.randn(2, layer.in_channels, 9, 11)
    out = layer(x)
    ref = feature_composition(x, layer)
    assert out.shape == ref.shape
    assert (out.double() - ref).abs().max().item() <= TOL
    # the same under no_grad (cached kernel path)
    with torch.no_grad():
        assert (layer.eval()(x).double() - ref).abs().max().item() <= TOL


@pytest.mark.parametrize('cfg', [
    dict(in_channels=6, out_channels=4, kernel_size=3, groups=2),
    dict(in_channels=4, out_channels=8, kernel_size=3, groups=2, D_mul=11),
    dict(in_channels=3, out_channels=9, kernel_size=(3, 2), groups=3),
    dict(in_channels=2, out_channels=6, kernel_size=3, groups=2, D_mul=10),
])
def test_matches_loop_composition(cfg):
    torch.manual_seed(1)
    layer = randomize(DOConv(**cfg), scale=1.0)
    kernel = layer.compute_weight()
    assert kernel.shape == (layer.out_channels, layer.in_channels // layer.groups,
                            *layer.kernel_size)
    assert (kernel.double() - loop_composition(layer)).abs().max().item() <= TOL
    # this test can fail: the reference implementation's indexing differs here
    wrong = reference_layout_composition(layer.W.detach().double(), full_d(layer),
                                         layer.groups, layer.kernel_size)
    assert (wrong - loop_composition(layer)).abs().max().item() > 1e-3


def test_weight_attribute_is_effective_kernel():
    torch.manual_seed(2)
    for cfg in (CASES['grouped'], CASES['reflect'], CASES['depthwise_mult2']):
        layer = randomize(DOConv(**cfg))
        x = torch.randn(1, layer.in_channels, 8, 10)
        ref = F.conv2d(_pad(x, layer), layer.weight, layer.bias, layer.stride, 0,
                       layer.dilation, layer.groups)
        assert (ref - layer(x)).abs().max().item() <= TOL
        if layer.padding_mode == 'zeros':
            ref = F.conv2d(x, layer.weight, layer.bias, layer.stride, layer.padding,
                           layer.dilation, layer.groups)
            assert (ref - layer(x)).abs().max().item() <= TOL
        assert layer.weight.requires_grad


# ---------------------------------------------------------------- init / API
@pytest.mark.parametrize('d_mul', [None, 12])
def test_init_equals_plain_conv_and_gradients(d_mul):
    torch.manual_seed(3)
    layer = DOConv(4, 6, 3, padding=1, groups=2, D_mul=d_mul)
    if d_mul is None:
        assert torch.count_nonzero(layer.D) == 0  # the paper's start: D' = 0
    conv = nn.Conv2d(4, 6, 3, padding=1, groups=2)
    with torch.no_grad():
        conv.weight.copy_(layer.weight)
        conv.bias.copy_(layer.bias)
    x = torch.randn(2, 4, 7, 7)
    out = layer(x)
    assert (out - conv(x)).abs().max().item() <= TOL
    assert (out.double() - feature_composition(x, layer)).abs().max().item() <= TOL
    (out ** 2).sum().backward()
    for p in (layer.W, layer.D, layer.bias):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_default_init_is_nn_conv2d_default():
    """The constructor gives the effective kernel ``nn.Conv2d``'s default init
    (kaiming-uniform, a=sqrt(5)) and ``D' = 0``; the codebases' initialisers
    then write ``weight`` as they write a stock conv's (test_init_parity.py)."""
    torch.manual_seed(4)
    bound = 1 / math.sqrt(64 * 9)
    for d_mul in (None, 12):
        layer = DOConv(64, 64, 3, D_mul=d_mul)
        weight = layer.weight.detach()
        assert weight.abs().max() <= bound * (1 + 1e-6)
        assert abs(weight.std().item() - bound / math.sqrt(3)) < 0.05 * bound
        assert layer.bias.abs().max() <= bound
    assert torch.count_nonzero(DOConv(64, 64, 3).D) == 0
    plain = DOConv(64, 64, 1)
    assert plain.weight.abs().max() <= 1 / 8
    assert abs(plain.weight.std().item() - 1 / 8 / 3**.5) < 4e-3
    assert not hasattr(layer, 'init_weights')  # a stock conv has none (ConvModule, BaseModule)


@pytest.mark.parametrize('cfg', [dict(in_channels=4, out_channels=6, kernel_size=3, padding=1,
                                      groups=2, D_mul=14),
                                 dict(in_channels=3, out_channels=5, kernel_size=(3, 1),
                                      padding=(1, 0), D_mul=4),
                                 dict(in_channels=4, out_channels=8, kernel_size=3, padding=1,
                                      groups=4, D_mul=10)])
def test_plain_checkpoint_with_larger_d_mul_trains_every_column(cfg):
    """A plain checkpoint loaded into a DO-Conv with ``D_mul > kh*kw`` gives
    the identical function and gradients in every column of ``W`` and ``D'``
    (with ``W``'s extra columns and ``D'`` both zero they would stay zero)."""
    torch.manual_seed(10)
    fields = ('in_channels', 'out_channels', 'kernel_size', 'padding', 'groups')
    conv = nn.Conv2d(**{k: cfg[k] for k in fields if k in cfg})
    layer = DOConv(**cfg)
    layer.load_state_dict(conv.state_dict())
    x = torch.randn(2, cfg['in_channels'], 7, 7)
    out = layer(x)
    assert (out - conv(x)).abs().max().item() <= 1e-6
    assert (layer.weight - conv.weight).abs().max().item() <= 1e-6
    (out ** 2).sum().backward()
    assert layer.W.grad.abs().amax(dim=(0, 1)).min() > 0  # every column of W
    assert layer.D.grad.abs().amax(dim=(0, 1)).min() > 0  # every column of D'
    assert (layer.W.grad != 0).float().mean() > 0.95 and (layer.D.grad != 0).float().mean() > 0.95


def test_argument_validation_and_positional_stride():
    with pytest.raises(ValueError, match='D_mul'):
        DOConv(4, 8, 3, D_mul=8)
    with pytest.raises(ValueError, match='D_mul.*>= .*9'):
        DOConv(4, 8, 3, D_mul=1)
    with pytest.raises(ValueError, match='D_mul'):
        DOConv(4, 8, 3, D_mul=9.0)
    with pytest.raises(TypeError):
        DOConv(4, 8, 3, 1, 1, 1, 1, True, 'zeros', 9)  # D_mul is keyword-only
    layer = DOConv(4, 8, 3, 2)
    assert layer.stride == (2, 2) and layer.D_mul == 9
    assert layer(torch.randn(1, 4, 8, 8)).shape == (1, 8, 3, 3)
    assert 'D_mul=9' in repr(layer)
    # 1x1: plain, D_mul ignored
    assert DOConv(4, 8, 1, D_mul=5).plain


def test_identity_is_not_saved_nor_a_parameter():
    layer = DOConv(6, 4, 3, groups=2, D_mul=11)
    assert set(layer.state_dict()) == {'W', 'D', 'bias'}
    names = {n for n, _ in layer.named_parameters()}
    assert names == {'W', 'D', 'bias'}
    n_params = sum(p.numel() for p in layer.parameters())
    assert n_params == 4 * 6 // 2 * 11 + 6 * 9 * 11 + 4
    assert torch.equal(layer.identity, torch.eye(9, 11))
    layer_nb = DOConv(6, 4, (3, 5), bias=False)
    assert sum(p.numel() for p in layer_nb.parameters()) == 4 * 6 * 15 + 6 * 15 * 15
    assert layer.double().identity.dtype == torch.float64


# ---------------------------------------------------------------- eval cache
class _Counter:

    def __init__(self, monkeypatch):
        self.calls = 0
        original = doconv_module.doconv_kernel

        def counted(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(doconv_module, 'doconv_kernel', counted)


def test_no_cache_outside_a_scope(monkeypatch):
    """Outside ``cached_kernels()`` every forward composes from the current
    parameters, whatever wrote them (``.data`` included) and in any mode."""
    torch.manual_seed(5)
    counter = _Counter(monkeypatch)
    layer = randomize(DOConv(4, 6, 3, padding=1)).eval()
    x = torch.randn(2, 4, 6, 6)
    with torch.no_grad():
        y1 = layer(x)
        y2 = layer(x)
    assert counter.calls == 2 and torch.equal(y1, y2)
    layer.D.data.add_(0.5)  # bypasses the version counter
    with torch.no_grad():
        y3 = layer(x)
    assert not torch.equal(y3, y1)
    assert (y3.double() - feature_composition(x, layer)).abs().max() <= TOL
    with pytest.warns(DeprecationWarning):
        layer.invalidate_cache()  # kept as a no-op


def test_cache_inside_a_scope(monkeypatch):
    torch.manual_seed(5)
    counter = _Counter(monkeypatch)
    layer = randomize(DOConv(4, 6, 3, padding=1))
    opt = torch.optim.SGD(layer.parameters(), lr=0.01)
    x = torch.randn(2, 4, 6, 6)
    layer.eval()
    with cached_kernels():
        with torch.no_grad():
            y1 = layer(x)
            y2 = layer(x)
        assert counter.calls == 1 and torch.equal(y1, y2)
        # a forward with grad composes afresh (no cached graph) and back-propagates
        layer(x).sum().backward()
        assert counter.calls == 2 and layer.W.grad.abs().sum() > 0
        opt.step()  # in-place updates change the version counters
        with torch.no_grad():
            y3 = layer(x)
            assert counter.calls == 3 and not torch.equal(y3, y1)
            assert (y3.double() - feature_composition(x, layer)).abs().max() <= TOL
            layer(x)
            assert counter.calls == 3
            # a dtype change is a new entry
            out64 = layer.double()(x.double())
            assert out64.dtype == torch.float64
            assert (out64 - feature_composition(x, layer)).abs().max() <= 1e-10
            layer.float()
        # nested scopes share the entries; only the outermost exit drops them
        with cached_kernels(), torch.no_grad():
            calls = counter.calls
            layer(x)
            layer(x)
            assert counter.calls == calls + 1
        with torch.no_grad():
            layer(x)
        assert counter.calls == calls + 1
    with torch.no_grad():
        layer(x)
    assert counter.calls == calls + 2  # the scope is closed: composed again
    # caching can be switched off per instance
    layer.cache_kernel = False
    with cached_kernels(), torch.no_grad():
        calls = counter.calls
        layer(x)
        layer(x)
    assert counter.calls == calls + 2


def test_scope_with_frozen_params_inference_mode_and_autocast(monkeypatch):
    torch.manual_seed(6)
    counter = _Counter(monkeypatch)
    layer = randomize(DOConv(4, 6, 3, padding=1))
    x = torch.randn(1, 4, 6, 6)
    with cached_kernels():
        with torch.inference_mode():
            ref = layer(x)
        assert counter.calls == 1
        layer.W.requires_grad_(False)
        layer.D.requires_grad_(False)
        xg = x.clone().requires_grad_()
        out = layer(xg)  # frozen W/D: cached kernel, still differentiable w.r.t. x and bias
        out.sum().backward()
        assert counter.calls == 1 and torch.allclose(out, ref)
        assert xg.grad is not None and layer.bias.grad is not None
        # autocast does not leak into the kernel
        with torch.no_grad():
            with torch.autocast('cpu', dtype=torch.bfloat16):
                layer(x)
            assert layer(x).dtype == torch.float32


# -------------------------------------------------------------------- deploy
@pytest.mark.parametrize('name', ['dense', 'depthwise_mult2', 'reflect', 'dmul_gt'])
def test_switch_to_deploy(name):
    torch.manual_seed(7)
    layer = randomize(DOConv(**CASES[name]))
    x = torch.randn(2, layer.in_channels, 9, 11)
    ref = layer(x).detach()
    conv = layer.switch_to_deploy()
    assert type(conv) is nn.Conv2d
    assert (conv(x) - ref).abs().max().item() <= TOL
    assert layer.deploy and layer.plain
    assert set(layer.state_dict()) == set(conv.state_dict())
    assert not hasattr(layer, 'W') and 'identity' not in layer._buffers
    assert layer.weight.requires_grad
    assert (layer(x) - ref).abs().max().item() <= TOL
    again = layer.switch_to_deploy()
    assert type(again) is nn.Conv2d and torch.equal(again.weight, conv.weight)
    assert (again(x) - ref).abs().max().item() <= TOL


def test_model_level_switch_to_deploy():
    torch.manual_seed(8)
    model = nn.Sequential(
        DOConv(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        DOConv(8, 8, 3, padding=1, groups=8, D_mul=12), DOConv(8, 4, 1),
        nn.Sequential(DOConv(4, 4, (1, 3), padding=(0, 1), padding_mode='circular')))
    for m in model.modules():
        if isinstance(m, DOConv) and not m.plain:
            randomize(m)
    model.eval()
    x = torch.randn(2, 3, 8, 8)
    ref = model(x)
    out_model = switch_to_deploy(model)
    assert out_model is model
    assert not any(isinstance(m, DOConv) for m in model.modules())
    assert (model(x) - ref).abs().max().item() <= TOL
    assert switch_to_deploy(model) is model
    assert (model(x) - ref).abs().max().item() <= TOL
    # a bare layer is replaced
    single = DOConv(3, 4, 3)
    assert type(switch_to_deploy(single)) is nn.Conv2d
    # 1x1 (plain) DOConv also returns an nn.Conv2d
    assert type(DOConv(3, 4, 1).switch_to_deploy()) is nn.Conv2d


# --------------------------------------------------------------- checkpoints
@pytest.mark.parametrize('d_mul', [None, 14])
def test_load_plain_conv_state_dict(d_mul):
    torch.manual_seed(9)
    conv = nn.Conv2d(4, 6, 3, padding=1, groups=2)
    layer = DOConv(4, 6, 3, padding=1, groups=2, D_mul=d_mul)
    result = layer.load_state_dict(conv.state_dict())
    assert not result.missing_keys and not result.unexpected_keys
    x = torch.randn(2, 4, 7, 7)
    assert (layer(x) - conv(x)).abs().max().item() <= TOL
    if d_mul is None:
        assert torch.count_nonzero(layer.D) == 0
        assert torch.equal(layer.W, conv.weight.reshape(6, 2, 9))


def test_load_wrong_shapes_errors():
    layer = DOConv(4, 6, 3)
    with pytest.raises(RuntimeError, match='size mismatch'):
        layer.load_state_dict(nn.Conv2d(4, 8, 3).state_dict())
    with pytest.raises(RuntimeError, match='size mismatch'):
        layer.load_state_dict(nn.Conv2d(4, 6, 5).state_dict(), strict=False)
    with pytest.raises(RuntimeError, match='size mismatch'):
        layer.load_state_dict(DOConv(4, 6, 3, D_mul=10).state_dict())
    with pytest.raises(RuntimeError, match='Unexpected key'):
        DOConv(4, 6, 3, bias=False).load_state_dict(nn.Conv2d(4, 6, 3).state_dict())
    with pytest.raises(RuntimeError, match='size mismatch'):
        layer.switch_to_deploy()
        layer.load_state_dict(DOConv(4, 8, 3).state_dict())


def _plain_and_doconv_models():
    def build(conv):
        return nn.Sequential(conv(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                             conv(8, 8, 3, stride=2, padding=1, groups=4),
                             conv(8, 4, 1), conv(4, 4, (3, 1), padding=(1, 0)))

    plain = build(nn.Conv2d).eval()
    with torch.no_grad():
        plain[1].running_mean.uniform_(-1, 1)
        plain[1].running_var.uniform_(0.5, 2)
    return plain, build(DOConv).eval()


def test_strict_load_plain_model_into_doconv_model():
    torch.manual_seed(10)
    plain, model = _plain_and_doconv_models()
    model.load_state_dict(plain.state_dict(), strict=True)
    x = torch.randn(2, 3, 8, 8)
    assert (model(x) - plain(x)).abs().max().item() <= TOL
    assert set(model[4].state_dict()) == {'weight', 'bias'}  # 1x1 is plain
    assert model[4].plain and isinstance(model[4].weight, nn.Parameter)


def test_mmengine_checkpoint_loading(tmp_path):
    """mmengine's loader (``load_from`` / ``init_cfg=Pretrained``) walks the
    modules itself; a plain checkpoint must load strictly there too."""
    from mmengine.runner.checkpoint import load_checkpoint, load_state_dict
    torch.manual_seed(18)
    plain, model = _plain_and_doconv_models()
    load_state_dict(model, plain.state_dict(), strict=True)
    x = torch.randn(2, 3, 8, 8)
    assert (model(x) - plain(x)).abs().max().item() <= TOL
    _, model2 = _plain_and_doconv_models()
    torch.save({'state_dict': plain.state_dict(), 'meta': {}}, tmp_path / 'plain.pth')
    load_checkpoint(model2, str(tmp_path / 'plain.pth'), map_location='cpu', strict=True)
    assert (model2(x) - plain(x)).abs().max().item() <= TOL
    # and a DO-Conv checkpoint into a folded model of the same architecture
    model3 = _plain_and_doconv_models()[1]
    for m in model3.modules():
        if isinstance(m, DOConv) and not m.plain:
            randomize(m)
    ref = model3(x)
    torch.save({'state_dict': model3.state_dict()}, tmp_path / 'do.pth')
    folded = _plain_and_doconv_models()[1]
    for m in folded.modules():
        if isinstance(m, DOConv):
            m.switch_to_deploy()  # in place; the modules stay DOConv
    load_checkpoint(folded, str(tmp_path / 'do.pth'), map_location='cpu', strict=True)
    assert (folded(x) - ref).abs().max().item() <= TOL


@pytest.mark.parametrize('d_mul', [9, 18, 13])
def test_load_reference_layout(d_mul):
    """Keys ``W``, ``D`` (= D - I) and ``d_diag`` (identity repeated over the
    D_mul columns, zero beyond a multiple of kh*kw) of yangyanli/DO-Conv."""
    torch.manual_seed(11)
    cin, cout, taps = 4, 6, 9
    W = torch.randn(cout, cin, d_mul)
    D = torch.randn(cin, taps, d_mul) * 0.3
    eye = torch.eye(taps).reshape(1, taps, taps).repeat(cin, 1, d_mul // taps)
    d_diag = torch.cat([eye, torch.zeros(cin, taps, d_mul % taps)], dim=2)
    bias = torch.randn(cout)
    state = {'W': W, 'D': D, 'd_diag': d_diag, 'bias': bias}
    layer = DOConv(cin, cout, 3, padding=1, D_mul=d_mul)
    layer.load_state_dict(state, strict=True)
    x = torch.randn(2, cin, 6, 6)
    kernel = reference_layout_composition(W.double(), (D + d_diag).double(), 1, (3, 3))
    ref = F.conv2d(x.double(), kernel, bias.double(), padding=1)
    assert (layer(x).double() - ref).abs().max().item() <= TOL
    # the same checkpoint into an in-place folded layer (W/D compose into weight)
    folded = DOConv(cin, cout, 3, padding=1, D_mul=d_mul)
    folded.switch_to_deploy()
    folded.load_state_dict(state, strict=True)
    assert (folded(x).double() - ref).abs().max().item() <= TOL


def test_load_reference_layout_grouped_warns():
    torch.manual_seed(12)
    state = randomize(DOConv(4, 6, 3, groups=2)).state_dict()
    state['d_diag'] = torch.eye(9).repeat(4, 1, 1)
    with pytest.warns(UserWarning, match='wrong input channels'):
        DOConv(4, 6, 3, groups=2).load_state_dict(state)


def test_load_factorised_into_folded_and_1x1():
    torch.manual_seed(13)
    layer = randomize(DOConv(4, 6, 3, padding=1, groups=2, D_mul=11))
    x = torch.randn(2, 4, 7, 7)
    ref = layer(x)
    folded = DOConv(4, 6, 3, padding=1, groups=2, D_mul=11)
    folded.switch_to_deploy()
    result = folded.load_state_dict(layer.state_dict())
    assert not result.missing_keys and not result.unexpected_keys
    assert (folded(x) - ref).abs().max().item() <= TOL
    # 1x1: plain keys; a reference-layout 1x1 checkpoint (W of shape (out, in, 1)) loads
    one = DOConv(4, 6, 1)
    assert set(one.state_dict()) == {'weight', 'bias'}
    w = torch.randn(6, 4, 1)
    one.load_state_dict({'W': w, 'bias': torch.zeros(6)})
    assert torch.equal(one.weight, w.reshape(6, 4, 1, 1))


# -------------------------------------------------------------- dtype/export
def test_float64_and_bf16_autocast():
    torch.manual_seed(14)
    layer = randomize(DOConv(4, 6, 3, padding=1, groups=2))
    x = torch.randn(2, 4, 8, 8)
    ref = feature_composition(x, layer)
    layer64 = copy.deepcopy(layer).double()
    out64 = layer64(x.double())
    assert out64.dtype == torch.float64 and (out64 - ref).abs().max().item() <= 1e-10
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = layer(x)
    assert out.dtype == torch.bfloat16
    assert (out.double() - ref).abs().max().item() <= 0.05 * ref.abs().max().item()
    out.float().sum().backward()
    assert layer.D.grad is not None


def test_jit_trace_and_onnx_of_deploy_form():
    torch.manual_seed(15)
    layer = randomize(DOConv(4, 6, 3, padding=1, padding_mode='reflect')).eval()
    conv = layer.switch_to_deploy().eval()
    x = torch.randn(1, 4, 8, 8)
    traced = torch.jit.trace(conv, x)
    assert (traced(x) - layer(x)).abs().max().item() <= TOL
    traced_inplace = torch.jit.trace(layer, x)
    assert (traced_inplace(x) - conv(x)).abs().max().item() <= TOL

    onnx = pytest.importorskip('onnx')
    buf = io.BytesIO()
    torch.onnx.export(conv, (x, ), buf, input_names=['x'], output_names=['y'], dynamo=False)
    model = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(model)
    assert any(node.op_type == 'Conv' for node in model.graph.node)
    try:
        import onnxruntime as ort
    except ImportError:
        return
    sess = ort.InferenceSession(buf.getvalue(), providers=['CPUExecutionProvider'])
    (y, ) = sess.run(None, {'x': x.numpy()})
    assert (torch.from_numpy(y) - conv(x)).abs().max().item() <= TOL


# ---------------------------------------------------------------- OpenMMLab
def test_registered_in_root_registry():
    from mmengine.registry import MODELS
    assert MODELS.get('DOConv') is DOConv
    layer = MODELS.build(dict(type='DOConv', in_channels=4, out_channels=8, kernel_size=3,
                              D_mul=10))
    assert isinstance(layer, DOConv) and layer.D_mul == 10


def test_conv_module():
    pytest.importorskip('mmcv')
    from mmcv.cnn import ConvModule, build_conv_layer
    torch.manual_seed(16)
    conv = build_conv_layer(dict(type='DOConv', D_mul=12), 4, 8, 3, stride=2, padding=1)
    assert isinstance(conv, DOConv) and conv.D_mul == 12 and conv.stride == (2, 2)

    cm = ConvModule(4, 8, 3, padding=1, conv_cfg=dict(type='DOConv'), norm_cfg=dict(type='BN'))
    assert isinstance(cm.conv, DOConv) and cm.conv.bias is None
    W0 = cm.conv.W.detach().clone()
    # ConvModule's kaiming_init writes the layer's weight, as for a plain conv
    cm.init_weights()
    assert not torch.equal(cm.conv.W, W0) and torch.count_nonzero(cm.conv.D) == 0
    std = math.sqrt(2 / (8 * 9))
    assert abs(cm.conv.weight.std().item() - std) < 0.35 * std  # only 288 samples
    x = torch.randn(2, 4, 6, 6)
    out = cm(x)
    assert out.shape == (2, 8, 6, 6)
    out.sum().backward()
    assert cm.conv.W.grad is not None and cm.conv.D.grad is not None
    # mmcv's efficient conv-bn eval path goes through .weight and _conv_forward
    randomize(cm.conv)
    with torch.no_grad():
        cm.norm.running_mean.uniform_(-1, 1)
        cm.norm.running_var.uniform_(0.5, 2)
    cm.eval()
    with torch.no_grad():
        ref = cm(x)
        cm.turn_on_efficient_conv_bn_eval(True)
        assert (cm(x) - ref).abs().max().item() <= TOL
    # 1x1 ConvModule gets a plain conv
    cm1 = ConvModule(4, 8, 1, conv_cfg=dict(type='DOConv'), norm_cfg=dict(type='BN'))
    assert cm1.conv.plain
    cm1(x).sum().backward()


def test_mmpretrain_resnet50():
    pytest.importorskip('mmpretrain')
    from mmpretrain.models import ResNet
    torch.manual_seed(17)
    stock = ResNet(depth=50)
    stock.init_weights()
    model = ResNet(depth=50, conv_cfg=dict(type='DOConv'))
    n_do = sum(isinstance(m, DOConv) and not m.plain for m in model.modules())
    assert n_do == 17  # the 7x7 stem and the sixteen 3x3 bottleneck convs
    x = torch.randn(2, 3, 32, 32)
    model.train()
    out = model(x)
    out[-1].sum().backward()
    assert model.layer1[0].conv2.D.grad is not None

    # strict loading of a stock checkpoint: identical outputs
    model.load_state_dict(stock.state_dict(), strict=True)
    stock.eval()
    model.eval()
    with torch.no_grad():
        ref = stock(x)[-1]
        assert (model(x)[-1] - ref).abs().max().item() <= TOL
    # trained-looking D': fold and compare
    for m in model.modules():
        if isinstance(m, DOConv) and not m.plain:
            randomize(m, scale=0.05)
    with torch.no_grad():
        before = model(x)[-1]
    switch_to_deploy(model)
    assert not any(isinstance(m, DOConv) for m in model.modules())
    assert sum(p.numel() for p in model.parameters()) == 23508032
    assert sum(p.numel() for p in stock.parameters()) == 23508032
    with torch.no_grad():
        assert (model(x)[-1] - before).abs().max().item() <= 1e-4


@pytest.mark.parametrize('kernel_size,padding', [(3, 0), (3, (0, 2)), (1, 1), ((1, 3), (1, 0))])
def test_call_site_padding_is_kept(kernel_size, padding):
    torch.manual_seed(21)
    layer = DOConv(4, 6, kernel_size, padding=padding)
    conv = nn.Conv2d(4, 6, kernel_size, padding=padding)
    with torch.no_grad():
        conv.weight.copy_(layer.weight)
        conv.bias.copy_(layer.bias)
    x = torch.randn(2, 4, 9, 9)
    assert layer.padding == conv.padding and layer(x).shape == conv(x).shape
    assert (layer(x) - conv(x)).abs().max() <= TOL
