# Copyright (c) mm_efficientconv contributors. All rights reserved.
# DeepLabV3 R50-D8 on Cityscapes (512x1024 crops, 80k iterations) with DO-Conv (Cao et al.,
# TIP 2022; paper: 78.71 -> +0.82 mIoU with DO-Conv in ImageNet pre-training and fine-tuning,
# +1.45 in the segmentation stage only). mmseg model zoo for the plain config: 79.32 mIoU.
#
# The only change to mmseg's deeplabv3_r50-d8_4xb2-80k_cityscapes-512x1024.py is
# `conv_cfg=dict(type='DOConv')` on the backbone (ResNetV1c, including its dilated 3x3 convs and
# the 3-conv deep stem) and on the decode (ASPPHead: dilated 3x3 ASPP branches and the 3x3
# bottleneck) and auxiliary (FCNHead: 3x3 conv) heads. 1x1 convs stay plain convs (no spatial
# taps to over-parameterise), as do the heads' 1x1 classifiers (`conv_seg`, nn.Conv2d).
#
# D' = D - I starts at zero, so the plain ImageNet checkpoint of the base config
# (open-mmlab://resnet50_v1c) loads into the DO-Conv layers unchanged ("segmentation stage only").
_base_ = 'mmseg::deeplabv3/deeplabv3_r50-d8_4xb2-80k_cityscapes-512x1024.py'

custom_imports = dict(imports=['mm_efficientconv'], allow_failed_imports=False)

conv_cfg = dict(type='DOConv')
model = dict(
    backbone=dict(conv_cfg=conv_cfg),
    decode_head=dict(conv_cfg=conv_cfg),
    auxiliary_head=dict(conv_cfg=conv_cfg))
