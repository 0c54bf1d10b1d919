# Copyright (c) mm_efficientconv contributors. All rights reserved.
# DeepLabV3 R50-D8 on PASCAL VOC 2012 + SBD augmentation (512x512 crops, 20k iterations) with
# DO-Conv (Cao et al., TIP 2022; paper: 88.59 -> +0.05 mIoU with DO-Conv in pre-training and
# fine-tuning, +0.25 in the segmentation stage only). mmseg model zoo for the plain config:
# 76.17 mIoU.
#
# The only change to mmseg's deeplabv3_r50-d8_4xb4-20k_voc12aug-512x512.py is
# `conv_cfg=dict(type='DOConv')` on the backbone (ResNetV1c), the decode head (ASPPHead) and the
# auxiliary head (FCNHead); 1x1 convs stay plain. The plain ImageNet checkpoint of the base config
# loads into the DO-Conv layers unchanged (D' = D - I starts at zero).
_base_ = 'mmseg::deeplabv3/deeplabv3_r50-d8_4xb4-20k_voc12aug-512x512.py'

custom_imports = dict(imports=['mm_efficientconv'], allow_failed_imports=False)

conv_cfg = dict(type='DOConv')
model = dict(
    backbone=dict(conv_cfg=conv_cfg),
    decode_head=dict(conv_cfg=conv_cfg),
    auxiliary_head=dict(conv_cfg=conv_cfg))
