"""A pruned checkpoint is self-contained: it loads in a fresh process with pet.checkpoint alone."""

import subprocess
import sys

import torch
import torch.nn.functional as F

from pet.checkpoint import save_checkpoint
from pet.pruning.removal import remove_pruned
from tests.conftest import REPO, random_batch
from tests.pruning_helpers import gated_small, random_selection, zero_selected

CHILD = r"""
import sys, torch
from pet.checkpoint import load_checkpoint, model_from_checkpoint
model = model_from_checkpoint(load_checkpoint(sys.argv[1])).eval()
io = torch.load(sys.argv[2])
with torch.no_grad():
    out = torch.log_softmax(model(io["src"], io["prev"])[0], -1)
assert not any(m.startswith("pet.pruning") for m in sys.modules), "loading needed the pruning code"
print((out - io["expected"]).abs().max().item(), model.num_parameters())
"""


def test_pruned_checkpoint_loads_in_a_fresh_process(tmp_path):
    _, gated = gated_small("unweighted")
    zero_selected(gated, random_selection(gated, keep=0.4))
    small = remove_pruned(gated).eval()
    ckpt = tmp_path / "checkpoint_pruned.pt"
    save_checkpoint({"spec": small.spec.to_dict(), "model": small.state_dict(),
                     "src_dict": ["<s>", "<pad>", "</s>", "<unk>"], "tgt_dict": ["<s>", "<pad>", "</s>", "<unk>"]}, ckpt)
    batch = random_batch()
    with torch.no_grad():
        expected = F.log_softmax(small(batch.src_tokens, batch.prev_output_tokens)[0], -1)
    torch.save({"src": batch.src_tokens, "prev": batch.prev_output_tokens, "expected": expected}, tmp_path / "io.pt")
    proc = subprocess.run([sys.executable, "-c", CHILD, str(ckpt), str(tmp_path / "io.pt")], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    diff, params = proc.stdout.split()
    # Thread counts may differ between the two processes (reduction order): float tolerance.
    assert float(diff) < 1e-5 and int(params) == small.num_parameters()
