# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Every backbone of the package inside an mmdet detector and an mmseg
segmentor, built from a config dict in the codebase's scope (root-registered
backbones and layers must resolve from mmdet's / mmseg's registries).

One parametrised check per codebase; the cases keep the variants the
per-backbone files used to test (BSConv-U / DO-Conv / MixConv through
``conv_cfg``, frozen stages, ``norm_eval``, dilated stages)."""
import pytest
import torch

from mm_efficientconv.backbones.mixnet import MixNet
from mm_efficientconv.backbones.mobilenet_v1 import MobileNetV1
from mm_efficientconv.backbones.mobilenet_v2_bsconvs import BSConvSMobileNetV2
from mm_efficientconv.backbones.mobilenet_v3_bsconvs import BSConvSMobileNetV3
from mm_efficientconv.backbones.resnet_basic import BasicBlockResNet
from mm_efficientconv.layers import BSConvU, DOConv, MixConv

pytestmark = pytest.mark.usefixtures('one_thread')

TINY_RESNET = dict(stem_channels=8, base_channels=8)

# id -> (backbone config, channels of its outputs, class it must build, a layer
# class it must contain (None: stock convs only), has the BSConv-S regulariser).
# Every detection backbone gives strides 8 / 16 / 32 on a 64x64 input.
DET_BACKBONES = {
    'mixnet-s': (dict(type='MixNet', arch='s', out_indices=(3, 5, 6), frozen_stages=1,
                      norm_eval=True), [40, 120, 200], MixNet, MixConv, False),
    'mobilenet-v1-bsconvu': (dict(type='MobileNetV1', widen_factor=0.25, out_indices=(2, 3, 4),
                                  block_type='bsconvu'), [64, 128, 256], MobileNetV1, BSConvU,
                             False),
    'mobilenet-v2-bsconvs': (dict(type='BSConvSMobileNetV2', widen_factor=0.5,
                                  out_indices=(2, 4, 6)), [16, 48, 160], BSConvSMobileNetV2,
                             None, True),
    'resnet10-basic-bsconvu': (dict(type='BasicBlockResNet', depth=10, out_indices=(1, 2, 3),
                                    frozen_stages=1, norm_eval=True,
                                    conv_cfg=dict(type='BSConvU'), **TINY_RESNET),
                               [16, 32, 64], BasicBlockResNet, BSConvU, False),
}

# id -> (backbone config, channels and stride of its last output, class, layer class,
# regulariser).
SEG_BACKBONES = {
    'mixnet-s': (dict(type='MixNet', arch='s', out_indices=(2, 3, 5, 6)), 200, 32, MixNet,
                 MixConv, False),
    'mobilenet-v1-mixconv': (dict(type='MobileNetV1', widen_factor=0.25, out_indices=(2, 3),
                                  conv_cfg=dict(type='MixConv', kernel_sizes=(3, 5, 7))),
                             128, 16, MobileNetV1, MixConv, False),
    'mobilenet-v3-bsconvs': (dict(type='BSConvSMobileNetV3', arch='small', out_indices=(3, 12)),
                             576, 32, BSConvSMobileNetV3, None, True),
    # dilated stages 3 and 4 (output stride 8, as mmseg's ResNetV1c-D8) with DO-Conv
    'resnet10-basic-dilated-doconv': (dict(type='BasicBlockResNet', depth=10,
                                           strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4),
                                           out_indices=(3, ), conv_cfg=dict(type='DOConv'),
                                           **TINY_RESNET), 64, 8, BasicBlockResNet, DOConv,
                                      False),
}


def _check_backbone(backbone, backbone_type, layer_type, has_reg_loss):
    assert type(backbone) is backbone_type
    if layer_type is not None:
        layers = [m for m in backbone.modules() if isinstance(m, layer_type)]
        assert layers and any(not getattr(m, 'plain', False) for m in layers)
    if has_reg_loss:
        assert backbone.reg_loss().item() > 0


@pytest.mark.parametrize('name', list(DET_BACKBONES))
def test_in_mmdet_retinanet(name, codebase_scope):
    backbone, channels, backbone_type, layer_type, has_reg_loss = DET_BACKBONES[name]
    cfg = dict(
        type='RetinaNet',
        data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], bgr_to_rgb=True,
                               pad_size_divisor=32),
        backbone=backbone,
        neck=dict(type='FPN', in_channels=channels, out_channels=16, start_level=0,
                  add_extra_convs='on_input', num_outs=5),
        bbox_head=dict(
            type='RetinaHead', num_classes=3, in_channels=16, stacked_convs=1, feat_channels=16,
            anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4,
                                  scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
                                  strides=[8, 16, 32, 64, 128]),
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[.0, .0, .0, .0],
                            target_stds=[1.0, 1.0, 1.0, 1.0]),
            loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                          loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
        train_cfg=None,
        test_cfg=dict(nms_pre=100, min_bbox_size=0, score_thr=0.05,
                      nms=dict(type='nms', iou_threshold=0.5), max_per_img=10))
    with codebase_scope('mmdet'):
        from mmdet.registry import MODELS
        detector = MODELS.build(cfg)
        detector.init_weights()
        _check_backbone(detector.backbone, backbone_type, layer_type, has_reg_loss)
        detector.eval()
        with torch.no_grad():
            cls_scores, bbox_preds = detector(torch.randn(1, 3, 64, 64), mode='tensor')
    assert [tuple(s.shape) for s in cls_scores] == [(1, 27, 8, 8), (1, 27, 4, 4), (1, 27, 2, 2),
                                                    (1, 27, 1, 1), (1, 27, 1, 1)]
    assert [tuple(b.shape) for b in bbox_preds] == [(1, 36, 8, 8), (1, 36, 4, 4), (1, 36, 2, 2),
                                                    (1, 36, 1, 1), (1, 36, 1, 1)]


@pytest.mark.parametrize('name', list(SEG_BACKBONES))
def test_in_mmseg_encoder_decoder(name, codebase_scope):
    backbone, channels, stride, backbone_type, layer_type, has_reg_loss = SEG_BACKBONES[name]
    cfg = dict(
        type='EncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], bgr_to_rgb=True, size=(64, 64)),
        backbone=backbone,
        decode_head=dict(
            type='FCNHead', in_channels=channels, in_index=-1, channels=16, num_convs=1,
            concat_input=False, num_classes=3, norm_cfg=dict(type='BN'), align_corners=False,
            loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
        train_cfg=dict(),
        test_cfg=dict(mode='whole'))
    with codebase_scope('mmseg'):
        from mmseg.registry import MODELS
        segmentor = MODELS.build(cfg)
        segmentor.init_weights()
        _check_backbone(segmentor.backbone, backbone_type, layer_type, has_reg_loss)
        segmentor.eval()
        with torch.no_grad():
            logits = segmentor(torch.randn(2, 3, 64, 64), mode='tensor')
    assert tuple(logits.shape) == (2, 3, 64 // stride, 64 // stride)
