# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""mm_efficientconv.deploy.checkpoint: deploy checkpoints load weights-only, are written
atomically and hold CPU tensors of the unwrapped model."""
import os

import numpy as np
import pytest
import torch
import torch.nn as nn

from mm_efficientconv.deploy import (atomic_torch_save, cpu_state_dict, deploy_checkpoint, plain_meta,
                                     save_deploy_checkpoint)


class _Wrapper(nn.Module):
    """Stands in for a DDP-like wrapper: mmengine's get_state_dict unwraps `.module`."""

    def __init__(self, module):
        super().__init__()
        self.module = module


def test_plain_meta_is_weights_only_loadable(tmp_path):
    meta = plain_meta(dict(a=np.float32(1.5), b=(1, 'x'), c=[np.int64(2)], d=object(),
                           e={1: None}, f=torch.tensor(3)))
    assert meta['a'] == 1.5 and meta['b'] == (1, 'x') and meta['c'] == [2] and meta['f'] == 3
    assert isinstance(meta['d'], str) and meta['e'] == {'1': None}
    torch.save(meta, tmp_path / 'm.pth')
    assert torch.load(tmp_path / 'm.pth', weights_only=True) == meta


def test_cpu_state_dict_detaches_and_keeps_metadata():
    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3))
    state = cpu_state_dict(model)
    assert list(state) == list(model.state_dict())
    for key, value in state.items():
        assert value.device.type == 'cpu' and not value.requires_grad, key
        torch.testing.assert_close(value, model.state_dict()[key], rtol=0, atol=0)
    assert state._metadata['1']['version'] == nn.BatchNorm2d._version


def test_cpu_state_dict_unwraps_model_wrappers(monkeypatch):
    import mmengine.runner.checkpoint as mmengine_checkpoint
    model = nn.Linear(2, 2)
    monkeypatch.setattr(mmengine_checkpoint, 'is_model_wrapper', lambda m: isinstance(m, _Wrapper))
    assert list(cpu_state_dict(_Wrapper(model))) == ['weight', 'bias']


def test_save_deploy_checkpoint(tmp_path):
    model = nn.Linear(2, 2)
    path = tmp_path / 'sub' / 'deploy.pth'
    assert save_deploy_checkpoint(model, dict(deploy=True, arr=np.ones(1)), str(path)) == 2
    loaded = torch.load(path, weights_only=True)
    assert list(loaded) == ['state_dict', 'meta'] and loaded['meta']['deploy'] is True
    assert loaded['meta']['arr'] == str(np.ones(1))
    assert deploy_checkpoint(model, {})['state_dict'].keys() == loaded['state_dict'].keys()
    assert os.listdir(path.parent) == ['deploy.pth']


def test_atomic_save_leaves_nothing_on_failure(tmp_path):
    path = tmp_path / 'out.pth'
    path.write_bytes(b'old')

    class _Unpicklable:

        def __reduce__(self):
            raise RuntimeError('cannot pickle')

    with pytest.raises(RuntimeError, match='cannot pickle'):
        atomic_torch_save({'x': _Unpicklable()}, str(path))
    assert path.read_bytes() == b'old' and os.listdir(tmp_path) == ['out.pth']
