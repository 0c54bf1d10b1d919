# Copyright (c) mm_efficientconv contributors. All rights reserved.
# CIFAR-100 as in the BSConv paper (section 5): mmpretrain's pipeline (random 32x32 crop with 4 px
# padding, horizontal flip, CIFAR-100 mean/std) with batch 128, top-1/top-5 evaluation.
_base_ = ['mmpretrain::_base_/datasets/cifar100_bs16.py']

train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=128)
test_dataloader = dict(batch_size=128)
val_evaluator = dict(topk=(1, 5))
test_evaluator = dict(topk=(1, 5))
