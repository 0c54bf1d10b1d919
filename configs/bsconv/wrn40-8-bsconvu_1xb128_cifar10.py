# Copyright (c) mm_efficientconv contributors. All rights reserved.
# WRN-40-8 with BSConv-U on CIFAR-10 (BSConv Table 2: wider WRN at the parameter budget of
# WRN-40-3).
# Paper (CIFAR-10): 4.2M params, 671.6M FLOPs, 95.2% top-1.
# Protocol (BSConv paper, section 5): configs/_base_/{datasets,schedules}/bsconv_cifar*.
_base_ = [
    '../_base_/datasets/bsconv_cifar10_bs128.py',
    '../_base_/schedules/bsconv_cifar_bs128.py',
]

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='CifarWideResNet', depth=40, widen_factor=8, conv_cfg=dict(type='BSConvU')),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=10,
        in_channels=512,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))
