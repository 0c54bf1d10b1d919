# Copyright (c) mm_efficientconv contributors. All rights reserved.
# MobileNetV3-large with BSConv-S (BSConv paper, section 4.2; Table 3: 71.5 -> 71.5% top-1):
# mmpretrain's MobileNetV3-large unchanged plus the orthonormal regulariser on every block's
# projection 1x1 conv, added as `loss_ortho` by OrthoRegHook (alpha = 0.1 on ImageNet).
# Data: mmpretrain's MobileNetV3 ImageNet pipeline (batch 128 per GPU).
# Schedule: the BSConv ImageNet protocol (100 epochs, SGD momentum 0.9, weight decay 1e-4, lr
# divided by 10 at epochs 30, 60 and 90), with lr 0.1 per 256 images scaled linearly to the
# 8 x 128 = 1024 batch: lr 0.4, auto_scale_lr.base_batch_size = 1024.
_base_ = [
    'mmpretrain::_base_/models/mobilenet_v3/mobilenet_v3_large_imagenet.py',
    'mmpretrain::_base_/datasets/imagenet_bs128_mbv3.py',
    'mmpretrain::_base_/schedules/imagenet_bs256.py',
    'mmpretrain::_base_/default_runtime.py',
]

custom_imports = dict(imports=['mm_efficientconv'], allow_failed_imports=False)

# mmpretrain's MobileNetV3-large model (its 1280-channel StackedLinearClsHead), with the backbone
# swapped: the classifier has mmpretrain's 5,483,032 parameters exactly, so its checkpoints load.
# The BSConv reference's lighter head (one linear layer on the 960 pooled channels) is
# head=dict(_delete_=True, type='LinearClsHead', num_classes=1000, in_channels=960, topk=(1, 5)).
model = dict(backbone=dict(type='BSConvSMobileNetV3', arch='large'))

custom_hooks = [dict(type='OrthoRegHook', alpha=0.1)]

optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.4, momentum=0.9, weight_decay=1e-4))
param_scheduler = dict(
    type='MultiStepLR', by_epoch=True, milestones=[30, 60, 90], gamma=0.1)
train_cfg = dict(by_epoch=True, max_epochs=100, val_interval=1)
auto_scale_lr = dict(base_batch_size=1024)
