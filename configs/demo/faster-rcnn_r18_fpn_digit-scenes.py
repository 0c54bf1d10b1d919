# Copyright (c) mm_efficientconv contributors. All rights reserved.
# Plain twin of faster-rcnn_r18-doconv_fpn_digit-scenes.py: mmdet's stock Faster R-CNN with the
# same demo changes, without the plugin. It is the config in which the folded DO-Conv checkpoint
# is evaluated in a process that never imports mm_efficientconv, and the plain baseline trained
# beside the DO-Conv model.
_base_ = './faster-rcnn_r18-doconv_fpn_digit-scenes.py'

custom_imports = None  # no plugin: every layer is mmdet's / mmcv's own
model = dict(backbone=dict(conv_cfg=None), neck=dict(conv_cfg=None))  # nn.Conv2d (mmdet default)
