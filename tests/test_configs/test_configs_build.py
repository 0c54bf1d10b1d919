# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Every config under configs/ loads, imports mm_efficientconv, and builds its
model, hooks and pipelines in its own default scope (nothing downloads:
building does not initialise weights)."""
import glob
import os
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import HOOKS, MODELS, TRANSFORMS, DefaultScope

import mm_efficientconv  # noqa: F401

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
# complete configs only: configs/_base_/ holds fragments (datasets, schedules) to inherit
CONFIGS = sorted(
    p for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
    if '_base_' not in osp.relpath(p, osp.join(ROOT, 'configs')).split(os.sep))
IDS = [osp.relpath(p, osp.join(ROOT, 'configs')) for p in CONFIGS]
# the demo's plain twins: the stock configs the folded checkpoints are evaluated in, without the plugin
PLUGIN_FREE = {'demo/faster-rcnn_r18_fpn_digit-scenes.py', 'demo/deeplabv3_r18-d8_digit-scenes.py'}


def _load(rel):
    return Config.fromfile(osp.join(ROOT, 'configs', rel))


def _load_upstream(name):
    """An installed codebase config, ``'mmdet::faster_rcnn/xxx.py'``."""
    import importlib
    package, rel = name.split('::')
    module = importlib.import_module(package)
    return Config.fromfile(osp.join(osp.dirname(module.__file__), '.mim', 'configs', rel))


def _build_model(cfg):
    model = cfg.model.copy()
    if cfg.get('data_preprocessor'):  # the Runner merges the top-level one (mmpretrain)
        model.setdefault('data_preprocessor', cfg.data_preprocessor)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        return MODELS.build(model)


def _count(module, name):
    return sum(type(m).__name__ == name for m in module.modules())


def _pipelines(cfg):
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(key)
        stack = [loader.get('dataset')] if loader else []
        while stack:
            ds = stack.pop()
            if not isinstance(ds, dict):
                continue
            if ds.get('pipeline'):
                yield ds['pipeline']
            stack.extend(ds.get('datasets') or [])
            stack.append(ds.get('dataset'))


def test_configs_found():
    assert len(CONFIGS) >= 20
    names = {osp.basename(p) for p in CONFIGS}
    for name in ('faster-rcnn_r50-doconv_fpn_1x_coco.py', 'faster-rcnn_r50_fpn_1x_coco.py',
                 'ssdlite_mixnet-s_8xb24-600e_coco.py',
                 'ssdlite_mobilenet-v2-bsconvs_8xb24-600e_coco.py',
                 'deeplabv3_r50-d8-doconv_4xb2-80k_cityscapes-512x1024.py',
                 'deeplabv3_r50-d8-doconv_4xb4-20k_voc12aug-512x512.py',
                 'mobilenet-v3-large_8xb32_stanford-dogs.py',
                 'mobilenet-v3-large-bsconvs_8xb32_stanford-dogs.py'):
        assert name in names


@pytest.mark.parametrize('path', CONFIGS, ids=IDS)
def test_config_loads_and_builds(path):
    cfg = Config.fromfile(path)
    if osp.relpath(path, osp.join(ROOT, 'configs')) in PLUGIN_FREE:
        assert cfg.get('custom_imports') is None
    else:
        assert 'mm_efficientconv' in cfg.custom_imports['imports']
        assert cfg.custom_imports.get('allow_failed_imports', False) is False
    scope = cfg.get('default_scope')
    assert scope in ('mmpretrain', 'mmdet', 'mmseg')
    model = _build_model(cfg)
    assert sum(p.numel() for p in model.parameters()) > 0
    with DefaultScope.overwrite_default_scope(scope):
        for hook in cfg.get('custom_hooks') or []:
            hook = hook.copy()
            hook.pop('priority', None)  # consumed by the runner, not the hook
            HOOKS.build(hook)
        for pipeline in _pipelines(cfg):
            for transform in pipeline:
                TRANSFORMS.build(transform.copy())


# ----------------------------------------------------------------------------- our configs
def test_faster_rcnn_doconv_in_backbone_and_fpn():
    model = _build_model(_load('doconv/faster-rcnn_r50-doconv_fpn_1x_coco.py'))
    base = _build_model(_load('doconv/faster-rcnn_r50_fpn_1x_coco.py'))
    # every k > 1 conv of the backbone and the FPN is an (unfolded) DO-Conv
    for part in ('backbone', 'neck'):
        convs = [m for m in getattr(model, part).modules()
                 if type(m).__name__ in ('DOConv', 'Conv2d')]
        spatial = [m for m in convs if m.kernel_size != (1, 1)]
        assert spatial and all(type(m).__name__ == 'DOConv' and not m.plain for m in spatial)
        assert all(type(m).__name__ == 'DOConv' and m.plain for m in convs
                   if m.kernel_size == (1, 1))
    assert _count(model.backbone, 'DOConv') == _count(base.backbone, 'Conv2d') == 53
    assert _count(model.neck, 'DOConv') == 8
    # RPN / RoI heads stay as in mmdet (their convs are not configurable)
    assert _count(model.rpn_head, 'DOConv') == 0 and _count(model.roi_head, 'DOConv') == 0
    # DO-Conv adds the D parameters during training, nothing else changes
    extra = sum(p.numel() for p in model.parameters()) - sum(
        p.numel() for p in base.parameters())
    expected = sum(m.D.numel() for m in model.modules()
                   if type(m).__name__ == 'DOConv' and not m.plain)
    assert extra == expected > 0


@pytest.mark.parametrize('rel', [
    'doconv/deeplabv3_r50-d8-doconv_4xb2-80k_cityscapes-512x1024.py',
    'doconv/deeplabv3_r50-d8-doconv_4xb4-20k_voc12aug-512x512.py'
])
def test_deeplabv3_doconv_in_backbone_and_heads(rel):
    cfg = _load(rel)
    model = _build_model(cfg)
    for part in ('backbone', 'decode_head', 'auxiliary_head'):
        module = getattr(model, part)
        spatial = [m for m in module.modules() if type(m).__name__ in ('DOConv', 'Conv2d')
                   and m.kernel_size != (1, 1)]
        assert spatial and all(type(m).__name__ == 'DOConv' and not m.plain for m in spatial)
    # dilated ASPP branches are DO-Conv with their dilation
    dilations = sorted(m.dilation[0] for m in model.decode_head.modules()
                       if type(m).__name__ == 'DOConv' and m.kernel_size == (3, 3))
    assert {12, 24, 36} <= set(dilations)
    num_classes = 19 if 'cityscapes' in rel else 21
    assert model.decode_head.num_classes == num_classes


def _without(obj, key):
    """``obj`` without ``key`` and the ``_scope_`` markers of ``pkg::`` bases."""
    if isinstance(obj, dict):
        return {k: _without(v, key) for k, v in obj.items() if k not in (key, '_scope_')}
    if isinstance(obj, (list, tuple)):
        return [_without(v, key) for v in obj]
    return obj


@pytest.mark.parametrize('rel, base', [
    ('doconv/faster-rcnn_r50-doconv_fpn_1x_coco.py',
     'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'),
    ('doconv/deeplabv3_r50-d8-doconv_4xb2-80k_cityscapes-512x1024.py',
     'mmseg::deeplabv3/deeplabv3_r50-d8_4xb2-80k_cityscapes-512x1024.py'),
    ('doconv/deeplabv3_r50-d8-doconv_4xb4-20k_voc12aug-512x512.py',
     'mmseg::deeplabv3/deeplabv3_r50-d8_4xb4-20k_voc12aug-512x512.py'),
])
def test_doconv_configs_change_only_conv_cfg(rel, base):
    ours, theirs = _load(rel).to_dict(), _load_upstream(base).to_dict()
    assert {k for k in ours if k not in theirs} == {'custom_imports', 'conv_cfg'}
    for key, value in theirs.items():
        assert _without(ours[key], 'conv_cfg') == _without(value, 'conv_cfg'), key
    assert ours['model']['backbone']['conv_cfg'] == dict(type='DOConv')


def test_ssdlite_mixnet_feature_maps_match_neck():
    cfg = _load('mixnet/ssdlite_mixnet-s_8xb24-600e_coco.py')
    model = _build_model(cfg).eval()
    assert type(model.backbone).__name__ == 'MixNet'
    with torch.no_grad():
        feats = model.backbone(torch.randn(1, 3, 128, 128))
    assert [f.shape[1] for f in feats] == list(cfg.model.neck.in_channels) == [120, 1536]
    assert [128 // f.shape[-1] for f in feats] == [16, 32]
    with torch.no_grad():
        outs = model.neck(feats)
    assert [o.shape[1] for o in outs] == list(cfg.model.bbox_head.in_channels)


def test_ssdlite_bsconvs_is_mobilenet_v2_plus_regulariser():
    cfg = _load('bsconv/ssdlite_mobilenet-v2-bsconvs_8xb24-600e_coco.py')
    base = _load_upstream('mmdet::ssd/ssdlite_mobilenetv2-scratch_8xb24-600e_coco.py')
    model, plain = _build_model(cfg), _build_model(base)
    assert type(model.backbone).__name__ == 'BSConvSMobileNetV2'
    assert model.backbone.out_indices == (4, 7)
    # the same parameters as mmdet's MobileNetV2 SSDLite (mmdet's MobileNetV2 names its
    # block convs differently from mmpretrain's, on which BSConvSMobileNetV2 is built)
    assert [p.shape for p in model.parameters()] == [p.shape for p in plain.parameters()]
    assert [h['type'] for h in cfg.custom_hooks] == [
        'NumClassCheckHook', 'CheckInvalidLossHook', 'OrthoRegHook']
    assert cfg.custom_hooks[-1]['alpha'] == 0.1


def test_stanford_dogs_protocol():
    cfg = _load('bsconv/mobilenet-v3-large_8xb32_stanford-dogs.py')
    assert cfg.model.head.num_classes == 120 and cfg.data_preprocessor.num_classes == 120
    assert cfg.train_dataloader.dataset.type == 'CustomDataset'
    assert cfg.train_dataloader.dataset.data_root == 'data/stanford_dogs'
    train_types = [t['type'] for t in cfg.train_dataloader.dataset.pipeline]
    assert train_types == ['LoadImageFromFile', 'Resize', 'RandomCrop', 'RandomFlip',
                           'RandomGamma', 'PackInputs']
    assert cfg.optim_wrapper.optimizer == dict(type='SGD', lr=0.1, momentum=0.9,
                                               weight_decay=1e-4)
    assert cfg.train_cfg.max_epochs == 100
    sched = cfg.param_scheduler
    assert sched.type == 'LinearLR' and sched.by_epoch and sched.end_factor == 0.0
    # no pretrained weights (from scratch)
    assert 'Pretrained' not in str(cfg.model)
    model = _build_model(cfg)
    assert type(model.backbone).__name__ == 'MobileNetV3'

    bs = _load('bsconv/mobilenet-v3-large-bsconvs_8xb32_stanford-dogs.py')
    model_bs = _build_model(bs)
    assert type(model_bs.backbone).__name__ == 'BSConvSMobileNetV3'
    assert bs.custom_hooks == [dict(type='OrthoRegHook', alpha=0.1)]
    assert {k: v.shape for k, v in model.state_dict().items()} == \
        {k: v.shape for k, v in model_bs.state_dict().items()}


def test_linear_decay_reaches_zero_per_epoch():
    """lr 0.1 decayed linearly to 0, one step per epoch."""
    from mmengine.optim import LinearLR
    cfg = _load('bsconv/mobilenet-v3-large_8xb32_stanford-dogs.py')
    param = torch.nn.Parameter(torch.zeros(1))
    optim = torch.optim.SGD([param], lr=cfg.optim_wrapper.optimizer.lr)
    kwargs = {k: v for k, v in cfg.param_scheduler.items() if k != 'type'}
    sched = LinearLR(optim, **kwargs)
    lrs = []
    for _ in range(101):
        lrs.append(optim.param_groups[0]['lr'])
        sched.step()
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[50] == pytest.approx(0.05)
    assert lrs[99] == pytest.approx(0.001)
    assert lrs[100] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize('rel', [
    'doconv/faster-rcnn_r50-doconv_fpn_1x_coco.py',
    'doconv/deeplabv3_r50-d8-doconv_4xb4-20k_voc12aug-512x512.py',
])
def test_doconv_backbone_takes_plain_imagenet_weights(rel):
    """The configs keep the base's plain ImageNet checkpoint: a plain backbone
    state dict loads strictly into the DO-Conv backbone (D' = 0) and gives the
    same features."""
    cfg = _load(rel)
    scope = cfg.default_scope
    plain_cfg = cfg.model.backbone.copy()
    plain_cfg.pop('conv_cfg')
    with DefaultScope.overwrite_default_scope(scope):
        doconv = MODELS.build(cfg.model.backbone.copy())
        plain = MODELS.build(plain_cfg)
    doconv.eval()  # (mmdet's ResNet.train() returns None: no chaining)
    plain.eval()
    assert _count(doconv, 'DOConv') > 0 and _count(plain, 'DOConv') == 0
    torch.manual_seed(0)
    for p in plain.parameters():  # not the default init: any weights must transfer
        p.data.normal_(0, 0.05)
    doconv.load_state_dict(plain.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(doconv(x), plain(x)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
