# Copyright (c) mm_efficientconv contributors. All rights reserved.
# The demo's SSDLite MixNet-S: ../mixnet/ssdlite_mixnet-s_8xb24-600e_coco.py (MixNet-S backbone
# with MixConv depthwise layers, mmdet's SSDLite neck and head) trained from scratch on the CPU
# on the digit scenes (real scikit-learn handwritten digits composited on 128x128 canvases;
# written by mm_efficientconv.datasets.write_digit_scenes, e.g.
# `python tools/demo/write_digit_scenes.py`). Every change to the base config is commented.
# MixNet is this plugin's backbone, so there is no plugin-free twin: the folded checkpoint
# (every MixConv one depthwise conv) is evaluated in this config.
_base_ = '../mixnet/ssdlite_mixnet-s_8xb24-600e_coco.py'

data_root = 'work_dirs/demo/digit_scenes/'  # where `make demo` writes the scenes
classes = ('0', '1', '2', '3', '4', '5', '6', '7', '8', '9')  # the COCO categories of the scenes
input_size = 128  # the scenes' size, used as it is (base: 320)

model = dict(
    bbox_head=dict(
        num_classes=10,  # digits 0-9
        # feature maps 8, 4, 2, 1, 1, 1 at input 128; anchors for 15-45 px digits (base: 48-320 px
        # at input 320)
        anchor_generator=dict(
            strides=[16, 32, 64, 128, 128, 128],
            min_sizes=[16, 32, 48, 64, 96, 112],
            max_sizes=[32, 48, 64, 96, 112, 128])),
    # at most 4 digits per scene: fewer candidates before NMS (CPU budget)
    test_cfg=dict(nms_pre=400, max_per_img=100))

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True),
    # no Expand / MinIoURandomCrop (the digits already vary in size and position) and no
    # RandomFlip (a mirrored digit is not a digit)
    dict(type='Resize', scale=(input_size, input_size), keep_ratio=False),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='Resize', scale=(input_size, input_size), keep_ratio=False),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=16,  # base: 24 per GPU x 8 GPUs
    num_workers=0,  # CPU: loading in the training process is cheapest
    persistent_workers=False,
    dataset=dict(
        _delete_=True,  # a plain CocoDataset instead of the base's RepeatDataset x 5
        type='CocoDataset',
        data_root=data_root,
        metainfo=dict(classes=classes),
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='JPEGImages/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=32),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=16,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=dict(classes=classes),
        ann_file='annotations/instances_val.json',  # the held-out scenes
        data_prefix=dict(img='JPEGImages/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

# schedule: 2 epochs of the 1,000 training scenes instead of 600 COCO epochs (CPU budget)
max_epochs = 2
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),  # base: 500 iters
    dict(type='CosineAnnealingLR', begin=0, T_max=max_epochs, end=max_epochs, by_epoch=True,
         eta_min=0, convert_to_iter_based=True),  # per iteration: few epochs
]
# the base's 0.015 is for batch 192 and 600 epochs; a short schedule from scratch needs more
optim_wrapper = dict(optimizer=dict(lr=0.05))
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=-1, save_last=True))  # only the final checkpoint
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))  # CPU
auto_scale_lr = dict(base_batch_size=16)  # the batch the lr above is for
