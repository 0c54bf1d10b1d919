# Copyright (c) mm_efficientconv contributors. All rights reserved.
# ResNet-110 with BSConv-U on CIFAR-10 (BSConv Table 2: deeper ResNet at the parameter budget of
# ResNet-20).
# Paper (CIFAR-10): 239.0K params, 41.1M FLOPs, 92.9% top-1.
# Protocol (BSConv paper, section 5): configs/_base_/{datasets,schedules}/bsconv_cifar*.
_base_ = [
    '../_base_/datasets/bsconv_cifar10_bs128.py',
    '../_base_/schedules/bsconv_cifar_bs128.py',
]

model = dict(
    type='ImageClassifier',
    backbone=dict(type='CifarResNet', depth=110, conv_cfg=dict(type='BSConvU')),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=10,
        in_channels=64,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))
