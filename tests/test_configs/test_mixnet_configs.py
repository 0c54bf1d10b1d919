# Copyright (c) mm_efficientconv contributors. All rights reserved.
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

import mm_efficientconv.backbones.mixnet  # noqa: F401  (registers MixNet)
import mm_efficientconv.layers.mixconv  # noqa: F401

CONFIG_DIR = osp.join(osp.dirname(__file__), '..', '..', 'configs', 'mixnet')
PARAMS = {'s': 4_134_606, 'm': 5_014_382, 'l': 7_329_252}


@pytest.mark.parametrize('arch', ['s', 'm', 'l'])
def test_mixnet_config_builds_with_pinned_params(arch):
    from mmpretrain.registry import MODELS as PRETRAIN_MODELS
    cfg = Config.fromfile(osp.join(CONFIG_DIR, f'mixnet-{arch}_8xb32_in1k.py'))
    assert cfg.default_scope == 'mmpretrain'
    assert cfg.custom_imports.imports == ['mm_efficientconv']
    assert cfg.model.backbone.type == 'MixNet' and cfg.model.backbone.arch == arch
    assert cfg.train_cfg.max_epochs == 350
    assert cfg.optim_wrapper.optimizer.type == 'RMSprop'
    assert cfg.optim_wrapper.optimizer.lr == pytest.approx(0.016)
    assert cfg.optim_wrapper.optimizer.weight_decay == pytest.approx(1e-5)
    assert cfg.model.head.loss.label_smooth_val == pytest.approx(0.1)
    # one exponential factor per epoch = x0.97 per 2.4 epochs
    decay = [s for s in cfg.param_scheduler if s.type == 'ExponentialLR'][0]
    assert decay.gamma**2.4 == pytest.approx(0.97)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = PRETRAIN_MODELS.build(cfg.model)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[arch]
    bn = model.backbone.layers[0].bn
    assert bn.eps == pytest.approx(1e-3) and bn.momentum == pytest.approx(0.01)
    if arch == 's':
        model.init_weights()
        model.eval()
        with torch.no_grad():
            assert model(torch.randn(1, 3, 32, 32)).shape == (1, 1000)
