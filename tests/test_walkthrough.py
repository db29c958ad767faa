"""docs/walkthrough.py runs offline and prints every concept it promises."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_walkthrough_runs_and_shows_each_concept():
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "HF_HUB_OFFLINE": "1",
         "XLA_FLAGS": ""}  # one CPU device, as a newcomer runs it
  proc = subprocess.run([sys.executable, os.path.join("docs", "walkthrough.py")], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = proc.stdout
  # 1. tokens with the special ids of bert-base-uncased, word pieces, a literal [MASK].
  assert "[CLS]=101 [SEP]=102 [MASK]=103" in out
  assert "##bly" in out and "[PAD]" in out
  assert re.search(r"token\s+\[CLS\] i\s+love\s+\[MASK\]", out)
  # 2. the pair's segment ids: seven 0s for [CLS] A [SEP], seven 1s for B [SEP].
  assert re.search(r"segment\s+(0\s+){7}(1\s+){7}0", out)
  # 3. encoder shapes.
  assert "last_hidden_state  (2, 24, 64)" in out and "pooler_output      (2, 64)" in out
  # 4. one draw with all three choices, and the 80/10/10 proportions over many draws.
  table = out.split("position original")[1].split("model input")[0]
  assert {"[MASK]", "random", "kept"} <= set(table.split())
  m = re.search(r"\[MASK\] ([\d.]+)%, random ([\d.]+)%, kept ([\d.]+)%", out)
  assert m, out
  frac = [float(x) for x in m.groups()]
  assert abs(frac[0] - 80) < 2 and abs(frac[1] - 10) < 1.5 and abs(frac[2] - 10) < 1.5
  assert "(1, 20, 30522) [batch, max_predictions, vocab]" in out
  # 5. the classifier on [CLS], checked by hand inside the script.
  assert "logits (2, 2) [batch, labels] = pooler_output @ kernel + bias" in out
  assert out.rstrip().endswith("walkthrough done")
