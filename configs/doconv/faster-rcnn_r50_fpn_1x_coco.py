# Copyright (c) mm_efficientconv contributors. All rights reserved.
# Plain Faster R-CNN R50-FPN 1x on COCO: the baseline of
# faster-rcnn_r50-doconv_fpn_1x_coco.py, kept here only for side-by-side runs (identical to
# mmdet's config; model zoo: 37.4 box AP). DO-Conv paper baseline (GluonCV, their own training):
# 37.9 AP.
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['mm_efficientconv'], allow_failed_imports=False)
