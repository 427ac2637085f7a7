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
