# Copyright (c) mm_efficientconv contributors. All rights reserved.
# Faster R-CNN R50-FPN 1x on COCO with DO-Conv (Cao et al., TIP 2022; paper: 37.9 -> +0.3 AP with
# DO-Conv in the fine-tuning stage and in the ImageNet pre-training).
#
# The only change to mmdet's faster-rcnn_r50_fpn_1x_coco.py is `conv_cfg=dict(type='DOConv')`
# wherever mmdet 3.3 lets a config choose the conv:
#   * backbone (ResNet-50): every conv; the 1x1 convs stay plain convs (DO-Conv only
#     over-parameterises convs with spatial taps), the 3x3 (stride 1 and 2) and the 7x7 stem
#     become DO-Conv;
#   * neck (FPN): the four 3x3 output convs (the 1x1 lateral convs stay plain).
# Not reachable by config, left as nn.Conv2d: RPNHead's 3x3 conv (hard-coded `nn.Conv2d` in
# mmdet 3.3 for num_convs=1) and its 1x1 cls/reg convs; the RoI box head is the stock
# Shared2FCBBoxHead (fully connected, no convs). We do not switch to a conv box head
# (Shared4Conv1FCBBoxHead): the paper changes nothing but the conv layers of the baseline.
#
# D' = D - I starts at zero, so the layers are initially identical to plain convs and the
# ImageNet weights of the base config (torchvision://resnet50, plain convs) load into the DO-Conv
# layers unchanged (DOConv maps a plain `weight` to W with D' = 0). For DO-Conv in both stages,
# point `init_cfg` to a checkpoint of configs/doconv/resnet50-doconv_8xb32_in1k.py
# (`prefix='backbone.'`).
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['mm_efficientconv'], allow_failed_imports=False)

conv_cfg = dict(type='DOConv')
model = dict(backbone=dict(conv_cfg=conv_cfg), neck=dict(conv_cfg=conv_cfg))
