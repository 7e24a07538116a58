"""Generation and scoring: beam search, BLEU, test-set translation."""

from pet.generation.beam_search import BeamSearch, Hypothesis, strip_eos
from pet.generation.scoring import BleuScore, remove_bpe, sacrebleu_scores, tokenized_bleu
from pet.generation.translate import TranslationResult, length_sorted_batches, translate_dataset

__all__ = [
    "BeamSearch",
    "BleuScore",
    "Hypothesis",
    "TranslationResult",
    "length_sorted_batches",
    "remove_bpe",
    "sacrebleu_scores",
    "strip_eos",
    "tokenized_bleu",
    "translate_dataset",
]
