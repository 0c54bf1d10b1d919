# Copyright (c) mm_efficientconv contributors. All rights reserved.
# MobileNetV1 x1.0 on ImageNet-1k: the baseline of BSConv Table 3 (paper: 70.8% top-1 for their
# own training, MobileNetV1 paper: 70.6%, 4.2M params, 569M mult-adds).
# Protocol (BSConv paper, section 5): 100 epochs, SGD (momentum 0.9, weight decay 1e-4), lr 0.1
# divided by 10 at epochs 30, 60 and 90, Inception-style random-resized crops, horizontal flips and
# colour jitter, test on the 224 centre crop of the image resized to short side 256.
# lr 0.1 is for a total batch of 256 (8 GPUs x 32); `--auto-scale-lr` rescales it linearly for
# other batch sizes (auto_scale_lr.base_batch_size = 256).
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs32_pil_resize.py',
    'mmpretrain::_base_/schedules/imagenet_bs256.py',
    'mmpretrain::_base_/default_runtime.py',
]

custom_imports = dict(imports=['mm_efficientconv'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(type='MobileNetV1', widen_factor=1.0, block_type='dsc'),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=1024,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, 5)))

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
