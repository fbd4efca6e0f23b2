"""The digits label-efficiency experiment runs every stage (--quick)."""

import os
import re

from simclr_jax.experiments import digits_table


def test_digits_table_quick(tmp_path):
  data_dir = str(tmp_path / 'tfds')
  results = digits_table.run(str(tmp_path / 'runs'), data_dir, quick=True)
  fractions = results['fractions']
  assert fractions == [0.1, 1.0]
  for method in digits_table.METHODS:
    for f in fractions:
      values = results['accuracy'][method][str(f)]
      assert len(values) == 1 and 0.0 <= values[0] <= 1.0
  assert len(results['distillation']) == 3
  assert set(results['seconds']) == {'pretrain', 'probes', 'simclr_finetune',
                                     'supervised', 'distill'}
  md = str(tmp_path / 'results.md')
  png = str(tmp_path / 'plot.png')
  digits_table.write_markdown(results, md, 'plot.png', 'cmd --quick')
  digits_table.plot(results, png)
  text = open(md).read()
  rows = [l for l in text.splitlines() if l.startswith('| ')]
  header = rows[0]
  assert header.count('|') == len(fractions) + 2
  method_rows = rows[1:1 + len(digits_table.METHODS)]
  for row in method_rows:
    assert row.count('|') == len(fractions) + 2
    assert all(re.fullmatch(r'\d+\.\d', c.strip())
               for c in row.strip('|').split('|')[1:])
  assert 'cmd --quick' in text and 'plot.png' in text
  assert os.path.getsize(png) > 1000


def test_digits_curve_quick(tmp_path):
  from simclr_jax.experiments import digits_curve  # pylint: disable=g-import-not-at-top
  results = digits_curve.run(str(tmp_path / 'runs'), 'digits',
                             str(tmp_path / 'tfds'), quick=True)
  assert [p['step'] for p in results['points']] == [3, 6]
  for point in results['points']:
    assert point['seconds'] > 0
    assert set(point['probe']) == {'0.1', '1.0'}
    assert all(0.0 <= mean <= 1.0 for mean, _ in point['probe'].values())
  assert results['points'][0]['seconds'] < results['points'][1]['seconds']
  md, png = str(tmp_path / 'curve.md'), str(tmp_path / 'curve.png')
  digits_curve.write_markdown(results, md, 'curve.png', 'cmd --quick')
  digits_curve.plot(results, png)
  rows = [l for l in open(md).read().splitlines() if l.startswith('| ')]
  assert len(rows) == 1 + 2 and os.path.getsize(png) > 1000
