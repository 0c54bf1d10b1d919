"""tools/analysis/model_complexity.py: params/FLOPs per config with the papers' numbers."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / 'tools' / 'analysis'))
from model_complexity import (PAPER, README_BEGIN, README_END, measure, to_markdown,  # noqa: E402
                              update_metafiles)


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


def _row(config, params=1000, folded=900, flops=123_456):
    return dict(config=str(config), model='ImageClassifier', input='32x32', params=params,
                params_folded=folded, flops=flops, flops_scope='whole model')


def _metafile_tree(tmp_path):
    folder = tmp_path / 'repo' / 'configs' / 'fam'
    folder.mkdir(parents=True)
    (folder / 'a.py').write_text('# a config\n')
    (folder / 'b.py').write_text('# another config\n')
    meta = {
        'Collections': [{'Name': 'Fam', 'Paper': {'URL': 'https://arxiv.org/abs/0', 'Title': 't'}}],
        'Models': [
            {'Name': 'a-model', 'In Collection': 'Fam', 'Config': 'configs/fam/a.py',
             'Metadata': {'Training Data': 'CIFAR-10', 'FLOPs': 1}, 'Results': []},
            {'Name': 'gone', 'In Collection': 'Fam', 'Config': 'configs/fam/gone.py'},
        ]
    }
    (folder / 'metafile.yml').write_text(yaml.safe_dump(meta, sort_keys=False))
    (folder / 'README.md').write_text(f'# Fam\n\nbefore\n\n{README_BEGIN}\nstale table\n'
                                      f'{README_END}\n\nafter\n')
    return folder


def test_update_metafiles_writes_numbers_adds_and_removes_entries(tmp_path):
    folder = _metafile_tree(tmp_path)
    written = update_metafiles([_row(folder / 'a.py'), _row(folder / 'b.py', 2000, 2000, 5e9)])
    assert written == [str(folder / 'metafile.yml'), str(folder / 'README.md')]
    meta = yaml.safe_load((folder / 'metafile.yml').read_text())
    assert [m['Config'] for m in meta['Models']] == ['configs/fam/a.py', 'configs/fam/b.py']
    a, b = meta['Models']
    # hand-written fields stay, measured ones are replaced
    assert a['Name'] == 'a-model' and a['Metadata']['Training Data'] == 'CIFAR-10'
    assert a['Metadata'] == {'Training Data': 'CIFAR-10', 'FLOPs': 123_456, 'Parameters': 1000,
                             'Parameters (folded)': 900, 'FLOPs Input': '32x32, whole model'}
    assert b['Name'] == 'b' and b['In Collection'] == 'Fam' and b['Results'] == []
    assert b['Metadata']['FLOPs'] == 5_000_000_000 and isinstance(b['Metadata']['FLOPs'], int)
    readme = (folder / 'README.md').read_text()
    assert readme.startswith('# Fam\n\nbefore\n') and readme.endswith(f'{README_END}\n\nafter\n')
    assert 'stale table' not in readme
    assert '| a-model | 1,000 | 900 | 123.46K | 32x32, whole model | - | - | [a.py](a.py) |' \
        in readme
    assert '| b | 2,000 | 2,000 | 5.00G |' in readme
    # idempotent
    text = (folder / 'metafile.yml').read_text()
    update_metafiles([_row(folder / 'a.py'), _row(folder / 'b.py', 2000, 2000, 5e9)])
    assert (folder / 'metafile.yml').read_text() == text


def test_update_metafiles_errors(tmp_path):
    folder = _metafile_tree(tmp_path)
    (folder / 'README.md').write_text('# no markers\n')
    with pytest.raises(ValueError, match='model-complexity'):
        update_metafiles([_row(folder / 'a.py')])
    other = tmp_path / 'repo' / 'configs' / 'new'
    other.mkdir()
    (other / 'c.py').write_text('\n')
    with pytest.raises(FileNotFoundError, match='write its Collections'):
        update_metafiles([_row(other / 'c.py')])
    with pytest.raises(ValueError, match='inside a `configs/` folder'):
        update_metafiles([_row(tmp_path / 'c.py')])
