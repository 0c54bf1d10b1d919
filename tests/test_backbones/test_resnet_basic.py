# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Tests of BasicBlockResNet, of the upstream ResNet-50 with DOConv (and its
config), and of both inside an mmdet detector and an mmseg segmentor."""
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.utils.dl_utils.parrots_wrapper import _BatchNorm

import mm_efficientconv.layers.bsconv  # noqa: F401  (registers BSConvU/BSConvS)
import mm_efficientconv.layers.doconv  # noqa: F401  (registers DOConv)
from mm_efficientconv.backbones.resnet_basic import BasicBlockResNet
from mm_efficientconv.layers.base import EfficientConv2d
from mm_efficientconv.layers.bsconv import BSConvS, BSConvU
from mm_efficientconv.layers.deploy import switch_to_deploy
from mm_efficientconv.layers.doconv import DOConv

CONFIG_DIR = Path(__file__).resolve().parents[2] / 'configs'
LAYERS = {'BSConvU': BSConvU, 'BSConvS': BSConvS, 'DOConv': DOConv}
# tiny widths for everything that runs a forward pass
TINY = dict(stem_channels=8, base_channels=8)

# every test builds in mmpretrain's scope (tests/conftest.py), on one thread (tiny models)
pytestmark = pytest.mark.usefixtures('one_thread', 'mmpretrain_scope')


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


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_classifier(backbone: dict, num_classes: int = 1000, in_channels: int = 512):
    from mmpretrain.registry import MODELS
    cfg = dict(
        type='ImageClassifier',
        backbone=backbone,
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=num_classes, in_channels=in_channels))
    return MODELS.build(cfg)


# Classifiers with a 1000-class head. The reference implementation (bsconv 0.4.0) counts 6
# more for each (its input BatchNorm): 5,418,798 / 11,689,518 / 17,960,238 / 21,797,678 /
# 41,869,102 / 58,399,534.
IMAGENET_COUNTS = {
    10: ((1, 1, 1, 1), 5_418_792),
    18: ((2, 2, 2, 2), 11_689_512),
    26: ((3, 3, 3, 3), 17_960_232),
    34: ((3, 4, 6, 3), 21_797_672),
    68: ((3, 4, 23, 3), 41_869_096),
    102: ((3, 8, 36, 3), 58_399_528),
}


@pytest.mark.parametrize('depth', sorted(IMAGENET_COUNTS))
def test_param_counts(depth):
    blocks, count = IMAGENET_COUNTS[depth]
    model = build_classifier(dict(type='BasicBlockResNet', depth=depth))
    assert type(model.backbone) is BasicBlockResNet
    assert model.backbone.stage_blocks == blocks
    assert depth == 2 * sum(blocks) + 2
    assert num_params(model) == count


@pytest.mark.parametrize('depth', [18, 34])
def test_same_as_mmpretrain_resnet(depth):
    ours = build_classifier(dict(type='BasicBlockResNet', depth=depth))
    upstream = build_classifier(dict(type='ResNet', depth=depth))
    assert num_params(ours) == num_params(upstream)
    assert ours.state_dict().keys() == upstream.state_dict().keys()
    assert all(a.shape == b.shape for a, b in zip(ours.parameters(), upstream.parameters()))
    assert ([type(m) for m in ours.backbone.modules()][1:]
            == [type(m) for m in upstream.backbone.modules()][1:])


def test_invalid_depth():
    for depth in [50, 101, 20, 0, '18']:
        with pytest.raises(ValueError, match='depth'):
            BasicBlockResNet(depth=depth)


def test_out_indices_shapes():
    model = BasicBlockResNet(depth=10, out_indices=(0, 1, 2, 3), **TINY)
    outs = model(torch.randn(2, 3, 64, 64))
    assert isinstance(outs, tuple)
    assert [tuple(o.shape) for o in outs] == [(2, 8, 16, 16), (2, 16, 8, 8), (2, 32, 4, 4),
                                             (2, 64, 2, 2)]
    model = BasicBlockResNet(depth=10, **TINY)
    model.eval()
    outs = model(torch.randn(1, 3, 32, 32))
    assert len(outs) == 1 and outs[0].shape == (1, 64, 1, 1)


def test_frozen_stages_and_norm_eval():
    model = BasicBlockResNet(depth=10, frozen_stages=2, **TINY)
    model.train()
    for module in (model.conv1, model.norm1, model.layer1, model.layer2):
        assert all(not p.requires_grad for p in module.parameters())
        assert all(not m.training for m in module.modules() if isinstance(m, _BatchNorm))
    for module in (model.layer3, model.layer4):
        assert all(p.requires_grad for p in module.parameters())
        assert all(m.training for m in module.modules() if isinstance(m, _BatchNorm))
    model = BasicBlockResNet(depth=10, norm_eval=True, **TINY)
    model.train()
    assert all(not m.training for m in model.modules() if isinstance(m, _BatchNorm))


@pytest.mark.parametrize('conv_type', ['BSConvU', 'BSConvS', 'DOConv'])
def test_conv_cfg_and_forward_backward(conv_type):
    layer = LAYERS[conv_type]
    model = BasicBlockResNet(depth=10, conv_cfg=dict(type=conv_type), **TINY)
    model.init_weights()
    model.train()
    model(torch.randn(2, 3, 32, 32))[0].mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
    convs = dict(_convs(model))
    assert convs['conv1'].kernel_size == (7, 7)
    assert isinstance(convs['conv1'], layer) and not convs['conv1'].plain
    spatial = [m for m in convs.values() if m.kernel_size != (1, 1)]
    pointwise = [m for m in convs.values() if m.kernel_size == (1, 1)]
    assert len(spatial) == 1 + 4 * 2 and len(pointwise) == 3  # stem, 2 per block, 3 downsamples
    assert all(isinstance(m, layer) and not m.plain for m in spatial)
    assert all(isinstance(m, layer) and m.plain for m in pointwise)


def test_dilated_bsconvu():
    """Segmentation-style strides/dilations reach the converted convs."""
    model = BasicBlockResNet(depth=10, strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4),
                             conv_cfg=dict(type='BSConvU'), out_indices=(3, ), **TINY)
    assert model.layer4[0].conv1.dilation == (4, 4)
    assert isinstance(model.layer4[0].conv1, BSConvU)
    assert model(torch.randn(1, 3, 64, 64))[0].shape == (1, 64, 8, 8)


# ---------------------------------------------------------------- DO-Conv ResNet-50
def test_resnet50_doconv_config_deploys_to_stock_resnet50():
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(str(CONFIG_DIR / 'doconv' / 'resnet50-doconv_8xb32_in1k.py'))
    assert cfg.model.backbone.type == 'ResNet' and cfg.model.backbone.depth == 50
    assert cfg.model.backbone.conv_cfg == dict(type='DOConv')
    assert cfg.custom_imports == dict(imports=['mm_efficientconv'], allow_failed_imports=False)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    doconvs = [m for m in model.modules() if isinstance(m, DOConv)]
    # 1 stem + 16 blocks x 3 convs + 4 downsamples; the 1x1s are plain
    assert len(doconvs) == 1 + 16 * 3 + 4
    assert sum(not m.plain for m in doconvs) == 1 + 16  # 7x7 stem and the 3x3s
    assert num_params(model) > 25_557_032  # the over-parameterisation D
    model.eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
    model = switch_to_deploy(model)
    with torch.no_grad():
        after = model(x)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
    assert not any(isinstance(m, EfficientConv2d) for m in model.modules())
    assert num_params(model) == 25_557_032  # exactly mmpretrain's ResNet-50 classifier
    stock = build_classifier(dict(type='ResNet', depth=50), in_channels=2048)
    assert model.state_dict().keys() == stock.state_dict().keys()
