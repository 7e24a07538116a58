"""Data pipeline: raw text -> Moses tokens -> joint BPE -> dictionaries -> ids -> batches.

Modules, one job each (imported lazily by the stages; nothing heavy here):

* :mod:`pet.data.prepare` - the ``prepare`` stage: ``prepare_data``;
* :mod:`pet.data.fingerprint` - what identifies a prepared folder (config fields, source contents);
* :mod:`pet.data.prepared` - a prepared folder as later stages read it: ``load_prepared``;
* :mod:`pet.data.iwslt` - fairseq's prepare-iwslt14.sh recipe;
* :mod:`pet.data.demo_corpus` - generated German->English numbers/dates corpus;
* :mod:`pet.data.corpus` - validation of raw parallel files;
* :mod:`pet.data.text` - Moses tokenization, cleaning, lowercasing, detokenization;
* :mod:`pet.data.bpe` - joint BPE with subword-nmt;
* :mod:`pet.data.dictionary` - fairseq-compatible ``Dictionary``;
* :mod:`pet.data.binarize` - ids cached as flat tensors;
* :mod:`pet.data.dataset` - ``LanguagePairDataset`` and ``collate -> Batch``;
* :mod:`pet.data.batching` - token-budget batches, deterministic per (seed, epoch);
* :mod:`pet.data.batch` - the ``Batch`` every stage consumes;
* :mod:`pet.data.fileio` - atomic writes, newline-exact reads.
"""
