# Copyright (c) mm_efficientconv contributors. All rights reserved.
# WRN-40-3 on CIFAR-10 (BSConv Table 2 baseline).
# Paper (CIFAR-10): 5.0M params, 735.0M FLOPs, 94.9% top-1.
# Protocol (BSConv paper, section 5): configs/_base_/{datasets,schedules}/bsconv_cifar*.
_base_ = [
    '../_base_/datasets/bsconv_cifar10_bs128.py',
    '../_base_/schedules/bsconv_cifar_bs128.py',
]

model = dict(
    type='ImageClassifier',
    backbone=dict(type='CifarWideResNet', depth=40, widen_factor=3),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=10,
        in_channels=192,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))
