"""tools/analysis/model_complexity.py: params/FLOPs per config with the papers' numbers."""
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / 'tools' / 'analysis'))
from model_complexity import PAPER, measure, to_markdown  # noqa: E402


def test_resnet20_matches_bsconv_table2():
    row = measure(str(REPO / 'configs/bsconv/resnet20_1xb128_cifar10.py'))
    assert row['params'] == 272_474 and row['params_folded'] == 272_474
    assert row['input'] == '32x32'
    assert abs(row['flops'] - 41.3e6) / 41.3e6 < 0.01
    table = to_markdown([row])
    assert '| resnet20_1xb128_cifar10 | 32x32 | 272,474 |' in table
    assert PAPER['resnet20_1xb128_cifar10'][0] in table


def test_doconv_resnet50_folds_to_stock_count():
    row = measure(str(REPO / 'configs/doconv/resnet50-doconv_8xb32_in1k.py'))
    assert row['params'] > 25_557_032 and row['params_folded'] == 25_557_032


def test_cli_writes_markdown_and_json(tmp_path):
    out = tmp_path / 'complexity.md'
    result = subprocess.run(
        [sys.executable, 'tools/analysis/model_complexity.py', 'configs/mixnet/mixnet-s_8xb32_in1k.py',
         '--out', str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert '4,134,606' in out.read_text()
    rows = json.loads(out.with_suffix('.json').read_text())
    assert rows[0]['params'] == 4_134_606
    assert abs(rows[0]['flops'] - 256e6) / 256e6 < 0.03
