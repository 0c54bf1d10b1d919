# Copyright (c) mm_efficientconv contributors. All rights reserved.
# MobileNetV2 x1.0 with BSConv-S (BSConv paper, section 4.2; Table 3: 69.7 -> 69.8% top-1):
# mmpretrain's MobileNetV2 unchanged (same parameters and checkpoint keys) plus the orthonormal
# regulariser alpha * sum ||W W^T - I||_F on every block's projection 1x1 conv (p = 1/6 with
# expansion 6), added to the loss as `loss_ortho` by OrthoRegHook (alpha = 0.1 on ImageNet).
# Protocol (BSConv paper, section 5): 100 epochs, SGD (momentum 0.9, weight decay 1e-4), lr 0.1
# divided by 10 at epochs 30, 60 and 90, random-resized crops, flips and colour jitter.
# lr 0.1 is for a total batch of 256 (8 GPUs x 32); see auto_scale_lr.
_base_ = [
    'mmpretrain::_base_/models/mobilenet_v2_1x.py',
    'mmpretrain::_base_/datasets/imagenet_bs32_pil_resize.py',
    'mmpretrain::_base_/schedules/imagenet_bs256.py',
    'mmpretrain::_base_/default_runtime.py',
]

custom_imports = dict(imports=['mm_efficientconv'], allow_failed_imports=False)

model = dict(backbone=dict(type='BSConvSMobileNetV2', widen_factor=1.0))

custom_hooks = [dict(type='OrthoRegHook', alpha=0.1)]

# The paper does not give the jitter strengths; 0.4 is the usual ImageNet setting.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, backend='pillow'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='ColorJitter', brightness=0.4, contrast=0.4, saturation=0.4),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4))
param_scheduler = dict(
    type='MultiStepLR', by_epoch=True, milestones=[30, 60, 90], gamma=0.1)
train_cfg = dict(by_epoch=True, max_epochs=100, val_interval=1)
auto_scale_lr = dict(base_batch_size=256)
