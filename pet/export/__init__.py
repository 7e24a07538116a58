"""Exporting pet models to inference engines (CTranslate2), and proving the export exact.

* :mod:`pet.export.ctranslate2`: any pet model (plain, pruned, PET student) as a
  CTranslate2 model folder (:func:`convert`);
* :mod:`pet.export.translator`: :class:`CT2Translator`, translating token
  sequences with an exported folder by pet's decoding rules, and
  :func:`measure_ct2_latency`;
* :mod:`pet.export.check`: pet's beam search vs the export's on the same
  sentences (:func:`check_exactness`).

Importing this package does not import ``ctranslate2`` (an optional
dependency: ``pip install -e '.[serve]'``); using it does.
"""

from pet.export.check import ExactnessReport, check_exactness, compare_with_pet
from pet.export.ctranslate2 import QUANTIZATIONS, ExportError, build_spec, convert
from pet.export.translator import CT2Translator, measure_ct2_latency

__all__ = [
    "CT2Translator",
    "ExactnessReport",
    "ExportError",
    "QUANTIZATIONS",
    "build_spec",
    "check_exactness",
    "compare_with_pet",
    "convert",
    "measure_ct2_latency",
]
