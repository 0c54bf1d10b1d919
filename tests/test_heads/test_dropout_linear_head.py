"""DropoutLinearClsHead: LinearClsHead's parameters plus dropout in training."""
import pytest
import torch
from mmpretrain.models.heads import LinearClsHead

from mm_efficientconv.heads import DropoutLinearClsHead


# components resolve in mmpretrain's scope, as in an mmpretrain config (tests/conftest.py)
pytestmark = pytest.mark.usefixtures('mmpretrain_scope')


def test_same_parameters_and_keys_as_linear_head():
    ours = DropoutLinearClsHead(10, 32, dropout_rate=0.25)
    stock = LinearClsHead(10, 32)
    assert ours.state_dict().keys() == stock.state_dict().keys()
    ours.load_state_dict(stock.state_dict(), strict=True)
    feats = (torch.randn(4, 32), )
    ours.eval()
    stock.eval()
    assert torch.equal(ours(feats), stock(feats))


def test_dropout_active_only_in_training():
    torch.manual_seed(0)
    head = DropoutLinearClsHead(10, 64, dropout_rate=0.5)
    feats = (torch.ones(8, 64), )
    head.train()
    dropped = head.pre_logits(feats)
    assert (dropped == 0).any() and torch.allclose(dropped[dropped != 0], torch.full_like(dropped[dropped != 0], 2.0))
    head.eval()
    assert torch.equal(head.pre_logits(feats), feats[0])


@pytest.mark.parametrize('rate', [-0.1, 1.0])
def test_bad_rate(rate):
    with pytest.raises(ValueError, match='dropout_rate'):
        DropoutLinearClsHead(10, 8, dropout_rate=rate)
