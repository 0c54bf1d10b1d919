# Copyright (c) mm_efficientconv contributors. All rights reserved.
# SSDLite with a MixNet-S backbone on COCO, trained from scratch with the recipe of mmdet's
# ssdlite_mobilenetv2-scratch_8xb24-600e_coco.py (320x320, 120 epochs x RepeatDataset 5 = 600e,
# SGD lr 0.015, cosine; mmdet's MobileNetV2 result: 21.3 box AP). MixConv paper Table 1 reports
# SSDLite with MixConv MobileNets (V2 baseline 21.5 -> 22.3 mAP with mixconv357).
#
# Only the backbone changes. As SSDLite takes MobileNetV2's last stride-16 stage (96 channels)
# and its 1x1 head conv (1280 channels, stride 32), MixNet-S gives its last stride-16 stage
# (index 5: 120 channels) and its head (index 7: 1x1 conv to 1536 channels, stride 32); the neck
# adds the four extra levels of the base config (512, 256, 256, 128 channels).
_base_ = 'mmdet::ssd/ssdlite_mobilenetv2-scratch_8xb24-600e_coco.py'

custom_imports = dict(imports=['mm_efficientconv'], allow_failed_imports=False)

# Backbone init: MixNet's own (Kaiming for its plain convs, the MixConv / grouped 1x1 layers'
# init_weights, constant BN), not the base's TruncNormal(std=0.03) on nn.Conv2d, which would reach
# only MixNet's plain convs and mix two weight scales in one backbone. BN as in the base config.
model = dict(
    backbone=dict(
        _delete_=True,
        type='MixNet',
        arch='s',
        out_indices=(5, 7),
        norm_cfg=dict(type='BN', eps=0.001, momentum=0.03)),
    neck=dict(
        in_channels=(120, 1536),
        out_channels=(120, 1536, 512, 256, 256, 128)),
    bbox_head=dict(in_channels=(120, 1536, 512, 256, 256, 128)))
