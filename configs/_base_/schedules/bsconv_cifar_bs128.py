# Copyright (c) mm_efficientconv contributors. All rights reserved.
# The BSConv paper's CIFAR schedule (section 5), with mmpretrain's default runtime: 200 epochs,
# SGD (momentum 0.9, weight decay 1e-4; mmpretrain's cifar10_bs128 schedule), lr 0.1 divided by
# 10 at epochs 100, 150 and 180.
_base_ = [
    'mmpretrain::_base_/schedules/cifar10_bs128.py',
    'mmpretrain::_base_/default_runtime.py',
]

custom_imports = dict(imports=['mm_efficientconv'], allow_failed_imports=False)

param_scheduler = dict(
    type='MultiStepLR', by_epoch=True, milestones=[100, 150, 180], gamma=0.1)
train_cfg = dict(by_epoch=True, max_epochs=200, val_interval=1)

default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=10, max_keep_ckpts=3, save_best='auto'))
