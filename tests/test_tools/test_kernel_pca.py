"""tools/analysis/kernel_pca.py: the BSConv paper's kernel analysis."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / 'tools' / 'analysis'))
from kernel_pca import analyse, first_pc_variance_share  # noqa: E402

from mm_efficientconv import BSConvU  # noqa: E402


def test_blueprint_filters_are_explained_by_one_component():
    torch.manual_seed(0)
    blueprint = torch.randn(5, 1, 3, 3)
    depth_weights = torch.randn(5, 16, 1, 1)
    weight = blueprint * depth_weights  # every slice a scaled blueprint
    share = first_pc_variance_share(weight)
    torch.testing.assert_close(share, torch.ones(5), atol=1e-6, rtol=0)
    random = first_pc_variance_share(torch.randn(64, 16, 3, 3))
    assert (random < 0.6).all() and (random > 0.1).all()


def test_hand_computed_share():
    w = torch.tensor([[[[1., 0.], [0., 0.]], [[3., 0.], [0., 1.]]]])  # (1, 2, 2, 2)
    slices = w.reshape(2, 4)
    centred = slices - slices.mean(0)
    sv = torch.linalg.svdvals(centred.double())
    expected = (sv[0]**2 / (sv**2).sum()).float()
    torch.testing.assert_close(first_pc_variance_share(w)[0], expected)


def test_bad_shapes():
    with pytest.raises(ValueError, match='4-D'):
        first_pc_variance_share(torch.randn(4, 4))
    with pytest.raises(ValueError, match='larger than 1x1'):
        first_pc_variance_share(torch.randn(4, 4, 1, 1))


def test_bsconv_layers_are_exactly_blueprints():
    model = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3), BSConvU(16, 16, 3))
    stages = analyse(model)
    assert list(stages) == ['0', '1']
    assert min(stages['1']) > 1 - 1e-5  # BSConv-U's dense kernel is rank-1 along depth
    assert max(stages['0']) < 0.99


def test_cli_writes_figure_and_numbers(tmp_path):
    out = tmp_path / 'pca.png'
    result = subprocess.run(
        [sys.executable, 'tools/analysis/kernel_pca.py', 'configs/bsconv/resnet20_1xb128_cifar10.py',
         '--out', str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert out.stat().st_size > 1000 and out.read_bytes()[:4] == b'\x89PNG'
    numbers = json.loads(out.with_suffix('.json').read_text())
    assert set(numbers) == {'conv1', 'layer1', 'layer2', 'layer3'}
    assert numbers['layer1']['filters'] == 6 * 16
    assert all(0 <= v <= 1 for stage in numbers.values() for v in stage['values'])
