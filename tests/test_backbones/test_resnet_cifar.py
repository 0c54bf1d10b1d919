# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Tests of CifarResNet / CifarWideResNet (BSConv paper, Table 2) and of the
configs/bsconv CIFAR configs."""
import copy
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.utils.dl_utils.parrots_wrapper import _BatchNorm

import mm_efficientconv.layers.bsconv  # noqa: F401  (registers BSConvU/BSConvS)
import mm_efficientconv.layers.doconv  # noqa: F401  (registers DOConv)
from mm_efficientconv.backbones.resnet_cifar import (CifarResNet, CifarWideResNet,
                                                     WideBasicBlock)
from mm_efficientconv.layers.base import EfficientConv2d
from mm_efficientconv.layers.bsconv import BSConvS, BSConvU
from mm_efficientconv.layers.deploy import switch_to_deploy
from mm_efficientconv.layers.doconv import DOConv

CONFIG_DIR = Path(__file__).resolve().parents[2] / 'configs'

LAYERS = {'BSConvU': BSConvU, 'BSConvS': BSConvS, 'DOConv': DOConv}

# every test builds in mmpretrain's scope (tests/conftest.py), on one thread (tiny models)
pytestmark = pytest.mark.usefixtures('one_thread', 'mmpretrain_scope')


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_classifier(backbone: dict, num_classes: int, in_channels: int) -> nn.Module:
    from mmpretrain.registry import MODELS
    cfg = dict(
        type='ImageClassifier',
        backbone=backbone,
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=num_classes, in_channels=in_channels))
    return MODELS.build(cfg)


def build_from_config(name: str) -> nn.Module:
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(str(CONFIG_DIR / name))
    return MODELS.build(cfg.model)


# ---------------------------------------------------------------- parameter counts
# Whole classifiers (backbone + GAP + linear head). The reference implementation
# (bsconv 0.4.0 `get_model`) counts 6 parameters more for each model: its input BatchNorm
# (`data_bn`), which here is the data preprocessor's normalisation. Its counts are
# 272,480 / 278,330 / 238,960 / 244,810 / 5,038,560 / 5,055,930 / 4,240,112 / 4,286,282.
# (config, backbone, head in_channels, measured count, paper count, paper precision)
TABLE2 = [
    ('resnet20_1xb128_cifar10.py', dict(type='CifarResNet', depth=20), 64, 10,
     272_474, 272.5e3, 0.05e3),
    ('resnet20_1xb128_cifar100.py', dict(type='CifarResNet', depth=20), 64, 100,
     278_324, 278.3e3, 0.05e3),
    ('resnet110-bsconvu_1xb128_cifar10.py',
     dict(type='CifarResNet', depth=110, conv_cfg=dict(type='BSConvU')), 64, 10,
     238_954, 239.0e3, 0.05e3),
    ('resnet110-bsconvu_1xb128_cifar100.py',
     dict(type='CifarResNet', depth=110, conv_cfg=dict(type='BSConvU')), 64, 100,
     244_804, 244.8e3, 0.05e3),
    ('wrn40-3_1xb128_cifar10.py', dict(type='CifarWideResNet', depth=40, widen_factor=3), 192,
     10, 5_038_554, 5.04e6, 0.005e6),
    ('wrn40-3_1xb128_cifar100.py', dict(type='CifarWideResNet', depth=40, widen_factor=3), 192,
     100, 5_055_924, 5.0e6, 0.1e6),
    ('wrn40-8-bsconvu_1xb128_cifar10.py',
     dict(type='CifarWideResNet', depth=40, widen_factor=8, conv_cfg=dict(type='BSConvU')), 512,
     10, 4_240_106, 4.24e6, 0.005e6),
    ('wrn40-8-bsconvu_1xb128_cifar100.py',
     dict(type='CifarWideResNet', depth=40, widen_factor=8, conv_cfg=dict(type='BSConvU')), 512,
     100, 4_286_276, 4.3e6, 0.05e6),
]


@pytest.mark.parametrize('config,backbone,channels,num_classes,count,paper,precision', TABLE2,
                         ids=[row[0] for row in TABLE2])
def test_table2_param_counts(config, backbone, channels, num_classes, count, paper, precision):
    model = build_classifier(copy.deepcopy(backbone), num_classes, channels)
    assert num_params(model) == count
    # the paper's rounded number, and within 0.1% of it where given to 4 digits
    assert abs(count - paper) <= precision
    # the config builds the same model (default scope mmpretrain)
    model_cfg = build_from_config(f'bsconv/{config}')
    assert num_params(model_cfg) == count
    assert type(model_cfg.backbone) is type(model.backbone)


def test_cifar100_twins_differ_by_head():
    for c10, c100 in zip(TABLE2[0::2], TABLE2[1::2]):
        channels = c10[2]
        assert c100[4] - c10[4] == (100 - 10) * (channels + 1)


def test_cifar_configs_protocol():
    for config in [row[0] for row in TABLE2]:
        cfg = Config.fromfile(str(CONFIG_DIR / 'bsconv' / config))
        num_classes = 100 if config.endswith('cifar100.py') else 10
        assert cfg.model.head.num_classes == num_classes
        assert cfg.train_dataloader.dataset.type == f'CIFAR{num_classes}'
        assert cfg.data_preprocessor.num_classes == num_classes
        assert cfg.train_dataloader.batch_size == 128
        optimizer = {k: v for k, v in cfg.optim_wrapper.optimizer.items() if k != '_scope_'}
        assert optimizer == dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4)
        assert cfg.param_scheduler.milestones == [100, 150, 180]
        assert cfg.param_scheduler.gamma == 0.1
        assert cfg.train_cfg.max_epochs == 200
        pipeline = [t['type'] for t in cfg.train_dataloader.dataset.pipeline]
        assert pipeline[:2] == ['RandomCrop', 'RandomFlip']
        assert cfg.train_dataloader.dataset.pipeline[0]['padding'] == 4
        assert cfg.custom_imports == dict(imports=['mm_efficientconv'],
                                          allow_failed_imports=False)


# mmengine's counter (conv + linear multiply-accumulates; BN, ReLU, pooling not counted)
RESNET20_FLOPS = 41_218_688


def test_resnet20_flops():
    from mmengine.analysis import get_model_complexity_info
    model = build_classifier(dict(type='CifarResNet', depth=20), 10, 64).eval()
    info = get_model_complexity_info(model, input_shape=(3, 32, 32), show_table=False,
                                     show_arch=False)
    assert info['params'] == 272_474
    # at 32x32; paper: 41.3M
    assert info['flops'] == RESNET20_FLOPS
    assert abs(info['flops'] - 41.3e6) <= 0.3e6



# ---------------------------------------------------------------- CifarResNet
def test_cifar_resnet_depths():
    for depth, n in [(8, 1), (20, 3), (32, 5), (56, 9), (110, 18)]:
        model = CifarResNet(depth=depth, widen_factor=0.25)
        assert model.stage_blocks == (n, n, n)
        assert [len(getattr(model, f'layer{i}')) for i in (1, 2, 3)] == [n, n, n]
    for depth in [2, 18, 21, 22, '20', 20.0, True]:
        with pytest.raises(ValueError, match='depth'):
            CifarResNet(depth=depth)
    with pytest.raises(ValueError, match='widen_factor'):
        CifarResNet(depth=20, widen_factor=0)
    with pytest.raises(ValueError, match='out_indices'):
        CifarResNet(depth=20, out_indices=(3, ))
    with pytest.raises(ValueError, match='frozen_stages'):
        CifarResNet(depth=20, frozen_stages=4)
    assert 110 in CifarResNet.arch_settings and 111 not in CifarResNet.arch_settings
    assert list(CifarResNet.arch_settings) == [20, 32, 44, 56, 110]


def test_cifar_resnet_structure():
    model = CifarResNet(depth=20)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert model.conv1.out_channels == 16
    assert isinstance(model.norm1, nn.BatchNorm2d)
    assert [getattr(model, f'layer{i}')[-1].out_channels for i in (1, 2, 3)] == [16, 32, 64]
    # projection shortcuts (1x1 conv + BN) only where the shape changes
    assert model.layer1[0].downsample is None
    for name in ('layer2', 'layer3'):
        downsample = getattr(model, name)[0].downsample
        assert isinstance(downsample[0], nn.Conv2d) and downsample[0].kernel_size == (1, 1)
        assert downsample[0].stride == (2, 2)
        assert isinstance(downsample[1], nn.BatchNorm2d)
        assert all(block.downsample is None for block in list(getattr(model, name))[1:])
    assert model.feat_dim == 64
    # width multiplier: stages scale, the stem does not; layer1 then needs a projection
    wide = CifarResNet(depth=8, widen_factor=2)
    assert wide.conv1.out_channels == 16
    assert [getattr(wide, f'layer{i}')[0].out_channels for i in (1, 2, 3)] == [32, 64, 128]
    assert wide.layer1[0].downsample is not None


def test_cifar_resnet_out_indices():
    x = torch.randn(2, 3, 16, 16)
    model = CifarResNet(depth=8, widen_factor=0.5, out_indices=(0, 1, 2))
    outs = model(x)
    assert isinstance(outs, tuple)
    assert [tuple(o.shape) for o in outs] == [(2, 8, 16, 16), (2, 16, 8, 8), (2, 32, 4, 4)]
    outs = CifarResNet(depth=8, widen_factor=0.5, out_indices=-1)(x)
    assert len(outs) == 1 and outs[0].shape == (2, 32, 4, 4)
    outs = CifarResNet(depth=8, widen_factor=0.5, out_indices=(1, ))(x)
    assert len(outs) == 1 and outs[0].shape == (2, 16, 8, 8)


def _check_frozen(model, frozen, trainable):
    model.train()
    for module in frozen:
        assert all(not p.requires_grad for p in module.parameters())
        assert all(not m.training for m in module.modules() if isinstance(m, _BatchNorm))
    for module in trainable:
        assert all(p.requires_grad for p in module.parameters())
        assert all(m.training for m in module.modules() if isinstance(m, _BatchNorm))


def test_cifar_resnet_frozen_stages():
    model = CifarResNet(depth=8, widen_factor=0.5, frozen_stages=1)
    _check_frozen(model, [model.conv1, model.norm1, model.layer1],
                  [model.layer2, model.layer3])
    frozen_before = {k: v.clone() for k, v in model.state_dict().items() if 'layer1' in k}
    optim = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(2, 3, 8, 8))[0].sum().backward()
    optim.step()
    for k, v in model.state_dict().items():
        if 'layer1' in k:
            assert torch.equal(v, frozen_before[k]), k  # neither weights nor BN stats move
    model = CifarResNet(depth=8, widen_factor=0.5, frozen_stages=0)
    _check_frozen(model, [model.conv1, model.norm1], [model.layer1])


def test_cifar_resnet_norm_eval():
    model = CifarResNet(depth=8, widen_factor=0.5, norm_eval=True)
    model.train()
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert bns and all(not m.training for m in bns)
    stats = [m.running_mean.clone() for m in bns]
    model(torch.randn(2, 3, 8, 8))
    assert all(torch.equal(s, m.running_mean) for s, m in zip(stats, bns))
    assert model.training  # only the norm layers are in eval mode


@pytest.mark.parametrize('conv_type', [None, 'BSConvU', 'BSConvS', 'DOConv'])
def test_cifar_resnet_forward_backward(conv_type):
    conv_cfg = None if conv_type is None else dict(type=conv_type)
    model = CifarResNet(depth=8, widen_factor=0.5, conv_cfg=conv_cfg, out_indices=(0, 1, 2))
    model.init_weights()
    model.train()
    outs = model(torch.randn(2, 3, 8, 8))
    sum(o.mean() for o in outs).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name


def test_cifar_resnet_with_cp():
    torch.manual_seed(0)
    model = CifarResNet(depth=8, widen_factor=0.5, conv_cfg=dict(type='BSConvU'))
    model_cp = CifarResNet(depth=8, widen_factor=0.5, conv_cfg=dict(type='BSConvU'),
                           with_cp=True)
    model_cp.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    out, out_cp = model(x)[0], model_cp(x)[0]
    torch.testing.assert_close(out, out_cp)
    out.sum().backward()
    out_cp.sum().backward()
    for (name, p), p_cp in zip(model.named_parameters(), model_cp.parameters()):
        torch.testing.assert_close(p.grad, p_cp.grad, msg=name)


def _convs(model):
    """(name, module) of every conv layer of ``model``: ``nn.Conv2d`` s and the
    layers of this package, not the sub-convs inside those layers."""
    convs = []
    for name, module in model.named_modules():
        if any(name.startswith(f'{outer}.') for outer, _ in convs):
            continue
        if isinstance(module, (nn.Conv2d, EfficientConv2d)):
            convs.append((name, module))
    return convs


def _check_conv_types(model, conv_type):
    layer = LAYERS[conv_type]
    convs = _convs(model)
    assert convs
    spatial = [(n, m) for n, m in convs if m.kernel_size != (1, 1)]
    pointwise = [(n, m) for n, m in convs if m.kernel_size == (1, 1)]
    assert 'conv1' in dict(spatial)  # the stem is converted too
    for name, module in spatial:
        assert isinstance(module, layer) and not module.plain, name
    assert pointwise  # the projection shortcuts
    for name, module in pointwise:
        assert isinstance(module, layer) and module.plain, name
        assert num_params(module) == module.in_channels * module.out_channels, name
    return spatial, pointwise


@pytest.mark.parametrize('conv_type', ['BSConvU', 'BSConvS', 'DOConv'])
def test_cifar_resnet_conv_cfg(conv_type):
    model = CifarResNet(depth=8, widen_factor=0.5, conv_cfg=dict(type=conv_type))
    spatial, _ = _check_conv_types(model, conv_type)
    assert len(spatial) == 1 + 3 * 2  # stem + two 3x3 convs per block
    if conv_type == 'BSConvS':
        losses = [m.reg_loss() for _, m in spatial]
        assert all(loss.dim() == 0 and loss.requires_grad for loss in losses)
    if conv_type == 'BSConvU':
        # pointwise (in*out) + depthwise (out*9) per converted 3x3 conv
        for _, m in spatial:
            assert num_params(m) == m.in_channels * m.out_channels + m.out_channels * 9


def test_cifar_resnet_bsconvu_params():
    plain = CifarResNet(depth=20)
    bsconv = CifarResNet(depth=20, conv_cfg=dict(type='BSConvU'))
    assert num_params(plain) == 271_824  # + 650 head = 272,474
    assert num_params(bsconv) < num_params(plain) / 6


def test_cifar_resnet_doconv_deploy():
    torch.manual_seed(0)
    plain = CifarResNet(depth=8, widen_factor=0.5).eval()
    model = CifarResNet(depth=8, widen_factor=0.5, conv_cfg=dict(type='DOConv'),
                        out_indices=(0, 1, 2))
    model.init_weights()
    model.eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        before = model(x)
    model = switch_to_deploy(model)
    with torch.no_grad():
        after = model(x)
    for b, a in zip(before, after):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert not any(isinstance(m, DOConv) for m in model.modules())
    assert num_params(model) == num_params(plain)
    assert model.state_dict().keys() == plain.state_dict().keys()


def test_cifar_resnet_init_weights():
    model = CifarResNet(depth=8, widen_factor=0.5, conv_cfg=dict(type='BSConvU'))
    model.init_weights()
    for name in ('layer1', 'layer2', 'layer3'):
        # zero_init_residual: each block starts as its shortcut
        assert torch.count_nonzero(getattr(model, name)[0].norm2.weight) == 0
    assert torch.all(model.norm1.weight == 1)


# ---------------------------------------------------------------- CifarWideResNet
def test_wrn_depths_and_structure():
    for depth, n in [(10, 1), (16, 2), (28, 4), (40, 6)]:
        model = CifarWideResNet(depth=depth, widen_factor=1)
        assert model.stage_blocks == (n, n, n)
        assert [len(getattr(model, f'layer{i}')) for i in (1, 2, 3)] == [n, n, n]
    for depth in [4, 20, 26, 41, '40', None]:
        with pytest.raises(ValueError, match='depth'):
            CifarWideResNet(depth=depth)
    with pytest.raises(ValueError, match='widen_factor'):
        CifarWideResNet(depth=16, widen_factor=-1)
    with pytest.raises(ValueError, match='drop_rate'):
        CifarWideResNet(depth=16, drop_rate=1.0)
    with pytest.raises(ValueError, match='frozen_stages'):
        CifarWideResNet(depth=16, frozen_stages=-2)
    assert list(CifarWideResNet.arch_settings) == [16, 22, 28, 40]

    model = CifarWideResNet(depth=16, widen_factor=3)
    # plain stem conv (no norm / activation: the blocks are pre-activation)
    assert isinstance(model.conv1, nn.Conv2d) and model.conv1.out_channels == 16
    assert not hasattr(model, 'norm1')
    assert [getattr(model, f'layer{i}')[0].out_channels for i in (1, 2, 3)] == [48, 96, 192]
    for i, stride in zip((1, 2, 3), (1, 2, 2)):
        first, second = getattr(model, f'layer{i}')
        assert isinstance(first, WideBasicBlock)
        assert first.conv1.stride == (stride, stride)
        assert first.shortcut.kernel_size == (1, 1) and first.shortcut.stride == (stride, stride)
        assert first.shortcut.bias is None
        assert second.shortcut is None
    assert isinstance(model.final_norm, nn.BatchNorm2d)
    assert model.final_norm.num_features == 192 and model.feat_dim == 192
    # widen_factor 1: the first block of layer1 keeps the identity (16 -> 16)
    assert CifarWideResNet(depth=10).layer1[0].shortcut is None


def test_wrn_block_matches_naive_preact():
    """The wide block computes BN-ReLU-conv-BN-ReLU-conv + (projected) preact."""
    torch.manual_seed(0)
    block = WideBasicBlock(4, 6, stride=2).eval()
    for m in block.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 2)
            m.bias.data.uniform_(-1, 1)
    x = torch.randn(2, 4, 8, 8)

    def bn(m, t):
        return (t - m.running_mean[:, None, None]) / torch.sqrt(
            m.running_var[:, None, None] + m.eps) * m.weight[:, None, None] + m.bias[:, None, None]

    pre = torch.relu(bn(block.norm1, x))
    out = nn.functional.conv2d(pre, block.conv1.weight, stride=2, padding=1)
    out = nn.functional.conv2d(torch.relu(bn(block.norm2, out)), block.conv2.weight, padding=1)
    expected = out + nn.functional.conv2d(pre, block.shortcut.weight, stride=2)
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected)


def test_wrn_out_indices_and_final_activation():
    model = CifarWideResNet(depth=10, widen_factor=0.5, out_indices=(0, 1, 2))
    model.eval()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, 16, 16))
    assert [tuple(o.shape) for o in outs] == [(2, 8, 16, 16), (2, 16, 8, 8), (2, 32, 4, 4)]
    assert outs[2].min() >= 0  # after the final BN + ReLU
    assert outs[1].min() < 0  # raw pre-activation sum
    outs = CifarWideResNet(depth=10, widen_factor=0.5, out_indices=1)(torch.randn(1, 3, 8, 8))
    assert len(outs) == 1 and outs[0].shape == (1, 16, 4, 4)


def test_wrn_dropout():
    model = CifarWideResNet(depth=10, widen_factor=0.5, drop_rate=0.3)
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert len(drops) == 3 and all(d.p == 0.3 for d in drops)
    assert not any(isinstance(m, nn.Dropout) for m in CifarWideResNet(depth=10).modules())
    x = torch.randn(2, 3, 8, 8)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], model(x)[0])


def test_wrn_frozen_stages_and_norm_eval():
    model = CifarWideResNet(depth=10, widen_factor=0.5, frozen_stages=2)
    _check_frozen(model, [model.conv1, model.layer1, model.layer2],
                  [model.layer3, model.final_norm])
    model = CifarWideResNet(depth=10, widen_factor=0.5, frozen_stages=3)
    _check_frozen(model, [model.conv1, model.layer3, model.final_norm], [])
    assert all(not p.requires_grad for p in model.parameters())

    model = CifarWideResNet(depth=10, widen_factor=0.5, norm_eval=True)
    model.train()
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert len(bns) == 2 * 3 + 1 and all(not m.training for m in bns)
    assert model.training


@pytest.mark.parametrize('conv_type', [None, 'BSConvU', 'BSConvS', 'DOConv'])
def test_wrn_forward_backward_conv_cfg(conv_type):
    conv_cfg = None if conv_type is None else dict(type=conv_type)
    model = CifarWideResNet(depth=10, widen_factor=0.5, conv_cfg=conv_cfg, drop_rate=0.1)
    model.init_weights()
    model.train()
    model(torch.randn(2, 3, 8, 8))[0].mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
    if conv_type is not None:
        spatial, pointwise = _check_conv_types(model, conv_type)
        assert len(spatial) == 1 + 3 * 2
        assert len(pointwise) == 3  # projections: 16 -> 8 (layer1), 8 -> 16, 16 -> 32


def test_wrn_with_cp():
    torch.manual_seed(0)
    model = CifarWideResNet(depth=10, widen_factor=0.5)
    model_cp = CifarWideResNet(depth=10, widen_factor=0.5, with_cp=True)
    model_cp.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    out, out_cp = model(x)[0], model_cp(x)[0]
    torch.testing.assert_close(out, out_cp)
    out.sum().backward()
    out_cp.sum().backward()
    for (name, p), p_cp in zip(model.named_parameters(), model_cp.parameters()):
        torch.testing.assert_close(p.grad, p_cp.grad, msg=name)
