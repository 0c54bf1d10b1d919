# Copyright (c) mm_efficientconv contributors. All rights reserved.
import copy

import pytest
import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

import mm_efficientconv.backbones.mixnet  # noqa: F401  (registers MixNet)
import mm_efficientconv.layers.mixconv  # noqa: F401  (registers MixConv, MixGroupedPointwise)
from mm_efficientconv.backbones.blocks import MixInvertedResidual
from mm_efficientconv.backbones.mixnet import MixNet, convert_timm_mixnet
from mm_efficientconv.layers.deploy import switch_to_deploy
from mm_efficientconv.layers.mixconv import MixConv, MixGroupedPointwise

PARAMS = {'s': 4_134_606, 'm': 5_014_382, 'l': 7_329_252}
CHANNELS = {
    's': [16, 16, 24, 40, 80, 120, 200, 1536],
    'm': [24, 24, 32, 40, 80, 120, 200, 1536],
    'l': [32, 32, 40, 56, 104, 160, 264, 1536],
}
STRIDES = [2, 2, 4, 8, 16, 16, 32, 32]

# every test builds in mmpretrain's scope (tests/conftest.py), on one thread (tiny models)
pytestmark = pytest.mark.usefixtures('one_thread', 'mmpretrain_scope')


def build_classifier(arch, **backbone_kwargs):
    from mmpretrain.registry import MODELS as PRETRAIN_MODELS
    cfg = dict(
        type='ImageClassifier',
        backbone=dict(type='MixNet', arch=arch, **backbone_kwargs),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=1000, in_channels=1536))
    return PRETRAIN_MODELS.build(cfg)


def num_params(model):
    return sum(p.numel() for p in model.parameters())


def randomize_bn(model, seed=0):
    """Non-trivial BN statistics and affine parameters, so that equivalence
    tests in eval mode check the norm layers too."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)


# ------------------------------------------------------------------ structure
@pytest.mark.parametrize('arch', ['s', 'm', 'l'])
def test_param_count_with_classifier(arch):
    model = build_classifier(arch)
    assert num_params(model) == PARAMS[arch]


@pytest.mark.parametrize('arch', ['s', 'm', 'l'])
def test_stage_channels(arch):
    model = MixNet(arch=arch, out_indices=tuple(range(8)))
    assert model.stage_channels == CHANNELS[arch]
    assert model.out_channels == CHANNELS[arch]
    assert len(model.layers) == 8


def test_forward_shapes_64():
    model = MixNet('s', out_indices=tuple(range(8)))
    model.eval()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, 64, 64))
    assert len(outs) == 8
    for out, c, s in zip(outs, CHANNELS['s'], STRIDES):
        assert out.shape == (2, c, 64 // s, 64 // s)


@pytest.mark.parametrize('arch', ['m', 'l'])
def test_forward_shapes_detection_indices(arch):
    model = MixNet(arch, out_indices=(2, 3, 5, 6))
    model.eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
    expected = [CHANNELS[arch][i] for i in (2, 3, 5, 6)]
    assert [o.shape[1] for o in outs] == expected
    assert [o.shape[-1] for o in outs] == [16, 8, 4, 2]


def test_forward_shapes_224_and_order():
    model = MixNet('s', out_indices=(7, 2, -2))  # any order, negative indices
    assert model.out_indices == [7, 2, 6]
    model.eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 224, 224))
    assert [tuple(o.shape) for o in outs] == [(1, 1536, 7, 7), (1, 24, 56, 56), (1, 200, 7, 7)]


def test_default_out_indices_is_head():
    model = MixNet('s').eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 32, 32))
    assert isinstance(outs, tuple) and len(outs) == 1
    assert outs[0].shape == (1, 1536, 1, 1)


def test_block_structure():
    model = MixNet('s')
    stage1 = model.layers[1]
    ds = stage1[0]
    assert not ds.with_expand_conv and ds.with_res_shortcut and not ds.with_se
    assert type(ds.depthwise_conv.conv) is nn.Conv2d
    # stage 3 first block: kernels 3/5/7, ungrouped expand, split project, SE 0.25 of 40
    blk = model.layers[4][0]
    assert isinstance(blk.depthwise_conv.conv, MixConv)
    assert blk.depthwise_conv.conv.kernel_sizes == (3, 5, 7)
    assert blk.depthwise_conv.conv.in_splits == (80, 80, 80)
    assert type(blk.expand_conv.conv) is nn.Conv2d
    assert isinstance(blk.linear_conv.conv, MixGroupedPointwise)
    assert blk.linear_conv.conv.num_splits == 2
    assert blk.se.conv1.conv.out_channels == 10  # int(40 * 0.25): block input, not 240
    assert isinstance(blk.se.conv1.activate, nn.SiLU)
    assert not blk.with_res_shortcut
    assert model.layers[4][1].with_res_shortcut
    # stage 5 first block: the five-kernel MixConv, 200 / 5 channels each
    first = model.layers[6][0]
    assert first.depthwise_conv.conv.kernel_sizes == (3, 5, 7, 9, 11)
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            assert m.eps == 1e-3


def test_block_dsc_and_split_channels():
    blk = MixInvertedResidual(10, 10, kernel_sizes=(3, 5, 7), expand_ratio=1, se_ratio=0.5)
    assert not hasattr(blk, 'expand_conv')
    assert blk.depthwise_conv.conv.in_splits == (4, 3, 3)  # remainder to the first group
    assert blk.se.conv1.conv.out_channels == 5
    x = torch.randn(2, 10, 9, 9)
    assert blk(x).shape == x.shape
    blk = MixInvertedResidual(8, 16, kernel_sizes=3, stride=2, expand_ratio=3,
                              expand_splits=2, project_splits=2)
    assert blk.mid_channels == 24
    assert blk(torch.randn(1, 8, 9, 9)).shape == (1, 16, 5, 5)


def test_block_residual_matches_naive():
    """The block computes x + BN(proj(SE(act(BN(mixdw(act(BN(expand(x))))))))),
    checked against a direct evaluation with F.conv2d per channel group."""
    import torch.nn.functional as F
    torch.manual_seed(0)
    blk = MixInvertedResidual(6, 6, kernel_sizes=(3, 5), expand_ratio=2, se_ratio=0.5,
                              expand_splits=2, project_splits=2,
                              act_cfg=dict(type='SiLU')).eval()
    randomize_bn(blk)
    x = torch.randn(2, 6, 7, 7)

    def bn(y, m):
        return F.batch_norm(y, m.running_mean, m.running_var, m.weight, m.bias, False, 0., m.eps)

    e = blk.expand_conv.conv.kernels
    y = torch.cat([F.conv2d(x[:, :3], e[0]), F.conv2d(x[:, 3:], e[1])], 1)
    y = F.silu(bn(y, blk.expand_conv.bn))
    k = blk.depthwise_conv.conv.kernels
    y = torch.cat([F.conv2d(y[:, :6], k[0], padding=1, groups=6),
                   F.conv2d(y[:, 6:], k[1], padding=2, groups=6)], 1)
    y = F.silu(bn(y, blk.depthwise_conv.bn))
    s = y.mean((2, 3), keepdim=True)
    c1, c2 = blk.se.conv1.conv, blk.se.conv2.conv
    assert c1.out_channels == 3
    s = torch.sigmoid(F.conv2d(F.silu(F.conv2d(s, c1.weight, c1.bias)), c2.weight, c2.bias))
    y = y * s
    p = blk.linear_conv.conv.kernels
    y = torch.cat([F.conv2d(y[:, :6], p[0]), F.conv2d(y[:, 6:], p[1])], 1)
    y = bn(y, blk.linear_conv.bn) + x
    with torch.no_grad():
        torch.testing.assert_close(blk(x), y, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------- arguments
def test_invalid_arguments():
    with pytest.raises(ValueError, match=r"arch must be one of \['l', 'm', 's'\]"):
        MixNet('xl')
    with pytest.raises(ValueError, match='out_indices'):
        MixNet('s', out_indices=(8, ))
    with pytest.raises(ValueError, match='out_indices'):
        MixNet('s', out_indices=(-9, ))
    with pytest.raises(ValueError, match='frozen_stages'):
        MixNet('s', frozen_stages=9)
    with pytest.raises(ValueError, match='drop_path_rate'):
        MixNet('s', drop_path_rate=1.5)
    with pytest.raises(ValueError, match='missing'):
        MixNet(dict(stem_channels=16, stages=[]))
    bad = copy.deepcopy(MixNet.arch_settings['s'])
    bad['stages'][1][0][6] = 'gelu'
    with pytest.raises(ValueError, match=r'arch\["stages"\]\[1\]\[0\]: act'):
        MixNet(bad)
    bad = copy.deepcopy(MixNet.arch_settings['s'])
    bad['stages'][2][0][4] = 3
    with pytest.raises(ValueError, match='stride must be 1 or 2'):
        MixNet(bad)
    with pytest.raises(ValueError, match='kernel_sizes'):
        MixInvertedResidual(8, 8, kernel_sizes=(3, 4))
    with pytest.raises(ValueError, match='expand_ratio'):
        MixInvertedResidual(8, 8, expand_ratio=0.5)


def test_custom_arch():
    arch = dict(
        stem_channels=8,
        head_channels=64,
        stages=[[[1, (3, ), 1, 8, 1, 0, 'relu', 1, 1]],
                [[2, (3, 5), 3, 16, 2, 0.25, 'swish', 2, 2]],
                [[1, (3, 5, 7), 2, 24, 2, 0.5, dict(type='HSwish'), 1, 2]]])
    model = MixNet(arch, out_indices=(1, 2, 3, 4))
    assert model.stage_channels == [8, 8, 16, 24, 64]
    outs = model(torch.randn(1, 3, 32, 32))
    assert [tuple(o.shape) for o in outs] == [(1, 8, 16, 16), (1, 16, 8, 8), (1, 24, 4, 4),
                                              (1, 64, 4, 4)]
    assert type(model.layers[3][0].depthwise_conv.activate).__name__ in ('HSwish', 'Hardswish')


# ------------------------------------------------------------ train modes
def test_frozen_stages():
    model = MixNet('s', frozen_stages=3, out_indices=(3, ))
    model.init_weights()
    model.train()
    for i, layer in enumerate(model.layers):
        frozen = i < 3
        for p in layer.parameters():
            assert p.requires_grad is not frozen
        for m in layer.modules():
            if isinstance(m, _BatchNorm):
                assert m.training is not frozen
    out = model(torch.randn(2, 3, 32, 32))[0]
    out.sum().backward()
    assert all(p.grad is None for p in model.layers[2].parameters())
    assert all(p.grad is not None for p in model.layers[3].parameters())


def test_norm_eval():
    model = MixNet('s', norm_eval=True)
    model.train()
    assert model.training
    assert all(not m.training for m in model.modules() if isinstance(m, _BatchNorm))
    mean = model.layers[0].bn.running_mean.clone()
    model(torch.randn(2, 3, 32, 32))
    torch.testing.assert_close(model.layers[0].bn.running_mean, mean)


def test_forward_backward_with_cp_and_drop_path():
    torch.manual_seed(0)
    model = MixNet('s', out_indices=(5, ), with_cp=True, drop_path_rate=0.2)
    model.init_weights()
    model.train()
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    out = model(x)[0]
    assert out.shape == (2, 120, 2, 2)
    out.pow(2).mean().backward()
    mix = model.layers[3][0].depthwise_conv.conv
    assert isinstance(mix, MixConv)
    assert all(k.grad is not None and k.grad.abs().sum() > 0 for k in mix.kernels)
    assert model.layers[3][1].drop_path.drop_prob > 0
    assert x.grad is not None


def test_init_weights_initialises_factorised_convs():
    torch.manual_seed(0)
    model = MixNet('s')
    mix = model.layers[6][0].depthwise_conv.conv
    before = [k.detach().clone() for k in mix.kernels]
    model.init_weights()
    for old, new in zip(before, mix.kernels):
        assert not torch.equal(old, new)
        fan_out = new.shape[0] * new.shape[2] * new.shape[3]
        assert abs(new.std().item() / (2 / fan_out)**0.5 - 1) < 0.35
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            assert torch.all(m.weight == 1)


# ------------------------------------------------------------------ deploy
def test_switch_to_deploy():
    torch.manual_seed(0)
    model = MixNet('s', out_indices=(2, 3, 5, 6, 7))
    model.init_weights()
    randomize_bn(model)
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    assert any(isinstance(m, MixConv) for m in model.modules())
    deployed = switch_to_deploy(model)
    assert deployed is model
    assert not any(isinstance(m, (MixConv, MixGroupedPointwise)) for m in model.modules())
    assert all(type(m) is nn.Conv2d for m in model.modules()
               if isinstance(m, nn.Conv2d) or hasattr(m, 'switch_to_deploy'))
    with torch.no_grad():
        out = model(x)
    for a, b in zip(ref, out):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert switch_to_deploy(model) is model  # idempotent


# -------------------------------------------------------------------- timm
@pytest.mark.parametrize('arch', ['s', 'm', 'l'])
def test_timm_equivalence(arch):
    timm = pytest.importorskip('timm')
    torch.manual_seed(0)
    ref = timm.create_model(f'mixnet_{arch}', pretrained=False).eval()
    randomize_bn(ref, seed=1)
    assert num_params(ref) == PARAMS[arch]
    model = build_classifier(arch, norm_cfg=dict(type='BN', eps=1e-5)).eval()
    state = convert_timm_mixnet(ref.state_dict())
    missing, unexpected = model.load_state_dict(state, strict=True)
    assert not missing and not unexpected
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = ref(x)
        out = model(x)
    assert out.shape == (2, 1000)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


def test_timm_equivalence_features_and_backbone_prefix():
    timm = pytest.importorskip('timm')
    torch.manual_seed(0)
    ref = timm.create_model('mixnet_s', pretrained=False, features_only=False).eval()
    randomize_bn(ref, seed=2)
    sd = {k: v for k, v in ref.state_dict().items() if not k.startswith('classifier.')}
    backbone = MixNet('s', out_indices=(2, 3, 5, 6), norm_cfg=dict(type='BN', eps=1e-5)).eval()
    backbone.load_state_dict(convert_timm_mixnet(sd, backbone_prefix=''), strict=False)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        # with extra_blocks, index 0 is the stem and index i the output of timm stage i - 1,
        # which is exactly our layers[i]
        feats = ref.forward_intermediates(x, indices=[2, 3, 5, 6], intermediates_only=True,
                                          extra_blocks=True)
        outs = backbone(x)
    assert len(feats) == 4
    for a, b in zip(outs, feats):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_converter_tool(tmp_path, monkeypatch):
    timm = pytest.importorskip('timm')
    import importlib.util
    import os.path as osp
    path = osp.join(osp.dirname(__file__), '..', '..', 'tools', 'model_converters',
                    'timm_mixnet_to_mmeff.py')
    spec = importlib.util.spec_from_file_location('timm_mixnet_to_mmeff', path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    torch.manual_seed(0)
    ref = timm.create_model('mixnet_s', pretrained=False)
    src, dst = tmp_path / 'timm.pth', tmp_path / 'mmeff.pth'
    torch.save({'state_dict': ref.state_dict()}, src)
    monkeypatch.setattr('sys.argv', ['tool', str(src), str(dst)])
    tool.main()
    ckpt = torch.load(dst, map_location='cpu', weights_only=True)
    model = build_classifier('s', norm_cfg=dict(type='BN', eps=1e-5))
    model.load_state_dict(ckpt['state_dict'], strict=True)
    torch.testing.assert_close(model.head.fc.weight, ref.classifier.weight)
    monkeypatch.setattr('sys.argv', ['tool', str(src), str(dst), '--backbone-only'])
    tool.main()
    ckpt = torch.load(dst, map_location='cpu', weights_only=True)
    MixNet('s').load_state_dict(ckpt['state_dict'], strict=True)


def test_convert_rejects_foreign_keys():
    with pytest.raises(KeyError, match='not a timm MixNet'):
        convert_timm_mixnet({'layer1.0.conv1.weight': torch.zeros(1)})
    with pytest.raises(KeyError, match='not part of a timm MixNet'):
        convert_timm_mixnet({'blocks.0.0.conv_dw.weight': torch.zeros(1),
                             'fc.weight': torch.zeros(1)})


# ------------------------------------------------------------------ FLOPs
def test_flops_mixnet_s_224():
    """MACs of the classifier at 224x224 (mmengine's counter; the paper's
    'FLOPs' are MACs): within 3% of the paper's 256M."""
    from mmengine.analysis import get_model_complexity_info
    model = build_classifier('s').eval()  # eval: BN counted as inference affine
    info = get_model_complexity_info(model, input_shape=(3, 224, 224), show_table=False,
                                     show_arch=False)
    assert info['params'] == PARAMS['s']
    assert abs(info['flops'] / 256e6 - 1) < 0.03
