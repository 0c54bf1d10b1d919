# Copyright (c) mm_efficientconv contributors. All rights reserved.
# ResNet-50 with DO-Conv on ImageNet-1k (DO-Conv paper: ResNet-v1b-50 77.56 -> +0.44 top-1).
# Every conv of the backbone is built as a DOConv: the 3x3 and 7x7 convs are over-parameterised
# (D_mul = K*K, D initialised to the identity), the 1x1 convs stay plain. Training costs one
# extra small matmul per layer; after training, `switch_to_deploy` (or the ConvDeployHook /
# tools/deploy/fold_checkpoint.py) folds every DOConv into an nn.Conv2d, giving exactly the stock
# ResNet-50 (25,557,032 parameters, stock state-dict keys).
_base_ = 'mmpretrain::resnet/resnet50_8xb32_in1k.py'

custom_imports = dict(imports=['mm_efficientconv'], allow_failed_imports=False)

model = dict(backbone=dict(conv_cfg=dict(type='DOConv')))

# DOConv loads the weights of a plain conv (its over-parameterisation starts at the identity),
# so training can start from a plain ResNet-50 checkpoint of mmpretrain's model zoo, e.g.:
# load_from = 'https://download.openmmlab.com/mmclassification/v0/resnet/resnet50_8xb32_in1k_20210831-ea4938fc.pth'  # noqa: E501
