"""fairseq's prepare-iwslt14.sh recipe on a small synthetic de-en.tgz."""

from __future__ import annotations

import functools
import http.server
import io
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pet.config.schema import DataConfig
from pet.data.iwslt import read_iwslt14
from pet.data.prepare import prepare_data
from pet.data.prepared import load_prepared
from pet.errors import DataError

TAGS = {
    "de": [
        "<url>http://www.ted.com/talks/x.html</url>", "<keywords>talks, music</keywords>",
        "<speaker>Jane Doe</speaker>", "<talkid>1</talkid>", "<title>Jane Doe: Ein Titel</title>",
        "<description>Eine Beschreibung des Vortrags.</description>",
        "Hallo Welt.", "Das ist gut.", "Wie geht's?", "",
        "Ein sehr langer Satz mit vielen Wörtern hier drin.", "Danke.",
        '<reviewer href="x">R</reviewer>', '<translator href="y">T</translator>',
        " ".join(["Wort"] * 180), 'Es ist "schön".', "Ende.",
    ],
    "en": [
        "<url>http://www.ted.com/talks/x.html</url>", "<keywords>talks, music</keywords>",
        "<speaker>Jane Doe</speaker>", "<talkid>1</talkid>", "<title>Jane Doe: A title</title>",
        "<description>A description of the talk.</description>",
        "Hello world.", "That is good.", "How are you?", "",
        "Short.", "Thanks.",
        '<reviewer href="x">R</reviewer>', '<translator href="y">T</translator>',
        " ".join(["word"] * 180), 'It is "nice".', "The end.",
    ],
}


def _xml(setid: str, segs: list[str]) -> str:
    head = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<mteval>\n'
        f'<srcset setid="{setid}" srclang="german">\n<doc docid="1" genre="lectures">\n'
        "<url>http://x</url>\n<talkid>1</talkid>\n<title>Titel</title>\n"
    )
    body = "".join(f'<seg id="{i}"> {s} </seg>\n' for i, s in enumerate(segs, 1))
    return head + body + "</doc>\n</srcset>\n</mteval>\n"


XML = {
    "IWSLT14.TED.tst2010.de-en.de.xml": _xml("tst2010", ["Guten Morgen.", "Es ist ’gut’ so."]),
    "IWSLT14.TED.tst2010.de-en.en.xml": _xml("tst2010", ["Good morning.", "It’s fine."]),
    "IWSLT14.TEDX.dev2012.de-en.de.xml": _xml("dev2012", ["Ja, guten Tag."]),
    "IWSLT14.TEDX.dev2012.de-en.en.xml": _xml("dev2012", ["Yes, good day."]),
}

EXPECTED_TOK = {
    # 11 text lines; the empty pair, the 1:5 ratio pair and the 180-token pair are
    # cleaned away; of the 8 left, lines 3 and 6 (NR % 3 == 0) are validation.
    "train": {
        "de": ["jane doe : ein titel", "eine beschreibung des vortrags .", "das ist gut .",
               "wie geht &apos; s ?", "es ist &quot; schön &quot; .", "ende ."],
        "en": ["jane doe : a title", "a description of the talk .", "that is good .",
               "how are you ?", "it is &quot; nice &quot; .", "the end ."],
    },
    "valid": {"de": ["hallo welt .", "danke ."], "en": ["hello world .", "thanks ."]},
    # fairseq's order: dev sets before tst sets, so TEDX.dev2012 comes first
    "test": {
        "de": ["ja , guten tag .", "guten morgen .", "es ist &apos; gut &apos; so ."],
        "en": ["yes , good day .", "good morning .", "it &apos;s fine ."],
    },
}


def _files() -> dict[str, str]:
    files = {f"de-en/train.tags.de-en.{lang}": "\n".join(lines) + "\n" for lang, lines in TAGS.items()}
    files.update({f"de-en/{name}": text for name, text in XML.items()})
    files["de-en/README"] = "IWSLT 2014\n"
    return files


@pytest.fixture(scope="module")
def tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("orig") / "de-en.tgz"
    with tarfile.open(path, "w:gz") as tar:
        for name, text in _files().items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_recipe_on_tarball_gives_fairseq_splits(tarball: Path) -> None:
    text = read_iwslt14(tarball, "de", "en", valid_every=3)
    assert text.tok == EXPECTED_TOK
    assert text.raw["valid"] == {"de": ["Hallo Welt.", "Danke."], "en": ["Hello world.", "Thanks."]}
    assert text.raw["test"]["en"][2] == "It’s fine."  # raw: untouched, the reference sacreBLEU scores against
    assert text.tok["test"]["en"][2] == "it &apos;s fine ."  # tokenized after fairseq's ’ -> '
    assert text.test_files == ["IWSLT14.TEDX.dev2012.de-en", "IWSLT14.TED.tst2010.de-en"]
    assert text.stats == {"train_before_clean": 11, "train_after_clean": 8}


def test_recipe_on_folder_and_reverse_direction(tarball: Path, tmp_path: Path) -> None:
    with tarfile.open(tarball) as tar:
        tar.extractall(tmp_path, filter="data")
    text = read_iwslt14(tmp_path, "en", "de", valid_every=3)  # folder holding de-en/
    assert text.tok == EXPECTED_TOK
    cased = read_iwslt14(tmp_path / "de-en", "de", "en", valid_every=3, lowercase=False)
    assert cased.tok["valid"]["de"] == ["Hallo Welt .", "Danke ."]


def test_recipe_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_iwslt14(tmp_path / "missing.tgz")
    (tmp_path / "train.tags.de-en.de").write_text("a\nb\n", encoding="utf-8")
    (tmp_path / "train.tags.de-en.en").write_text("a\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"has 2 text lines but .* has 1"):
        read_iwslt14(tmp_path)
    broken = tmp_path / "broken.tgz"
    broken.write_bytes(b"not a tarball")
    with pytest.raises(DataError, match="not a readable tar archive"):
        read_iwslt14(broken)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass


@pytest.fixture()
def http_server(tarball: Path) -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(tarball.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_prepare_iwslt14_from_url(http_server: str, tmp_path: Path) -> None:
    cfg = DataConfig(name="iwslt_mini", kind="iwslt14", source=f"{http_server}/de-en.tgz", bpe_merges=40, valid_every=3)
    out = prepare_data(cfg, tmp_path / "prep")
    assert (out / "orig" / "de-en.tgz").is_file()
    data = load_prepared(out)
    assert data.lines("test", "en", "tok") == EXPECTED_TOK["test"]["en"]
    assert data.lines("test", "en", "raw")[0] == "Yes, good day."
    assert [line.replace("@@ ", "") for line in data.lines("train", "de")] == EXPECTED_TOK["train"]["de"]
    assert len(data.datasets["valid"]) == 2 and data.meta["stats"]["train_after_clean"] == 8
    with pytest.raises(DataError, match="could not download"):
        prepare_data(
            DataConfig(name="x", kind="iwslt14", source=f"{http_server}/missing.tgz"), tmp_path / "other"
        )
