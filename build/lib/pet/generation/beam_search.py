"""Batched beam search with incremental decoding (fairseq's SequenceGenerator).

Semantics follow fairseq's defaults (``fairseq-generate --beam 5``):

* decoding starts from ``</s>``; scores are sums of log-probabilities;
* each step takes the ``2 * beam`` best (hypothesis, token) candidates of a
  sentence; an ``</s>`` candidate among the first ``beam`` finalises a
  hypothesis, whose score is then divided by ``len ** lenpen`` (``len`` counts
  the final ``</s>``); the ``beam`` best non-``</s>`` candidates continue;
* a sentence is done once it holds ``beam`` finalised hypotheses (fairseq's
  early stopping: a continuing hypothesis might still have overtaken them, but
  fairseq does not wait for it) or when it reaches its maximum length, where
  ``</s>`` is forced;
* ``<pad>`` is never generated, ``<unk>`` is allowed (``unk_penalty`` 0), and
  ``</s>`` is forbidden at the first step (``min_len`` 1), so no hypothesis is
  empty.

Deliberate differences, none of which changes a hypothesis in the default
setting except the first:

* ``max_len = int(max_len_a * src_len + max_len_b)`` is computed per sentence
  (``src_len`` = its non-pad tokens, ``</s>`` included). fairseq uses the padded
  width of the batch for every sentence, which makes a translation depend on
  the batch it happened to be in; per sentence, it does not. For the longest
  sentence of a batch the two agree.
* The first step runs on one row per sentence (all beams share the prefix
  ``</s>``; fairseq computes all ``beam`` identical rows and reads one), which
  also computes the cross-attention keys/values once per sentence.
* Encoder states and cross-attention keys/values stay one row per sentence:
  the decoder's cross-attention treats a sentence's ``beam`` hypotheses as
  that many queries against them (fairseq copies them to every beam and
  reorders the encoder output at every step). They are only selected when
  finished sentences leave the batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class Hypothesis:
    """One finished translation of one sentence.

    ``tokens`` ends with ``</s>`` (as in fairseq); :attr:`output_tokens` drops it.
    ``score`` is the length-normalised log-probability (natural log);
    ``positional_scores[i]`` is the log-probability of ``tokens[i]``.
    """

    tokens: Tensor  # (len,) long, CPU, last is eos
    score: float
    positional_scores: Tensor  # (len,) float, CPU

    @property
    def output_tokens(self) -> Tensor:
        """Tokens without the final ``</s>`` (every hypothesis ends with one)."""
        return self.tokens[:-1]

    def __len__(self) -> int:
        return int(self.tokens.numel())


def strip_eos(tokens: Tensor, eos: int) -> Tensor:
    """``tokens`` without a trailing ``</s>``."""
    if tokens.numel() and int(tokens[-1]) == eos:
        return tokens[:-1]
    return tokens


class BeamSearch:
    """Beam search over a :class:`pet.models.transformer.TransformerModel`.

    ``model`` needs ``encoder(src_tokens) -> EncoderOut``,
    ``decoder(prev_output_tokens, encoder_out, cache=cache) -> (logits, _)``
    (with a cache only the last position is computed), ``reorder_cache`` and
    ``spec.max_positions``. ``beam=1`` is greedy search through the same code.
    """

    def __init__(
        self,
        model,
        beam: int = 5,
        max_len_a: float = 1.2,
        max_len_b: int = 10,
        lenpen: float = 1.0,
        eos: int = 2,
        pad: int = 1,
        unk: int = 3,
        unk_penalty: float = 0.0,
        min_len: int = 1,
    ):
        if beam < 1:
            raise ValueError(f"beam must be >= 1, got {beam}")
        self.model = model
        self.beam = beam
        self.max_len_a = max_len_a
        self.max_len_b = max_len_b
        self.lenpen = lenpen
        self.eos, self.pad, self.unk = eos, pad, unk
        self.unk_penalty = unk_penalty
        self.min_len = min_len
        spec = getattr(model, "spec", None)
        # Decoder inputs are positions 0..max_len, so max_len <= max_positions - 1.
        self.max_positions = getattr(spec, "max_positions", 1024) if spec is not None else 1024
        vocab = spec.decoder.vocab_size if spec is not None else None
        if vocab is not None and vocab - 1 < beam:
            raise ValueError(f"beam {beam} needs a target vocabulary larger than {beam + 1} (has {vocab})")

    @classmethod
    def greedy(cls, model, **kwargs) -> "BeamSearch":
        return cls(model, beam=1, **kwargs)

    def max_lengths(self, src_lengths: list[int]) -> list[int]:
        """Maximum output length (excluding ``</s>``) of each sentence."""
        cap = self.max_positions - 1
        return [min(int(self.max_len_a * n + self.max_len_b), cap) for n in src_lengths]

    def generate(self, src_tokens: Tensor) -> list[list[Hypothesis]]:
        """``src_tokens`` (B, S), right-padded, ending with ``</s>``, on the
        model's device. Returns, per sentence, ``beam`` hypotheses (fewer only
        if the maximum length cut the search short), best first."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                return self._generate(src_tokens)
        finally:
            self.model.train(was_training)

    def _generate(self, src_tokens: Tensor) -> list[list[Hypothesis]]:
        model, beam, eos, pad = self.model, self.beam, self.eos, self.pad
        device = src_tokens.device
        bsz = src_tokens.size(0)
        if bsz == 0:
            return []
        src_lengths = src_tokens.ne(pad).sum(1).tolist()
        max_lens_list = self.max_lengths(src_lengths)  # per active sentence
        max_steps = max(max_lens_list)

        encoder_out = model.encoder(src_tokens)
        cache: dict = {}

        # tokens[:, 0] is </s>; column t+1 holds the token chosen at step t.
        tokens = torch.full((bsz * beam, max_steps + 2), pad, dtype=torch.long, device=device)
        tokens[:, 0] = eos
        # Cumulative log-probability after each step.
        scores = torch.zeros(bsz * beam, max_steps + 1, device=device)
        orig_ids = list(range(bsz))  # original index of each active sentence
        finalized: list[list[Hypothesis]] = [[] for _ in range(bsz)]
        cand_size = 2 * beam
        cands_to_ignore = torch.zeros(bsz, beam, dtype=torch.bool, device=device)
        cand_offsets = torch.arange(cand_size, device=device)
        neg_inf = -math.inf

        for step in range(max_steps + 1):
            # Rows per sentence in the decoder state: 1 at step 0 (all beams
            # share the prefix </s>), beam afterwards.
            rows = 1 if step == 0 else beam
            if step == 0:
                prev = tokens.view(bsz, beam, -1)[:, 0, :1]
            else:
                prev = tokens[:, : step + 1]
            logits, _ = model.decoder(prev, encoder_out, cache=cache)
            lprobs = F.log_softmax(logits[:, -1, :].float(), dim=-1)
            vocab = lprobs.size(-1)
            lprobs[:, pad] = neg_inf
            if self.unk_penalty:
                lprobs[:, self.unk] -= self.unk_penalty
            # Sentences that must end now (a host-side list: no device sync).
            at_max_list = [m <= step for m in max_lens_list]
            at_max = torch.tensor(at_max_list, device=device)
            if any(at_max_list):
                row_at_max = at_max.repeat_interleave(rows)
                eos_col = lprobs[:, eos].clone()
                lprobs[row_at_max] = neg_inf
                lprobs[row_at_max, eos] = eos_col[row_at_max]
            if step < self.min_len:
                lprobs[~at_max.repeat_interleave(rows), eos] = neg_inf

            # Candidates: the 2*beam best (beam, token) pairs of each sentence.
            lp = lprobs.view(bsz, rows, vocab)
            if step > 0:
                lp = lp + scores[:, step - 1].view(bsz, beam, 1)
            flat = lp.view(bsz, -1)
            k = min(cand_size, flat.size(1) - 1)  # -1: never select pad
            cand_scores, cand_flat = torch.topk(flat, k, dim=1)
            # fairseq turns NaN log-probs into -inf. topk ranks NaN above every
            # number, so checking the k winners finds any NaN without a pass
            # over the whole (rows, vocab) tensor.
            if bool(cand_scores.isnan().any()):
                flat = flat.nan_to_num(nan=neg_inf, posinf=math.inf, neginf=neg_inf)
                cand_scores, cand_flat = torch.topk(flat, k, dim=1)
            cand_indices = cand_flat % vocab
            cand_beams = torch.div(cand_flat, vocab, rounding_mode="floor")
            bbsz_offsets = (torch.arange(bsz, device=device) * beam).unsqueeze(1)
            cand_bbsz_idx = cand_beams + bbsz_offsets  # rows of `tokens`

            eos_mask = cand_indices.eq(eos) & cand_scores.ne(neg_inf)
            eos_mask[:, :beam][cands_to_ignore] = False

            finished_now = self._finalize(
                step, eos_mask[:, :beam], cand_bbsz_idx[:, :beam], cand_scores[:, :beam],
                tokens, scores, orig_ids, max_lens_list, finalized,
            )
            if len(finished_now) == bsz:
                break

            old_sentence = torch.arange(bsz, device=device)
            shrink = len(finished_now) > 0
            if shrink:
                finished_set = set(finished_now)
                keep = torch.ones(bsz, dtype=torch.bool, device=device)
                keep[finished_now] = False
                batch_idxs = keep.nonzero().squeeze(1)
                new_bsz = bsz - len(finished_now)
                old_sentence = batch_idxs
                eos_mask = eos_mask[batch_idxs]
                cand_beams = cand_beams[batch_idxs]
                cand_scores = cand_scores[batch_idxs]
                cand_indices = cand_indices[batch_idxs]
                cands_to_ignore = cands_to_ignore[batch_idxs]
                tokens = tokens.view(bsz, -1)[batch_idxs].view(new_bsz * beam, -1)
                scores = scores.view(bsz, -1)[batch_idxs].view(new_bsz * beam, -1)
                max_lens_list = [m for i, m in enumerate(max_lens_list) if i not in finished_set]
                orig_ids = [o for i, o in enumerate(orig_ids) if i not in finished_set]
                bsz = new_bsz
                cand_bbsz_idx = cand_beams + (torch.arange(bsz, device=device) * beam).unsqueeze(1)

            # The beam best candidates that are not </s> continue. Finalised or
            # ignored ones sort behind every live candidate.
            eos_mask[:, :beam] = cands_to_ignore | eos_mask[:, :beam]
            active_mask = eos_mask.long() * cand_size + cand_offsets[: eos_mask.size(1)]
            new_cands_to_ignore, active_hypos = torch.topk(active_mask, k=beam, dim=1, largest=False)
            cands_to_ignore = new_cands_to_ignore.ge(cand_size)
            assert bool((~cands_to_ignore).any(dim=1).all()), "a sentence ran out of live hypotheses"

            active_bbsz_idx = torch.gather(cand_bbsz_idx, 1, active_hypos).view(-1)
            tokens[:, : step + 1] = tokens[:, : step + 1].index_select(0, active_bbsz_idx)
            tokens.view(bsz, beam, -1)[:, :, step + 1] = torch.gather(cand_indices, 1, active_hypos)
            if step > 0:
                scores[:, :step] = scores[:, :step].index_select(0, active_bbsz_idx)
            scores.view(bsz, beam, -1)[:, :, step] = torch.gather(cand_scores, 1, active_hypos)

            # Decoder-state row (before any shrink) each new hypothesis extends.
            active_beams = torch.gather(cand_beams, 1, active_hypos)
            state_order = (old_sentence.unsqueeze(1) * rows + active_beams).view(-1)
            # Encoder states and cross-attention keys/values stay one row per
            # sentence (the decoder groups each sentence's beam onto them):
            # they move only when finished sentences leave the batch.
            model.reorder_cache(cache, state_order, sentences=old_sentence if shrink else None)
            if shrink:
                encoder_out = encoder_out.index_select(old_sentence)

        for hyps in finalized:
            hyps.sort(key=lambda h: -h.score)  # stable: ties keep finalisation order
        return finalized

    def _finalize(
        self,
        step: int,
        eos_mask: Tensor,  # (bsz, beam) </s> candidates among the first beam
        cand_bbsz_idx: Tensor,
        cand_scores: Tensor,
        tokens: Tensor,
        scores: Tensor,
        orig_ids: list[int],
        max_lens: list[int],
        finalized: list[list[Hypothesis]],
    ) -> list[int]:
        """Store the hypotheses that end at this step; return the (active)
        indices of sentences that are now done."""
        beam = self.beam
        done_list = [m <= step for m in max_lens]
        if not bool(eos_mask.any()):
            return [i for i, d in enumerate(done_list) if d]
        eos_rows = cand_bbsz_idx[eos_mask]
        eos_scores = cand_scores[eos_mask]
        hyp_tokens = tokens[:, 1 : step + 2].index_select(0, eos_rows)
        hyp_tokens[:, step] = self.eos
        cum = scores[:, : step + 1].index_select(0, eos_rows)
        cum[:, step] = eos_scores
        pos_scores = cum.clone()
        pos_scores[:, 1:] = cum[:, 1:] - cum[:, :-1]
        norm_scores = eos_scores / (step + 1) ** self.lenpen

        sentences = torch.div(eos_rows, beam, rounding_mode="floor")
        hyp_tokens, pos_scores = hyp_tokens.cpu(), pos_scores.cpu()
        norm_list = norm_scores.tolist()
        sent_list = sentences.tolist()
        touched = []
        for i, s in enumerate(sent_list):
            store = finalized[orig_ids[s]]
            if len(store) < beam:
                store.append(Hypothesis(hyp_tokens[i].clone(), norm_list[i], pos_scores[i].clone()))
            touched.append(s)
        return sorted(s for s in set(touched) | {i for i, d in enumerate(done_list) if d}
                      if done_list[s] or len(finalized[orig_ids[s]]) >= beam)
