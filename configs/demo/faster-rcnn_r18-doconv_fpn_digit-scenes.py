# Copyright (c) mm_efficientconv contributors. All rights reserved.
# The demo's DO-Conv Faster R-CNN: ../doconv/faster-rcnn_r50-doconv_fpn_1x_coco.py (DO-Conv in the
# ResNet backbone and the FPN, through conv_cfg) trained from scratch on the CPU on the digit
# scenes (real scikit-learn handwritten digits composited on 128x128 canvases; written by
# mm_efficientconv.datasets.write_digit_scenes, e.g. `python tools/demo/write_digit_scenes.py`).
# Every change to the base config is commented; the plain twin is
# faster-rcnn_r18_fpn_digit-scenes.py (this config without the plugin).
_base_ = '../doconv/faster-rcnn_r50-doconv_fpn_1x_coco.py'

data_root = 'work_dirs/demo/digit_scenes/'  # where `make demo` writes the scenes
classes = ('0', '1', '2', '3', '4', '5', '6', '7', '8', '9')  # the COCO categories of the scenes
canvas = (128, 128)  # the scenes' size: images are used as they are (the base resizes to 1333x800)

model = dict(
    backbone=dict(
        depth=18,  # ResNet-18 instead of ResNet-50, at half width (stages 32..256 channels):
        base_channels=32,  # CPU budget
        frozen_stages=-1,  # from scratch (no ImageNet weights, nothing downloads): train the stem
        norm_eval=False,  # and let BN learn its statistics
        init_cfg=None),  # no torchvision://resnet50 checkpoint
    neck=dict(
        in_channels=[32, 64, 128, 256],  # the backbone's stage widths
        out_channels=64),  # FPN width 256 -> 64: CPU budget
    rpn_head=dict(
        in_channels=64,
        feat_channels=64,
        # digits are 15-45 px: anchor sizes 16/32/64/128/256 at strides 4..64 (base: 32..512)
        anchor_generator=dict(scales=[4])),
    roi_head=dict(
        # 1 sample per bin (base: adaptive, slow on the CPU for large early proposals): a digit's
        # RoI spans only 4-11 cells of the stride-4 level, and RoIAlign (mmcv's CPU kernel,
        # backward above all) took a quarter of a training step with 2 samples and 64 RoIs
        bbox_roi_extractor=dict(out_channels=64, roi_layer=dict(sampling_ratio=1)),
        bbox_head=dict(
            in_channels=64,
            fc_out_channels=256,  # 1024 -> 256: CPU budget
            num_classes=10)),  # digits 0-9
    train_cfg=dict(
        # at most 4 digits per scene: fewer proposals (base: 2000 before / 1000 after NMS) and
        # 32 sampled RoIs (base: 512; CPU budget), half of them positive (base: a quarter): the
        # digit classification is what the short schedule has to learn, so more positive RoIs
        # per image (2 epochs of 32 RoIs: mAP_50 0.70 with a quarter positive at batch 8, 0.92
        # with half positive at batch 4)
        rpn_proposal=dict(nms_pre=200, max_per_img=100),
        rcnn=dict(sampler=dict(num=32, pos_fraction=0.5))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=100)))

# no RandomFlip (a mirrored digit is not a digit); no flip keys to pack
meta_keys = ('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=canvas, keep_ratio=True),
    dict(type='PhotoMetricDistortion'),  # colour jitter instead of the flip (small data set)
    dict(type='PackDetInputs', meta_keys=meta_keys),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='Resize', scale=canvas, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=meta_keys),
]
train_dataloader = dict(
    # base: 2 per GPU x 8 GPUs; 4 gives twice the updates of 8 in the same 2 epochs (for about
    # 10% more time per image on the CPU)
    batch_size=4,
    num_workers=0,  # CPU: loading in the training process is cheapest
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=dict(classes=classes),
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='JPEGImages/'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
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

# schedule: 2 epochs of the 1,000 training scenes (500 iterations) instead of 12 COCO epochs (CPU
# budget: about 2.5 minutes on one thread), with a short warm-up (base: 500 iterations) and a
# cosine decay (base: steps at epochs 8 and 11)
max_epochs = 2
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', begin=0, end=max_epochs, by_epoch=True,
         convert_to_iter_based=True),
]
# the base's lr 0.02 is for batch 16; ours is 4, but from scratch the full rate learns faster
optim_wrapper = dict(optimizer=dict(lr=0.02))
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=-1, save_last=True))  # only the final checkpoint
env_cfg = dict(dist_cfg=dict(backend='gloo'))  # CPU
