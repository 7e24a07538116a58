"""fairseq's ``prepare-iwslt14.sh`` recipe, step for step, in Python.

Why re-implement a shell script: pet must run where Perl/Moses are not
installed, and every step must be testable. The steps (fairseq
examples/translation/prepare-iwslt14.sh):

1. fetch ``de-en.tgz`` (URL, local tarball or unpacked folder);
2. training text: ``train.tags.de-en.{de,en}`` minus metadata lines
   (``grep -v '<url>'``, ``'<talkid>'``, ``'<keywords>'``; we also drop
   ``<speaker>``, ``<reviewer``, ``<translator``, ``<doc``, ``</doc>`` lines,
   which the 2014-01 de-en archive does not contain - the shared fairseq
   output has no ``&lt;`` token at all - but later IWSLT releases do), with
   ``<title>``/``</title>``/``<description>``/``</description>`` tags deleted
   (the text between them stays, as fairseq's ``sed`` leaves it);
3. Moses tokenization, ``clean-corpus-n.perl -ratio 1.5 ... 1 175``, lowercasing;
4. valid = every 23rd cleaned line (``awk 'NR%23 == 0'``), train = the rest;
5. test = the ``<seg id=...>`` lines of ``IWSLT14.TED*.{lang}.xml`` with the
   ``<seg>`` tags and surrounding blanks removed and ``’`` -> ``'``, tokenized
   and lowercased, concatenated in fairseq's order: dev2010, TEDX.dev2012,
   tst2010, tst2011, tst2012 (the script ``cat``s them explicitly in this
   order, and the shared ``tok/test.*`` files follow it: line 888 is the first
   TEDX.dev2012 segment). We sort any set of files by (dev|tst, year, corpus),
   which gives exactly that order;
6. joint BPE learned on train.src + train.tgt and applied to all splits - done
   by :mod:`pet.data.prepare`, which shares that tail with the other kinds.
"""

from __future__ import annotations

import fnmatch
import logging
import re
import shutil
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from pet.data.fileio import split_lines
from pet.data.text import MosesPipeline, clean_pairs
from pet.data.text import lowercase as lowercase_line
from pet.errors import DataError, brief

log = logging.getLogger(__name__)

# fairseq's examples/translation/prepare-iwslt14.sh downloads from here (the
# original WIT3 address is gone). Override with data.source=<url|file|folder>.
IWSLT14_URL = "http://dl.fbaipublicfiles.com/fairseq/data/iwslt14/de-en.tgz"

DROP_LINE_MARKERS = ("<url>", "<talkid>", "<keywords>", "<speaker>", "<reviewer", "<translator", "<doc", "</doc>")
STRIP_TAGS = ("<title>", "</title>", "<description>", "</description>")

_SEG_OPEN = re.compile(r'<seg id="[0-9]*">[ \t\r\f\v]*')
_SEG_CLOSE = re.compile(r"[ \t\r\f\v]*</seg>[ \t\r\f\v]*")
_XML_NAME = re.compile(r"^IWSLT\d+\.(?P<corpus>TED\w*)\.(?P<set>[A-Za-z]+)(?P<year>\d+)\.")

Splits = dict[str, dict[str, list[str]]]


@dataclass
class IwsltText:
    """The recipe's result before BPE: raw (cased) and tokenized lines per split and language."""

    raw: Splits = field(default_factory=dict)
    tok: Splits = field(default_factory=dict)
    # how many training-file lines were read / survived the filters, for meta.json
    stats: dict[str, int] = field(default_factory=dict)
    test_files: list[str] = field(default_factory=list)


# ----------------------------------------------------------------- line rules
def filter_train_tags(lines: list[str]) -> list[str]:
    """``grep -v`` the metadata lines and ``sed`` away title/description tags."""
    out = []
    for line in lines:
        if any(marker in line for marker in DROP_LINE_MARKERS):
            continue
        for tag in STRIP_TAGS:
            line = line.replace(tag, "")
        out.append(line)
    return out


def extract_segments(xml_text: str, fairseq_apostrophe: bool = True) -> list[str]:
    """``grep '<seg id' | sed 's/<seg id="[0-9]*">\\s*//g; s/\\s*<\\/seg>\\s*//g; s/’/'/g'``.

    ``fairseq_apostrophe=False`` keeps the segment text untouched (’ and all):
    the raw reference sacreBLEU scores against."""
    out = []
    for line in split_lines(xml_text):
        if "<seg id" not in line:
            continue
        line = _SEG_OPEN.sub("", line)
        line = _SEG_CLOSE.sub("", line)
        out.append(line.replace("\u2019", "'") if fairseq_apostrophe else line)
    return out


def xml_order_key(name: str) -> tuple[str, int, str, str]:
    """Sort key reproducing fairseq's test order: dev before tst, then year, TED before TEDX."""
    m = _XML_NAME.match(name)
    if not m:
        return ("~", 0, "", name)
    return (m.group("set").lower(), int(m.group("year")), m.group("corpus"), name)


# ------------------------------------------------------------------- fetching
def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def download(url: str, cache_dir: Path) -> Path:
    """Download ``url`` into ``cache_dir`` once (atomically); later calls reuse the file."""
    name = url.rstrip("/").rsplit("/", 1)[-1] or "download"
    cache_dir.mkdir(parents=True, exist_ok=True)
    dest = cache_dir / name
    if dest.is_file() and dest.stat().st_size > 0:
        log.info("using cached download %s", dest)
        return dest
    tmp = dest.with_name(f".{name}.part")
    log.info("downloading %s -> %s", url, dest)
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as out:
            shutil.copyfileobj(resp, out, length=1 << 20)
        tmp.replace(dest)
    except (urllib.error.URLError, OSError, ValueError) as err:
        tmp.unlink(missing_ok=True)
        raise DataError(
            f"could not download {url}: {brief(err)}; download it by hand and set data.source to the "
            "local de-en.tgz (or its unpacked folder)"
        ) from None
    return dest


class _Files:
    """Basename -> bytes access to the needed files of a tarball or folder."""

    def __init__(self, location: Path, pairs: tuple[str, ...]) -> None:
        self.location = location
        self.pair = pairs[0]  # set to the pair actually found by _find_pair
        self._data: dict[str, bytes] = {}
        self._paths: dict[str, Path] = {}
        if location.is_dir():
            for folder in (location, *(location / p for p in pairs)):
                if folder.is_dir():
                    for p in sorted(folder.iterdir()):
                        if p.is_file():
                            self._paths.setdefault(p.name, p)
        elif location.is_file():
            self._read_tar(location)
        else:
            raise DataError(
                f"{location} does not exist; data.source must be a URL, the de-en.tgz archive or its unpacked folder"
            )

    def _wanted(self, name: str) -> bool:
        return name.startswith("train.tags.") or (name.startswith("IWSLT") and name.endswith(".xml"))

    def _read_tar(self, path: Path) -> None:
        try:
            with tarfile.open(path, "r:*") as tar:
                for member in tar:  # one sequential pass: cheap on .tgz
                    name = Path(member.name).name
                    if member.isfile() and self._wanted(name):
                        if name in self._data:
                            raise DataError(f"{path}: archive holds two files named {name}; use the original de-en.tgz")
                        fobj = tar.extractfile(member)
                        assert fobj is not None
                        self._data[name] = fobj.read()
        except (tarfile.TarError, EOFError, OSError) as err:
            raise DataError(
                f"{path}: not a readable tar archive ({brief(err)}); delete it and download de-en.tgz again"
            ) from None

    def names(self) -> list[str]:
        return sorted(set(self._data) | set(self._paths))

    def read(self, name: str) -> tuple[str, str]:
        """(display path, UTF-8 text) of ``name``; DataError names the file and line on bad bytes."""
        if name in self._data:
            data, where = self._data[name], f"{self.location}:{name}"
        elif name in self._paths:
            data, where = self._paths[name].read_bytes(), str(self._paths[name])
        else:
            raise DataError(
                f"{self.location} has no file {name}; data.source must be fairseq's de-en.tgz "
                f"(or a folder) with train.tags.{self.pair}.* and IWSLT14.TED*.xml files"
            )
        try:
            return where, data.decode("utf-8")
        except UnicodeDecodeError as err:
            lineno = data.count(b"\n", 0, err.start) + 1
            raise DataError(f"{where}:{lineno}: invalid UTF-8; re-download or re-encode the file") from None


def _find_pair(files: _Files, src_lang: str, tgt_lang: str) -> str:
    names = set(files.names())
    for pair in (f"{src_lang}-{tgt_lang}", f"{tgt_lang}-{src_lang}"):
        if f"train.tags.{pair}.{src_lang}" in names:
            files.pair = pair
            return pair
    raise DataError(
        f"{files.location}: no train.tags.{src_lang}-{tgt_lang}.{src_lang} (or {tgt_lang}-{src_lang}) file; "
        "data.source must be fairseq's IWSLT'14 de-en.tgz or its unpacked folder"
    )


# --------------------------------------------------------------------- recipe
def read_iwslt14(
    location: Path,
    src_lang: str = "de",
    tgt_lang: str = "en",
    *,
    lowercase: bool = True,
    escape: bool = True,
    max_len: int = 175,
    ratio: float = 1.5,
    valid_every: int = 23,
) -> IwsltText:
    """Run recipe steps 2-5 on a local tarball or folder; BPE is left to the caller."""
    langs = (src_lang, tgt_lang)
    files = _Files(location, (f"{src_lang}-{tgt_lang}", f"{tgt_lang}-{src_lang}"))
    pair = _find_pair(files, src_lang, tgt_lang)
    result = IwsltText()

    # ---- training text: filter, tokenize, clean, lowercase, split off valid
    raw_train: dict[str, list[str]] = {}
    tok_train: dict[str, list[str]] = {}
    where: dict[str, str] = {}
    for lang in langs:
        where[lang], text = files.read(f"train.tags.{pair}.{lang}")
        raw_train[lang] = filter_train_tags(split_lines(text))
        tok = MosesPipeline(lang, escape=escape, lowercase=False)
        tok_train[lang] = tok.tokenize_lines(raw_train[lang])
    n_src, n_tgt = len(raw_train[src_lang]), len(raw_train[tgt_lang])
    if n_src != n_tgt:
        raise DataError(
            f"{where[src_lang]} has {n_src} text lines but {where[tgt_lang]} has {n_tgt} after removing metadata "
            "lines; the archive is corrupt or not the IWSLT'14 release - download de-en.tgz again"
        )
    keep, clean_src, clean_tgt = clean_pairs(
        tok_train[src_lang], tok_train[tgt_lang], min_len=1, max_len=max_len, ratio=ratio
    )
    cleaned = {src_lang: clean_src, tgt_lang: clean_tgt}
    if lowercase:
        cleaned = {lang: [lowercase_line(line) for line in lines] for lang, lines in cleaned.items()}
    is_valid = [(i + 1) % valid_every == 0 for i in range(len(keep))]
    for split, want in (("train", False), ("valid", True)):
        result.tok[split] = {lang: [l for l, v in zip(cleaned[lang], is_valid) if v == want] for lang in langs}
        result.raw[split] = {
            lang: [raw_train[lang][k] for k, v in zip(keep, is_valid) if v == want] for lang in langs
        }
    result.stats = {"train_before_clean": n_src, "train_after_clean": len(keep)}

    # ---- test text: <seg> lines of the dev/test XML files, in fairseq's order
    raw_test, result.test_files = test_segments(files, pair, src_lang, tgt_lang)
    result.raw["test"] = raw_test
    result.tok["test"] = {
        lang: MosesPipeline(lang, escape=escape, lowercase=lowercase).tokenize_lines(
            [line.replace("\u2019", "'") for line in raw_test[lang]])
        for lang in langs
    }
    log.info(
        "iwslt14: %d training lines, %d after cleaning; train %d / valid %d / test %d pairs",
        n_src, len(keep), len(result.tok["train"][src_lang]), len(result.tok["valid"][src_lang]),
        len(result.tok["test"][src_lang]),
    )
    return result


def test_segments(files: "_Files | Path", pair: str, src_lang: str, tgt_lang: str) -> tuple[dict[str, list[str]], list[str]]:
    """The untouched ``<seg>`` lines of every IWSLT14.TED*.<pair>.<lang>.xml in
    ``files`` (an archive, a folder, or the ``orig/`` folder of a prepared
    copy), concatenated in fairseq's order; and the file stems read."""
    langs = (src_lang, tgt_lang)
    if isinstance(files, Path):
        files = _Files(files, (pair, "-".join(reversed(pair.split("-")))))
        names = set(files.names())
        if not any(fnmatch.filter(names, f"IWSLT14.TED*.{pair}.{src_lang}.xml")):
            pair = "-".join(reversed(pair.split("-")))
    per_lang = {lang: sorted(fnmatch.filter(files.names(), f"IWSLT14.TED*.{pair}.{lang}.xml"), key=xml_order_key)
                for lang in langs}
    stems = {lang: [n[: -len(f".{lang}.xml")] for n in per_lang[lang]] for lang in langs}
    if not per_lang[src_lang]:
        raise DataError(f"{files.location}: no IWSLT14.TED*.{pair}.{src_lang}.xml test files; use the original de-en.tgz")
    if stems[src_lang] != stems[tgt_lang]:
        raise DataError(
            f"{files.location}: test XML files differ between languages: {per_lang[src_lang]} vs {per_lang[tgt_lang]}; "
            "every IWSLT14.TED*.xml file needs its counterpart in the other language"
        )
    raw: dict[str, list[str]] = {lang: [] for lang in langs}
    for stem in stems[src_lang]:
        segs, paths = {}, {}
        for lang in langs:
            paths[lang], text = files.read(f"{stem}.{lang}.xml")
            segs[lang] = extract_segments(text, fairseq_apostrophe=False)
        if len(segs[src_lang]) != len(segs[tgt_lang]):
            raise DataError(
                f"{paths[src_lang]} has {len(segs[src_lang])} <seg> lines but {paths[tgt_lang]} has "
                f"{len(segs[tgt_lang])}; the test files must be segment-aligned"
            )
        for lang in langs:
            raw[lang].extend(segs[lang])
    return raw, stems[src_lang]


def fetch_iwslt14(source: str | None, cache_dir: Path) -> Path:
    """Local tarball or folder for ``source`` (None = fairseq's URL), downloading if needed."""
    source = source or IWSLT14_URL
    if is_url(source):
        return download(source, cache_dir)
    return Path(source).expanduser().resolve()
