# Copyright (c) mm_efficientconv contributors. All rights reserved.
# WRN-40-8 with BSConv-U on CIFAR-100 (BSConv Table 2: wider WRN at the parameter budget of
# WRN-40-3).
# Paper (CIFAR-100): 4.3M params, 77.6% top-1.
# Protocol (BSConv paper, section 5): batch 128, 200 epochs, SGD (momentum 0.9,
# weight decay 1e-4), lr 0.1 divided by 10 at epochs 100, 150 and 180, random
# 32x32 crop with 4 px padding + horizontal flip, CIFAR-100 mean/std.
_base_ = [
    'mmpretrain::_base_/datasets/cifar100_bs16.py',
    'mmpretrain::_base_/schedules/cifar10_bs128.py',
    'mmpretrain::_base_/default_runtime.py',
]

custom_imports = dict(imports=['mm_efficientconv'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='CifarWideResNet', depth=40, widen_factor=8, conv_cfg=dict(type='BSConvU')),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=100,
        in_channels=512,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))

train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=128)
test_dataloader = dict(batch_size=128)
val_evaluator = dict(topk=(1, 5))
test_evaluator = dict(topk=(1, 5))

param_scheduler = dict(
    type='MultiStepLR', by_epoch=True, milestones=[100, 150, 180], gamma=0.1)
train_cfg = dict(by_epoch=True, max_epochs=200, val_interval=1)

default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=10, max_keep_ckpts=3, save_best='auto'))
