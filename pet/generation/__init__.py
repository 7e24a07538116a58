"""Generation and scoring: beam search, BLEU, test-set translation."""

from pet.generation.beam_search import BeamSearch, Hypothesis, strip_eos
from pet.generation.scoring import BleuScore, detok_sacrebleu, remove_bpe, tokenized_bleu
from pet.generation.translate import TranslationResult, length_sorted_batches, translate_dataset

__all__ = [
    "BeamSearch",
    "BleuScore",
    "Hypothesis",
    "TranslationResult",
    "detok_sacrebleu",
    "length_sorted_batches",
    "remove_bpe",
    "strip_eos",
    "tokenized_bleu",
    "translate_dataset",
]
