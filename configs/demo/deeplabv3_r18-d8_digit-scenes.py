# Copyright (c) mm_efficientconv contributors. All rights reserved.
# Plain twin of deeplabv3_r18-d8-doconv_digit-scenes.py: mmseg's stock DeepLabV3 with the same
# demo changes, without the plugin. It is the config in which the folded DO-Conv checkpoint is
# evaluated in a process that never imports mm_efficientconv, and the plain baseline trained
# beside the DO-Conv model.
_base_ = './deeplabv3_r18-d8-doconv_digit-scenes.py'

custom_imports = None  # no plugin: every layer is mmseg's / mmcv's own
model = dict(  # nn.Conv2d (mmseg default)
    backbone=dict(conv_cfg=None),
    decode_head=dict(conv_cfg=None),
    auxiliary_head=dict(conv_cfg=None))
