from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from core.errors import InvalidInput, NotFound, RRError
from ingest.beir import load_dataset
from ingest.download import download_beir


def _zip(tmp_path: Path, members: dict[str, str]) -> Path:
    z = tmp_path / "a.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return z


def test_download_from_file_url(tmp_path: Path) -> None:
    z = _zip(
        tmp_path,
        {
            "toy/corpus.jsonl": json.dumps({"_id": "d1", "title": "t", "text": "x"}) + "\n",
            "toy/queries.jsonl": json.dumps({"_id": "q1", "text": "q"}) + "\n",
            "toy/qrels/test.tsv": "query-id\tcorpus-id\tscore\nq1\td1\t1\n",
        },
    )
    out = download_beir("toy", tmp_path / "data", url=z.as_uri(), show_progress=False)
    assert load_dataset(out, ("test",)).qrels["test"] == {"q1": {"d1": 1}}
    with pytest.raises(InvalidInput, match="exists"):
        download_beir("toy", tmp_path / "data", url=z.as_uri(), show_progress=False)


def test_download_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="unknown BEIR dataset"):
        download_beir("nope", tmp_path)
    with pytest.raises(NotFound, match="could not download"):
        download_beir("toy", tmp_path, url=(tmp_path / "missing.zip").as_uri(), show_progress=False)
    bad = tmp_path / "bad.zip"
    bad.write_text("not a zip")
    with pytest.raises(RRError, match="not a zip"):
        download_beir("toy", tmp_path, url=bad.as_uri(), show_progress=False)
    empty = _zip(tmp_path, {"toy/readme.txt": "x"})
    with pytest.raises(RRError, match="no corpus"):
        download_beir("toy", tmp_path / "o", url=empty.as_uri(), show_progress=False)
    assert not (tmp_path / "o" / "toy").exists()


def test_download_refuses_bad_names_outputs_and_damaged_archives(tmp_path: Path) -> None:
    good = _zip(tmp_path, {"toy/corpus.jsonl": json.dumps({"_id": "d1", "text": "x" * 2000}) + "\n"})
    for name in ("../escaped", "", "a/b", ".."):
        with pytest.raises(InvalidInput, match="must be a folder name"):
            download_beir(name, tmp_path / "dl" / "sub", url=good.as_uri(), show_progress=False)
    assert not (tmp_path / "dl").exists()
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(InvalidInput, match="is not a folder"):
        download_beir("toy", a_file, url=good.as_uri(), show_progress=False)
    deflated = tmp_path / "deflated.zip"
    with zipfile.ZipFile(deflated, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("toy/corpus.jsonl", json.dumps({"_id": "d1", "text": "some words " * 500}) + "\n")
        info = zf.infolist()[0]
    data = bytearray(deflated.read_bytes())  # flip bytes inside the compressed member: a zlib error on extraction
    start = info.header_offset + 30 + len(info.filename.encode())
    for i in range(start + 2, start + 12):
        data[i] ^= 0xFF
    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(bytes(data))
    with pytest.raises(RRError, match="damaged") as err:  # was a zlib.error traceback
        download_beir("toy", tmp_path / "o", url=damaged.as_uri(), show_progress=False)
    assert damaged.as_uri() in str(err.value)
    assert not (tmp_path / "o" / "toy").exists()


def test_a_download_with_several_collections_keeps_them_all(tmp_path: Path) -> None:
    members = {}
    for forum in ("android", "english"):
        members[f"cqa/{forum}/corpus.jsonl"] = json.dumps({"_id": f"{forum}1", "text": "x"}) + "\n"
        members[f"cqa/{forum}/queries.jsonl"] = json.dumps({"_id": "q1", "text": "q"}) + "\n"
    z = _zip(tmp_path, members)
    out = download_beir("cqa", tmp_path / "data", url=z.as_uri(), show_progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["android", "english"]  # one of them was kept, silently


def test_a_member_escaping_into_a_sibling_folder_is_refused(tmp_path: Path) -> None:
    """The check compared path strings: a member `../unpacked2/x` resolves beside the target folder, and its path
    starts with the target's."""
    evil = _zip(tmp_path, {"toy/corpus.jsonl": json.dumps({"_id": "d1", "text": "x"}) + "\n", "../unpacked2/x": "x"})
    with pytest.raises(RRError, match="escapes the target folder"):
        download_beir("toy", tmp_path / "o", url=evil.as_uri(), show_progress=False)
    assert not (tmp_path / "o" / "toy").exists()
