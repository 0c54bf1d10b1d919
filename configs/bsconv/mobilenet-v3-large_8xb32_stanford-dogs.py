# Copyright (c) mm_efficientconv contributors. All rights reserved.
# MobileNetV3-large on Stanford Dogs (120 breeds, 12,000 train / 8,580 test images), trained from
# scratch: the baseline of BSConv Table 1 (fine-grained).
# Protocol (BSConv paper, section 5, fine-grained): 100 epochs, SGD (momentum 0.9, weight decay
# 1e-4), lr 0.1 decayed linearly to 0 (updated once per epoch), augmentation by random crop,
# horizontal flip and random gamma only. Geometry from the BSConv reference training script
# (bin/bsconv_pytorch_train.py): resize to 256x256, random 224x224 crop; test on the centre
# 224x224 crop. The paper gives no gamma range; (1/1.4, 1.4) matches the strength of the
# reference script's brightness jitter (0.4). lr 0.1 for a total batch of 256 (8 x 32).
#
# Data layout (mmpretrain CustomDataset; split the official Images/ folder with
# train_list.mat / test_list.mat):
#   data/stanford_dogs/train/<n02085620-Chihuahua>/*.jpg ...
#   data/stanford_dogs/test/<n02085620-Chihuahua>/*.jpg ...
# The class index is the position of the folder in sorted order (120 folders).
_base_ = [
    'mmpretrain::_base_/models/mobilenet_v3/mobilenet_v3_large_imagenet.py',
    'mmpretrain::_base_/default_runtime.py',
]

custom_imports = dict(imports=['mm_efficientconv'], allow_failed_imports=False)

model = dict(head=dict(num_classes=120))

# dataset settings
dataset_type = 'CustomDataset'
data_root = 'data/stanford_dogs'
data_preprocessor = dict(
    num_classes=120,
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(256, 256), keep_ratio=False),
    dict(type='RandomCrop', crop_size=224),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandomGamma', gamma_range=(0.714, 1.4)),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(256, 256), keep_ratio=False),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]

train_dataloader = dict(
    batch_size=32,
    num_workers=5,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix='train',
        pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=32,
    num_workers=5,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix='test',
        pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

# schedule settings
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4))
# mmengine's LinearLR reaches end_factor at step `end - 1`; end=101 gives
# lr = 0.1 * (1 - epoch / 100) for epochs 0..99 (0 after the last epoch).
param_scheduler = dict(
    type='LinearLR', start_factor=1.0, end_factor=0.0, by_epoch=True, begin=0, end=101)
train_cfg = dict(by_epoch=True, max_epochs=100, val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=256)
