from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from core.errors import DataFormatError, NotFound
from ingest.beir import discover, iter_corpus, load_dataset, load_qrels, load_queries


def _collection(
    tmp_path: Path, corpus_lines: list[str], qrels: str = "query-id\tcorpus-id\tscore\nq1\td1\t1\n"
) -> Path:
    d = tmp_path / "c"
    (d / "qrels").mkdir(parents=True)
    (d / "corpus.jsonl").write_text("\n".join(corpus_lines) + "\n")
    (d / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "a query"}) + "\n")
    (d / "qrels" / "test.tsv").write_text(qrels)
    return d


def test_reads_gz_and_joins_title_and_text(beir_root: Path) -> None:
    ds = load_dataset(beir_root / "bio")
    assert len(ds.corpus) == 4
    assert ds.corpus[0].full_text == "protein gene the protein binds the gene in the cell"
    assert set(ds.qrels) == {"train", "test"}
    assert set(ds.split_queries("test")) == {"qb5", "qb6"}


def test_bad_json_names_file_and_line(tmp_path: Path) -> None:
    d = _collection(tmp_path, [json.dumps({"_id": "d1", "text": "ok"}), "{not json"])
    with pytest.raises(DataFormatError) as err:
        list(iter_corpus(d))
    assert "corpus.jsonl:2" in str(err.value) and "not valid JSON" in str(err.value)


def test_missing_id_names_field(tmp_path: Path) -> None:
    d = _collection(tmp_path, [json.dumps({"text": "no id"})])
    with pytest.raises(DataFormatError) as err:
        list(iter_corpus(d))
    assert err.value.line == 1 and err.value.field == "_id"


def test_wrong_type_and_duplicate_id(tmp_path: Path) -> None:
    d = _collection(tmp_path, [json.dumps({"_id": "d1", "text": 5})])
    with pytest.raises(DataFormatError, match="'text': must be a string"):
        list(iter_corpus(d))
    d2 = _collection(tmp_path / "x", [json.dumps({"_id": "d1", "text": "a"}), json.dumps({"_id": "d1", "text": "b"})])
    with pytest.raises(DataFormatError, match="duplicate document id"):
        list(iter_corpus(d2))


def test_bad_qrels_score(tmp_path: Path) -> None:
    d = _collection(tmp_path, [json.dumps({"_id": "d1", "text": "a"})], "query-id\tcorpus-id\tscore\nq1\td1\thigh\n")
    with pytest.raises(DataFormatError) as err:
        load_qrels(d, "test")
    assert "test.tsv:2" in str(err.value) and err.value.field == "score"


def test_missing_split_and_folder(tmp_path: Path, beir_root: Path) -> None:
    with pytest.raises(NotFound, match="splits here: test, train"):
        load_qrels(beir_root / "bio", "dev")
    with pytest.raises(NotFound):
        discover(tmp_path / "nope")


def test_truncated_gzip_is_a_clear_error(tmp_path: Path) -> None:
    d = tmp_path / "g"
    d.mkdir()
    data = gzip.compress(b'{"_id": "q1", "text": "x"}\n' * 200)
    (d / "queries.jsonl.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFormatError, match="cannot be read"):
        load_queries(d)
