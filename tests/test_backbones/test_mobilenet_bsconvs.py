# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""BSConv-S MobileNetV2/V3: identity with mmpretrain's backbones (parameters,
keys, outputs), the CIFAR variants, the orthonormal regulariser, freezing, use
in mmdet/mmseg models and the ImageNet configs."""
import re
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmpretrain.models.backbones import MobileNetV2, MobileNetV3
from torch.nn.modules.batchnorm import _BatchNorm

import mm_efficientconv.layers.mixconv  # noqa: F401  (registers MixConv)
from mm_efficientconv.backbones.mobilenet_v2_bsconvs import BSConvSMobileNetV2
from mm_efficientconv.backbones.mobilenet_v3_bsconvs import BSConvSMobileNetV3
from mm_efficientconv.layers.mixconv import MixConv

CONFIG_DIR = Path(__file__).resolve().parents[2] / 'configs'

# every test builds in mmpretrain's scope (tests/conftest.py), on one thread (tiny models)
pytestmark = pytest.mark.usefixtures('one_thread', 'mmpretrain_scope')


def _num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _randomise_bn(model: nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)


def _projection_weights(model: nn.Module):
    """Projection 1x1 weights found from the state-dict keys alone: V2 blocks
    ``layerX.Y.conv.<last>.conv.weight``, V3 blocks
    ``layerX.linear_conv.conv.weight``."""
    state = dict(model.named_parameters())
    v2 = {}
    for key in state:
        match = re.fullmatch(r'(layer\d+\.\d+)\.conv\.(\d+)\.conv\.weight', key)
        if match:
            block, index = match.group(1), int(match.group(2))
            if index >= v2.get(block, (-1, None))[0]:
                v2[block] = (index, state[key])
    v3 = [state[k] for k in state if re.fullmatch(r'layer\d+\.linear_conv\.conv\.weight', k)]
    return [w for _, w in v2.values()] + v3


def _hand_reg_loss(model: nn.Module) -> torch.Tensor:
    total = torch.zeros((), dtype=torch.float64)
    for w in _projection_weights(model):
        w = w.detach().double().reshape(w.shape[0], w.shape[1])
        diff = w @ w.t() - torch.eye(w.shape[0], dtype=torch.float64)
        total = total + diff.pow(2).sum().sqrt()
    return total


def _build(version, **kwargs):
    if version == 'v2':
        return BSConvSMobileNetV2(**kwargs), MobileNetV2(
            **{k: v for k, v in kwargs.items() if k != 'cifar'})
    return BSConvSMobileNetV3(**kwargs), MobileNetV3(
        **{k: v for k, v in kwargs.items() if k != 'cifar'})


# --------------------------------------------- identity with mmpretrain
@pytest.mark.parametrize('version,kwargs,params', [
    ('v2', dict(widen_factor=1.0), 2_223_872),
    ('v2', dict(widen_factor=0.5), None),
    ('v2', dict(widen_factor=0.75), None),
    ('v3', dict(arch='small'), 927_008),
    ('v3', dict(arch='large'), 2_971_952),
    ('v3', dict(arch='small_075'), None),
    ('v3', dict(arch='small_050'), None),
])
def test_identical_to_mmpretrain(version, kwargs, params):
    ours, stock = _build(version, **kwargs)
    assert _num_params(ours) == _num_params(stock)
    if params is not None:
        assert _num_params(ours) == params
    ours_state, stock_state = ours.state_dict(), stock.state_dict()
    assert list(ours_state) == list(stock_state)
    assert all(ours_state[k].shape == v.shape for k, v in stock_state.items())
    stock.init_weights()
    _randomise_bn(stock)
    ours.load_state_dict(stock.state_dict(), strict=True)
    stock.eval()
    ours.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(ours(x), stock(x)):
            assert torch.equal(a, b)
    # ...and back: our checkpoints load strictly into mmpretrain's backbone.
    stock.load_state_dict(ours.state_dict(), strict=True)


def test_v2_all_out_indices():
    ours = BSConvSMobileNetV2(widen_factor=0.5, out_indices=tuple(range(8)))
    outs = ours(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape[1:]) for o in outs] == [(8, 32, 32), (16, 16, 16), (16, 8, 8),
                                                  (32, 4, 4), (48, 4, 4), (80, 2, 2),
                                                  (160, 2, 2), (1280, 2, 2)]
    with pytest.raises(ValueError, match='out_indices'):
        BSConvSMobileNetV2(out_indices=(8, ))


@pytest.mark.parametrize('arch,channels,sizes', [
    ('small', [16, 16, 24, 24, 40, 40, 40, 48, 48, 96, 96, 96, 576],
     [32, 16, 8, 8, 4, 4, 4, 4, 4, 2, 2, 2, 2]),
    ('large', [16, 16, 24, 24, 40, 40, 40, 80, 80, 80, 80, 112, 112, 160, 160, 160, 960],
     [32, 32, 16, 16, 8, 8, 8, 4, 4, 4, 4, 4, 4, 2, 2, 2, 2]),
])
def test_v3_all_out_indices(arch, channels, sizes):
    ours = BSConvSMobileNetV3(arch=arch, out_indices=tuple(range(len(channels))))
    outs = ours(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == channels
    assert [o.shape[-1] for o in outs] == sizes
    with pytest.raises(ValueError, match='arch'):
        BSConvSMobileNetV3(arch='huge')


# ------------------------------------------------------------------ CIFAR
def test_v2_cifar_matches_stock_with_strides_removed():
    ours = BSConvSMobileNetV2(widen_factor=0.5, cifar=True, out_indices=tuple(range(8)))
    stock = MobileNetV2(widen_factor=0.5, out_indices=tuple(range(8)))
    stock.init_weights()
    _randomise_bn(stock)
    ours.load_state_dict(stock.state_dict(), strict=True)  # same parameters and keys
    # The reference's CIFAR MobileNetV2: no stride in the stem and in layer2.
    stock.conv1.conv.stride = (1, 1)
    stock.layer2[0].conv[1].conv.stride = (1, 1)
    stock.eval()
    ours.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        outs, ref = ours(x), stock(x)
    assert [o.shape[-1] for o in outs] == [32, 32, 16, 8, 8, 4, 4, 4]
    for a, b in zip(outs, ref):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize('arch,block', [('small', 'layer1'), ('large', 'layer2')])
def test_v3_cifar_matches_stock_with_strides_removed(arch, block):
    ours = BSConvSMobileNetV3(arch=arch, cifar=True)
    stock = MobileNetV3(arch=arch)
    stock.init_weights()
    _randomise_bn(stock)
    ours.load_state_dict(stock.state_dict(), strict=True)
    stock.layer0.conv.stride = (1, 1)
    getattr(stock, block).depthwise_conv.conv.stride = (1, 1)
    # The reference adds the shortcut once the block keeps size and width.
    getattr(stock, block).with_res_shortcut = arch == 'small'
    assert getattr(ours, block).with_res_shortcut == (arch == 'small')
    stock.eval()
    ours.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        (out, ), (ref, ) = ours(x), stock(x)
    assert out.shape[-2:] == (4, 4)
    torch.testing.assert_close(out, ref)


# ------------------------------------------------------------ regulariser
@pytest.mark.parametrize('version,kwargs,num_blocks', [
    ('v2', dict(widen_factor=0.5), 17),
    ('v3', dict(arch='small'), 11),
    ('v3', dict(arch='large'), 15),
])
def test_reg_loss_equals_hand_computation(version, kwargs, num_blocks):
    torch.manual_seed(0)
    ours, _ = _build(version, **kwargs)
    ours.init_weights()
    assert len(ours.projection_convs()) == num_blocks == len(_projection_weights(ours))
    for conv, w in zip(ours.projection_convs(), _projection_weights(ours)):
        assert conv.weight is w and conv.out_channels <= conv.in_channels
    loss = ours.reg_loss()
    assert loss.dim() == 0 and loss.dtype == torch.float32 and loss.item() > 0
    torch.testing.assert_close(loss.double(), _hand_reg_loss(ours), rtol=1e-5, atol=1e-5)


def test_reg_loss_p_is_one_sixth():
    # With expansion 6 every projection keeps exactly 1/6 of the expanded
    # channels (BSConv-S with p = 1/6), except the expansion-1 first block.
    ours = BSConvSMobileNetV2()
    convs = ours.projection_convs()
    assert (convs[0].in_channels, convs[0].out_channels) == (32, 16)
    for conv, block in zip(convs[1:], [m for m in ours.modules()
                                       if type(m).__name__ == 'InvertedResidual'][1:]):
        assert conv.in_channels == 6 * block.conv[0].in_channels


def test_reg_loss_differentiable_and_only_touches_projections():
    torch.manual_seed(0)
    # ConvModule's Kaiming init, away from the optimum (init_weights() starts the projections
    # orthonormal, where the penalty is already ~0)
    ours = BSConvSMobileNetV2(widen_factor=0.5)
    assert ours.reg_loss().item() > 1
    ours.reg_loss().backward()
    projections = {id(c.weight) for c in ours.projection_convs()}
    for name, p in ours.named_parameters():
        if id(p) in projections:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name
    # A gradient step lowers the penalty.
    before = ours.reg_loss().item()
    with torch.no_grad():
        for c in ours.projection_convs():
            c.weight -= 1e-3 * c.weight.grad
    assert ours.reg_loss().item() < before


@pytest.mark.parametrize('version,kwargs', [('v2', dict(widen_factor=0.5)),
                                            ('v3', dict(arch='small'))])
def test_reg_loss_zero_for_orthonormal_rows(version, kwargs):
    torch.manual_seed(0)
    ours, _ = _build(version, **kwargs)
    with torch.no_grad():
        for conv in ours.projection_convs():
            out_c, in_c = conv.weight.shape[:2]
            q, _ = torch.linalg.qr(torch.randn(in_c, out_c, dtype=torch.float64))
            conv.weight.copy_(q.t().reshape(out_c, in_c, 1, 1))
    loss = ours.reg_loss()
    assert loss.item() < 1e-4
    loss.backward()
    assert all(torch.isfinite(c.weight.grad).all() for c in ours.projection_convs())


def test_reg_loss_fp32_under_autocast():
    torch.manual_seed(0)
    ours = BSConvSMobileNetV2(widen_factor=0.5)
    ours.init_weights()
    reference = ours.reg_loss()
    with torch.autocast(device_type='cpu', dtype=torch.bfloat16):
        loss = ours.reg_loss()
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, reference)


def test_reg_loss_collected_once_from_classifier():
    """The hook sums reg_loss() over modules that have it: only the backbone
    has one, so nothing is counted twice."""
    cfg = dict(
        type='ImageClassifier',
        backbone=dict(type='BSConvSMobileNetV2', widen_factor=0.5),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=10, in_channels=1280))
    model = _build_classifier(cfg)
    owners = [m for m in model.modules() if callable(getattr(m, 'reg_loss', None))]
    assert owners == [model.backbone]


# -------------------------------------------------------------- conv_cfg
def test_mixconv_via_conv_cfg():
    cfg = dict(type='MixConv', kernel_sizes=(3, 5, 7))
    ours = BSConvSMobileNetV2(widen_factor=0.5, conv_cfg=cfg, out_indices=(2, 7))
    stock = MobileNetV2(widen_factor=0.5, conv_cfg=cfg, out_indices=(2, 7))
    assert _num_params(ours) == _num_params(stock)
    depthwise = [m for m in ours.modules() if isinstance(m, MixConv) and not m.plain]
    assert len(depthwise) == 17
    assert all(isinstance(c, MixConv) and c.plain for c in ours.projection_convs())
    outs = ours(torch.randn(2, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(2, 16, 8, 8), (2, 1280, 2, 2)]
    loss = outs[-1].mean() + 0.1 * ours.reg_loss()
    loss.backward()
    assert all(c.weight.grad is not None for c in ours.projection_convs())
    v3 = BSConvSMobileNetV3(arch='small', conv_cfg=cfg, cifar=True)
    assert v3(torch.randn(1, 3, 32, 32))[0].shape == (1, 576, 4, 4)
    assert v3.reg_loss().item() > 0


# --------------------------------------------------- training behaviour
def test_v2_frozen_stages_and_norm_eval():
    ours = BSConvSMobileNetV2(widen_factor=0.5, frozen_stages=2)
    ours.train()
    for module in (ours.conv1, ours.layer1, ours.layer2):
        assert all(not p.requires_grad for p in module.parameters())
        assert all(not m.training for m in module.modules() if isinstance(m, _BatchNorm))
    assert all(p.requires_grad for p in ours.layer3.parameters())
    assert all(m.training for m in ours.layer3.modules() if isinstance(m, _BatchNorm))
    ours = BSConvSMobileNetV2(widen_factor=0.5, norm_eval=True)
    ours.train()
    assert not any(m.training for m in ours.modules() if isinstance(m, _BatchNorm))


def test_v3_frozen_stages():
    ours = BSConvSMobileNetV3(arch='small', frozen_stages=2, cifar=True)
    ours.train()
    for module in (ours.layer0, ours.layer1, ours.layer2):
        assert all(not p.requires_grad for p in module.parameters())
        assert all(not m.training for m in module.modules() if isinstance(m, _BatchNorm))
    assert all(p.requires_grad for p in ours.layer3.parameters())


@pytest.mark.parametrize('version,kwargs', [('v2', dict(widen_factor=0.5, with_cp=True)),
                                            ('v3', dict(arch='small', with_cp=True))])
def test_forward_backward(version, kwargs):
    ours, _ = _build(version, **kwargs)
    ours.train()
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    (out, ) = ours(x)
    (out.mean() + ours.reg_loss()).backward()
    assert all(p.grad is not None for p in ours.parameters())


def test_invalid_cifar_argument():
    with pytest.raises(ValueError, match='cifar'):
        BSConvSMobileNetV2(cifar='yes')
    with pytest.raises(ValueError, match='cifar'):
        BSConvSMobileNetV3(cifar=1)


# ------------------------------------------------------------------ configs
def _build_classifier(cfg):
    from mmpretrain.registry import MODELS as PRE_MODELS
    return PRE_MODELS.build(cfg)


@pytest.mark.parametrize('name,backbone,params', [
    # mmpretrain's mobilenet-v2_8xb32_in1k has 3,504,872 parameters.
    ('bsconv/mobilenet-v2-bsconvs_8xb32_in1k.py', BSConvSMobileNetV2, 3_504_872),
    # mmpretrain's mobilenet-v3-large_8xb128_in1k classifier: 5,483,032 parameters.
    ('bsconv/mobilenet-v3-large-bsconvs_8xb128_in1k.py', BSConvSMobileNetV3, 5_483_032),
    # mmpretrain's MobileNetV2 with MixConv(3, 5, 7) depthwise convs (+133,168).
    ('mixnet/mobilenet-v2-mixconv357_8xb32_in1k.py', MobileNetV2, 3_638_040),
])
def test_configs_build(name, backbone, params):
    cfg = Config.fromfile(str(CONFIG_DIR / name))
    model = _build_classifier(cfg.model)
    assert isinstance(model.backbone, backbone)
    assert _num_params(model) == params
    if 'bsconvs' in name:
        assert cfg.custom_hooks == [dict(type='OrthoRegHook', alpha=0.1)]
        assert cfg.optim_wrapper.optimizer.type == 'SGD'
        assert cfg.optim_wrapper.optimizer.momentum == 0.9
        assert cfg.optim_wrapper.optimizer.weight_decay == 1e-4
        batch = cfg.train_dataloader.batch_size * 8
        assert cfg.auto_scale_lr.base_batch_size == batch
        assert cfg.optim_wrapper.optimizer.lr == pytest.approx(0.1 * batch / 256)
        assert cfg.param_scheduler.milestones == [30, 60, 90]
        assert cfg.train_cfg.max_epochs == 100
        # Same network as mmpretrain's baseline, only the regulariser differs.
        stock_type = {BSConvSMobileNetV2: MobileNetV2, BSConvSMobileNetV3: MobileNetV3}[backbone]
        assert _num_params(model.backbone) == _num_params(
            stock_type(**({'arch': 'large'} if backbone is BSConvSMobileNetV3 else {})))
    else:
        conv_cfg = model.backbone.conv_cfg
        assert conv_cfg['type'] == 'MixConv' and tuple(conv_cfg['kernel_sizes']) == (3, 5, 7)
        mixed = [m for m in model.modules() if isinstance(m, MixConv) and not m.plain]
        assert len(mixed) == 17
        # Every 3x3 depthwise conv of C channels now has sum_i c_i * k_i^2 weights.
        extra = sum(sum(c * k * k for c, k in zip(m.in_splits, (3, 5, 7))) - 9 * m.in_channels
                    for m in mixed)
        assert params == 3_504_872 + extra
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
