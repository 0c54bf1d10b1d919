# MixNet-S (Tan & Le, BMVC 2019) on ImageNet-1k, trained from scratch with the
# MnasNet / TF MixNet recipe: RMSprop, lr 0.016 per 256 images, 5 warmup epochs,
# x0.97 every 2.4 epochs, weight decay 1e-5 (not on norm layers), label smoothing
# 0.1, weight EMA 0.9999, 350 epochs, BN eps 1e-3 / momentum 0.99 (TF convention).
# Paper: 4.1M params, 256M FLOPs, 75.8 top-1.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs32_pil_bicubic.py',
    'mmpretrain::_base_/default_runtime.py',
]

custom_imports = dict(imports=['mm_efficientconv'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='MixNet',
        arch='s',
        out_indices=(7, ),
        # TF BatchNorm momentum 0.99 is PyTorch momentum 0.01.
        norm_cfg=dict(type='BN', eps=1e-3, momentum=0.01)),
    neck=dict(type='GlobalAveragePooling'),
    # Dropout 0.2 (S) / 0.25 (M, L) before the classifier, as in the reference;
    # DropoutLinearClsHead has LinearClsHead's parameters and keys.
    head=dict(
        type='DropoutLinearClsHead',
        dropout_rate=0.2,
        num_classes=1000,
        in_channels=1536,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original',
                  loss_weight=1.0),
        topk=(1, 5)))

# RMSprop with TF semantics: decay 0.9 (``alpha``), momentum 0.9, TF epsilon
# 1e-3, which TF adds inside the square root: sqrt(1e-3) = 0.0316 outside it
# (the value mmpretrain's MobileNetV3 configs use for the same recipe).
optim_wrapper = dict(
    optimizer=dict(
        type='RMSprop', lr=0.016, alpha=0.9, momentum=0.9, eps=0.0316, weight_decay=1e-5),
    paramwise_cfg=dict(norm_decay_mult=0.0))

# 5 warmup epochs; the reference decays x0.97 every 2.4 epochs (staircase),
# here the equivalent smooth per-epoch factor 0.97 ** (1 / 2.4).
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=5,
         convert_to_iter_based=True),
    dict(type='ExponentialLR', gamma=0.97**(1 / 2.4), by_epoch=True, begin=0, end=350),
]

train_cfg = dict(by_epoch=True, max_epochs=350, val_interval=1)
val_cfg = dict()
test_cfg = dict()

# Exponential moving average of the weights (TF: decay 0.9999).
custom_hooks = [dict(type='EMAHook', momentum=1e-4, priority='ABOVE_NORMAL')]

# lr 0.016 is for 8 GPUs x 32 images.
auto_scale_lr = dict(base_batch_size=256)
