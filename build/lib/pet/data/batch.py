"""The one batch type every stage consumes.

Sources are right-padded and end with </s>; targets are right-padded and end
with </s>; ``prev_output_tokens`` is the target shifted right with </s> in
front (fairseq's teacher-forcing convention).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class Batch:
    ids: torch.Tensor  # (B,) sentence indices into the split
    src_tokens: torch.Tensor  # (B, S) long, right-padded with pad
    src_lengths: torch.Tensor  # (B,) long, including </s>
    prev_output_tokens: torch.Tensor  # (B, T) long, </s> + target[:-1], right-padded
    target: torch.Tensor  # (B, T) long, right-padded
    ntokens: int  # non-pad target tokens

    @property
    def size(self) -> int:
        return int(self.src_tokens.size(0))

    def to(self, device: torch.device | str) -> "Batch":
        moved = {
            f.name: (getattr(self, f.name).to(device, non_blocking=True) if torch.is_tensor(getattr(self, f.name)) else getattr(self, f.name))
            for f in fields(self)
        }
        return Batch(**moved)
