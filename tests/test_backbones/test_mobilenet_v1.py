# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""MobileNetV1 (DSC, BSConv-U and MixConv variants): shapes, parameter counts,
equivalence with a naive model written from the papers, freezing, use in
mmdet/mmseg models and the ImageNet configs."""
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config
from torch.nn.modules.batchnorm import _BatchNorm

import mm_efficientconv.layers.bsconv  # noqa: F401  (registers BSConvU)
import mm_efficientconv.layers.mixconv  # noqa: F401  (registers MixConv)
from mm_efficientconv.backbones.mobilenet_v1 import MobileNetV1
from mm_efficientconv.layers.bsconv import BSConvU
from mm_efficientconv.layers.mixconv import MixConv

CONFIG_DIR = Path(__file__).resolve().parents[2] / 'configs'

# every test builds in mmpretrain's scope (tests/conftest.py), on one thread (tiny models)
pytestmark = pytest.mark.usefixtures('one_thread', 'mmpretrain_scope')

# (in, out, stride) of the 13 blocks of the paper (Table 1 of MobileNetV1).
PAPER_BLOCKS = [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1),
                (256, 512, 2)] + [(512, 512, 1)] * 5 + [(512, 1024, 2), (1024, 1024, 1)]
# Index of the last block of each of the 5 stages (output strides 2, 4, 8, 16, 32).
STAGE_ENDS = (0, 2, 4, 10, 12)


def _num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _classifier_params(widen_factor: float, bsconvu: bool = False, classes: int = 1000) -> int:
    """Parameter count of MobileNetV1 + linear classifier from the paper's
    table (channels int(c * widen_factor), BN = 2 parameters per channel)."""
    c = [int(32 * widen_factor)] + [int(o * widen_factor) for _, o, _ in PAPER_BLOCKS]
    total = 27 * c[0] + 2 * c[0]
    for cin, cout in zip(c[:-1], c[1:]):
        if bsconvu:  # pw (cin*cout), dw on cout (9*cout), one BN on cout
            total += cin * cout + 9 * cout + 2 * cout
        else:  # dw on cin (9*cin), BN(cin), pw (cin*cout), BN(cout)
            total += 9 * cin + 2 * cin + cin * cout + 2 * cout
    return total + c[-1] * classes + classes


def _randomise_bn(model: nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)


class NaiveMobileNetV1(nn.Module):
    """MobileNetV1 written directly from the papers with torch only.

    DSC block: dw3x3 - BN - ReLU - pw - BN - ReLU. BSConv-U block (BSConv
    paper 4.1): pw (no bias) - dw3x3 (no bias) - BN - ReLU.
    """

    def __init__(self, widen_factor=1.0, bsconvu=False, cifar=False):
        super().__init__()
        c0 = int(32 * widen_factor)
        self.stem = nn.Sequential(
            nn.Conv2d(3, c0, 3, 1 if cifar else 2, 1, bias=False), nn.BatchNorm2d(c0), nn.ReLU())
        self.blocks = nn.ModuleList()
        first_stride = True
        for cin, cout, s in PAPER_BLOCKS:
            cin, cout = int(cin * widen_factor), int(cout * widen_factor)
            if cifar and s == 2 and first_stride:
                s, first_stride = 1, False
            if bsconvu:
                layers = [nn.Conv2d(cin, cout, 1, bias=False),
                          nn.Conv2d(cout, cout, 3, s, 1, groups=cout, bias=False),
                          nn.BatchNorm2d(cout), nn.ReLU()]
            else:
                layers = [nn.Conv2d(cin, cin, 3, s, 1, groups=cin, bias=False),
                          nn.BatchNorm2d(cin), nn.ReLU(),
                          nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
            self.blocks.append(nn.Sequential(*layers))

    def forward(self, x):
        x = self.stem(x)
        outs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in STAGE_ENDS:
                outs.append(x)
        return tuple(outs)


def _copy_into_naive(model: MobileNetV1, naive: NaiveMobileNetV1) -> None:
    """Copies ``model``'s state into ``naive`` entry by entry (both register
    their tensors in the same order), checking every shape."""
    src, dst = model.state_dict(), naive.state_dict()
    assert len(src) == len(dst)
    new_state = {}
    for (ks, vs), (kd, vd) in zip(src.items(), dst.items()):
        assert vs.shape == vd.shape, (ks, kd, vs.shape, vd.shape)
        new_state[kd] = vs
    naive.load_state_dict(new_state, strict=True)


# ----------------------------------------------------------------- arguments
@pytest.mark.parametrize('kwargs', [
    dict(widen_factor=0), dict(widen_factor=-0.5), dict(widen_factor='1.0'),
    dict(widen_factor=True), dict(block_type='bsconvs'), dict(block_type=None),
    dict(out_indices=(5, )), dict(out_indices=(-1, )), dict(out_indices=4),
    dict(out_indices=()), dict(frozen_stages=6), dict(frozen_stages=-2),
    dict(frozen_stages=1.0), dict(block_type='bsconvu', dw_conv_cfg=dict(type='MixConv'))
])
def test_invalid_arguments(kwargs):
    name = next(iter(kwargs)) if 'dw_conv_cfg' not in kwargs else 'dw_conv_cfg'
    with pytest.raises(ValueError, match=name):
        MobileNetV1(**kwargs)


# ------------------------------------------------------------------- shapes
@pytest.mark.parametrize('block_type', ['dsc', 'bsconvu'])
def test_output_shapes_every_out_index(block_type):
    model = MobileNetV1(widen_factor=0.25, block_type=block_type, out_indices=(0, 1, 2, 3, 4))
    outs = model(torch.randn(2, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(2, 16, 32, 32), (2, 32, 16, 16), (2, 64, 8, 8),
                                              (2, 128, 4, 4), (2, 256, 2, 2)]
    assert model.stage_channels == (16, 32, 64, 128, 256)
    for index in range(5):
        single = MobileNetV1(widen_factor=0.25, block_type=block_type, out_indices=(index, ))
        single.load_state_dict(model.state_dict())
        single.eval()
        model.eval()
        x = torch.randn(1, 3, 64, 64)
        (out, ) = single(x)
        assert torch.equal(out, model(x)[index])
    # Outputs come in stage order whatever the order of out_indices.
    unordered = MobileNetV1(widen_factor=0.25, block_type=block_type, out_indices=(3, 1))
    assert [o.shape[1] for o in unordered(torch.randn(2, 3, 32, 32))] == [32, 128]


@pytest.mark.parametrize('block_type', ['dsc', 'bsconvu'])
def test_cifar_variant(block_type):
    model = MobileNetV1(widen_factor=0.25, block_type=block_type, cifar=True,
                        out_indices=(0, 1, 2, 3, 4))
    outs = model(torch.randn(2, 3, 32, 32))
    assert [o.shape[-1] for o in outs] == [32, 32, 16, 8, 4]
    assert outs[-1].shape == (2, 256, 4, 4)
    # Same parameters as the ImageNet variant.
    assert _num_params(model) == _num_params(MobileNetV1(widen_factor=0.25,
                                                         block_type=block_type))


# ------------------------------------------------------- parameter counts
def test_param_count_x1_pinned():
    model = MobileNetV1()
    head = nn.Linear(1024, 1000)
    # MobileNetV1 paper: 4.2M parameters (conv + BN + 1000-class classifier).
    assert _num_params(model) + _num_params(head) == 4_231_976
    assert _num_params(model) == 3_206_976


@pytest.mark.parametrize('widen_factor', [0.25, 0.5, 0.75, 1.0])
@pytest.mark.parametrize('block_type', ['dsc', 'bsconvu'])
def test_width_multipliers(widen_factor, block_type):
    model = MobileNetV1(widen_factor=widen_factor, block_type=block_type)
    width = int(1024 * widen_factor)
    head = nn.Linear(width, 1000)
    total = _num_params(model) + _num_params(head)
    assert total == _classifier_params(widen_factor, block_type == 'bsconvu')
    assert model.stage_channels == tuple(int(c * widen_factor) for c in (64, 128, 256, 512, 1024))
    if block_type == 'bsconvu':
        dsc = _classifier_params(widen_factor, bsconvu=False)
        assert abs(total - dsc) / dsc < 1e-3  # BSConv paper: "same parameter count"


def test_arbitrary_widen_factor_rounds_to_multiple_of_8():
    model = MobileNetV1(widen_factor=0.35, out_indices=(0, 1, 2, 3, 4))
    assert all(c % 8 == 0 for c in model.stage_channels)
    assert model.conv1.out_channels == 16  # make_divisible(11.2, 8)
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == list(model.stage_channels)


# ------------------------------------------ equivalence with the paper model
@pytest.mark.parametrize('block_type,cifar', [('dsc', False), ('bsconvu', False),
                                              ('dsc', True), ('bsconvu', True)])
def test_matches_naive_model(block_type, cifar):
    torch.manual_seed(0)
    model = MobileNetV1(widen_factor=0.25, block_type=block_type, cifar=cifar,
                        out_indices=(0, 1, 2, 3, 4))
    model.init_weights()
    _randomise_bn(model)
    naive = NaiveMobileNetV1(0.25, bsconvu=block_type == 'bsconvu', cifar=cifar)
    _copy_into_naive(model, naive)
    x = torch.randn(2, 3, 32, 32)
    for mode in (False, True):  # eval, then train (batch statistics)
        model.train(mode)
        naive.train(mode)
        for a, b in zip(model(x), naive(x)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_bsconvu_blocks_use_bsconvu_layers():
    model = MobileNetV1(widen_factor=0.25, block_type='bsconvu')
    layers = [m for m in model.modules() if isinstance(m, BSConvU)]
    assert len(layers) == 13
    assert all(not m.plain and m.kernel_size == (3, 3) and m.groups == 1 for m in layers)
    assert [m.stride for m in layers][:3] == [(1, 1), (2, 2), (1, 1)]
    # One BN per block (on the output channels) and none inside BSConvU.
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert len(norms) == 14
    assert not any(isinstance(m, _BatchNorm) for layer in layers for m in layer.modules())
    # The stem stays a regular conv; the only depthwise convs are BSConvU's,
    # which run on the output channels (pointwise first).
    assert type(model.conv1.conv) is nn.Conv2d
    depthwise = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert [id(m) for m in depthwise] == [id(layer.dw) for layer in layers]
    for layer in layers:
        assert layer.pw.weight.shape == (layer.out_channels, layer.in_channels, 1, 1)
        assert layer.dw.groups == layer.dw.in_channels == layer.out_channels


def test_bsconvu_ignores_user_conv_cfg_in_blocks():
    model = MobileNetV1(widen_factor=0.25, block_type='bsconvu',
                        conv_cfg=dict(type='MixConv', kernel_sizes=(3, 5, 7)))
    assert isinstance(model.conv1.conv, MixConv) and model.conv1.conv.plain
    assert sum(isinstance(m, BSConvU) for m in model.modules()) == 13
    assert model(torch.randn(1, 3, 64, 64))[0].shape == (1, 256, 2, 2)


# ------------------------------------------------------------------ MixConv
def test_mixconv_via_conv_cfg():
    cfg = dict(type='MixConv', kernel_sizes=(3, 5, 7))
    model = MobileNetV1(widen_factor=0.25, conv_cfg=cfg, out_indices=(2, 4))
    mix = [m for m in model.modules() if isinstance(m, MixConv)]
    depthwise = [m for m in mix if not m.plain]
    assert len(depthwise) == 13 and all(m.kernel_sizes == (3, 5, 7) for m in depthwise)
    assert all(m.plain for m in mix if m not in depthwise) and len(mix) == 27
    # Extra parameters: each depthwise conv of C channels gets sum_i c_i * k_i^2
    # instead of 9 C (equal split, remainder to the first group).
    extra = 0
    for m in depthwise:
        extra += sum(c * k * k for c, k in zip(m.in_splits, (3, 5, 7))) - 9 * m.in_channels
    assert _num_params(model) == _num_params(MobileNetV1(widen_factor=0.25)) + extra
    outs = model(torch.randn(2, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(2, 64, 8, 8), (2, 256, 2, 2)]
    outs[-1].sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_dw_conv_cfg_overrides_depthwise_only():
    model = MobileNetV1(widen_factor=0.25, dw_conv_cfg=dict(type='MixConv', kernel_sizes=(3, 5)))
    mix = [m for m in model.modules() if isinstance(m, MixConv)]
    assert len(mix) == 13 and all(not m.plain and m.groups == m.in_channels for m in mix)
    assert type(model.conv1.conv) is nn.Conv2d
    # dw_conv_cfg=Conv2d keeps the depthwise convs plain under a custom conv_cfg.
    model = MobileNetV1(widen_factor=0.25, conv_cfg=dict(type='MixConv', kernel_sizes=(3, 5)),
                        dw_conv_cfg=dict(type='Conv2d'))
    assert all(m.plain for m in model.modules() if isinstance(m, MixConv))
    assert sum(type(m) is nn.Conv2d for m in model.modules()) == 13


# ------------------------------------------------- training-mode behaviour
@pytest.mark.parametrize('block_type', ['dsc', 'bsconvu'])
def test_frozen_stages(block_type):
    frozen_stages = 2
    model = MobileNetV1(widen_factor=0.25, block_type=block_type, frozen_stages=frozen_stages)
    model.train()
    frozen = [model.conv1] + [getattr(model, f'layer{i}') for i in (1, 2)]
    for module in frozen:
        assert all(not p.requires_grad for p in module.parameters())
        assert all(not m.training for m in module.modules() if isinstance(m, _BatchNorm))
    for i in (3, 4, 5):
        layer = getattr(model, f'layer{i}')
        assert all(p.requires_grad for p in layer.parameters())
        assert all(m.training for m in layer.modules() if isinstance(m, _BatchNorm))
    # Running statistics of frozen stages do not move during training.
    before = {k: v.clone() for k, v in model.layer2[0].state_dict().items()}
    model(torch.randn(2, 3, 32, 32))
    for k, v in model.layer2[0].state_dict().items():
        assert torch.equal(v, before[k]), k
    # frozen_stages=0 freezes the stem only.
    model = MobileNetV1(widen_factor=0.25, block_type=block_type, frozen_stages=0)
    model.train()
    assert not model.conv1.bn.training and model.layer1[0].training
    assert all(p.requires_grad for p in model.layer1.parameters())


def test_norm_eval():
    model = MobileNetV1(widen_factor=0.25, norm_eval=True)
    model.train()
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert norms and all(not m.training for m in norms)
    assert all(p.requires_grad for p in model.parameters())
    model = MobileNetV1(widen_factor=0.25, norm_eval=False)
    model.train()
    assert all(m.training for m in model.modules() if isinstance(m, _BatchNorm))


@pytest.mark.parametrize('block_type', ['dsc', 'bsconvu'])
def test_forward_backward_and_checkpointing(block_type):
    torch.manual_seed(0)
    model = MobileNetV1(widen_factor=0.25, block_type=block_type, out_indices=(3, 4))
    model.init_weights()
    model_cp = MobileNetV1(widen_factor=0.25, block_type=block_type, out_indices=(3, 4),
                           with_cp=True)
    model_cp.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    losses = []
    for m in (model, model_cp):
        m.train()
        outs = m(x)
        loss = sum(o.pow(2).mean() for o in outs)
        loss.backward()
        losses.append(loss.detach())
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    torch.testing.assert_close(losses[0], losses[1])
    for p, q in zip(model.parameters(), model_cp.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6)


def test_init_weights_default():
    model = MobileNetV1(widen_factor=0.25)
    model.init_weights()
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in norms)


# ------------------------------------------------------------------ configs
@pytest.mark.parametrize('name,block_type,params', [
    ('bsconv/mobilenet-v1_8xb32_in1k.py', 'dsc', 4_231_976),
    ('bsconv/mobilenet-v1-bsconvu_8xb32_in1k.py', 'bsconvu', 4_230_984),
])
def test_configs_build(name, block_type, params):
    from mmpretrain.registry import MODELS as PRE_MODELS
    cfg = Config.fromfile(str(CONFIG_DIR / name))
    assert cfg.model.backbone.type == 'MobileNetV1'
    assert cfg.model.backbone.block_type == block_type
    optimizer = {k: v for k, v in cfg.optim_wrapper.optimizer.items() if k != '_scope_'}
    assert optimizer == dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4)
    assert cfg.param_scheduler.milestones == [30, 60, 90]
    assert cfg.train_cfg.max_epochs == 100 and cfg.auto_scale_lr.base_batch_size == 256
    assert cfg.train_dataloader.batch_size == 32
    assert 'ColorJitter' in [t['type'] for t in cfg.train_dataloader.dataset.pipeline]
    model = PRE_MODELS.build(cfg.model)
    assert isinstance(model.backbone, MobileNetV1)
    assert _num_params(model) == params
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
