from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from core.errors import DataFormatError, InvalidInput, NotFound
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


@pytest.mark.parametrize("meta", [False, [], 0, "lang=en"])
def test_metadata_that_is_not_an_object_names_field_and_line(tmp_path: Path, meta: object) -> None:
    ok = json.dumps({"_id": "d1", "text": "ok", "metadata": None})  # null is no metadata
    d = _collection(tmp_path, [ok, json.dumps({"_id": "d2", "text": "ok", "metadata": meta})])
    with pytest.raises(DataFormatError, match="must be an object") as err:
        list(iter_corpus(d))
    assert err.value.line == 2 and err.value.field == "metadata"


@pytest.mark.parametrize(
    ("line", "field", "problem"),
    [
        ('{"_id": "d2", "text": "a \\ud800 b"}', "text", "lone UTF-16 surrogate"),  # an unpaired escape
        ('{"_id": "d\\udc00", "text": "ok"}', "_id", "lone UTF-16 surrogate"),
        ('{"_id": "d2", "text": "ok", "metadata": {"tags": ["x", "\\ud83d"]}}', "metadata.tags[1]", "surrogate"),
        ('{"_id": "d2", "text": "ok", "metadata": {"score": NaN}}', "metadata.score", "NaN"),
        ('{"_id": "d2", "text": "ok", "metadata": {"n": 18446744073709551616}}', "metadata.n", "64 bits"),
    ],
)
def test_text_and_metadata_the_store_cannot_hold_name_field_and_line(
    tmp_path: Path, line: str, field: str, problem: str
) -> None:
    d = _collection(tmp_path, [json.dumps({"_id": "d1", "text": "ok"}), line])
    with pytest.raises(DataFormatError, match=problem) as err:
        list(iter_corpus(d))
    assert err.value.line == 2 and err.value.field == field


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


def _qrels(tmp_path: Path, text: str | bytes) -> Path:
    d = _collection(tmp_path, [json.dumps({"_id": "d1", "text": "a"})])
    path = d / "qrels" / "test.tsv"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return d


def test_a_quote_in_qrels_is_data_and_does_not_swallow_the_next_line(tmp_path: Path) -> None:
    d = _qrels(tmp_path, 'query-id\tcorpus-id\tscore\n"q1\td1\t1\nq2\td2\t2\n')
    assert load_qrels(d, "test") == {'"q1': {"d1": 1}, "q2": {"d2": 2}}


def test_qrels_errors_name_the_real_line(tmp_path: Path) -> None:
    # a quote on line 2 (once read as the start of a field running on to line 3) and a bad score on line 4
    d = _qrels(tmp_path, 'query-id\tcorpus-id\tscore\n"q1\td1\t1\nq2\td2\t1\nq3\td3\thigh\n')
    with pytest.raises(DataFormatError) as err:
        load_qrels(d, "test")
    assert err.value.line == 4 and "test.tsv:4" in str(err.value) and err.value.field == "score"


@pytest.mark.parametrize("score", ["inf", "-inf", "nan", "1e999"])
def test_a_score_with_no_integer_grade_is_a_clear_error(tmp_path: Path, score: str) -> None:
    d = _qrels(tmp_path, f"query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t{score}\n")
    with pytest.raises(DataFormatError) as err:
        load_qrels(d, "test")
    assert err.value.line == 3 and err.value.field == "score" and "test.tsv:3" in str(err.value)
    assert repr(score) in str(err.value)


def test_the_qrels_header_is_found_after_blank_lines(tmp_path: Path) -> None:
    d = _qrels(tmp_path, "\n\nquery-id\tcorpus-id\tscore\nq1\td1\t1\n")
    assert load_qrels(d, "test") == {"q1": {"d1": 1}}
    d2 = _qrels(tmp_path / "x", "\nq1\td1\t1\n")  # no header: the first row is data
    assert load_qrels(d2, "test") == {"q1": {"d1": 1}}


def test_invalid_utf8_names_file_and_line(tmp_path: Path) -> None:
    d = _qrels(tmp_path, b"query-id\tcorpus-id\tscore\nq1\td1\t1\nq\xff2\td1\t1\n")
    with pytest.raises(DataFormatError) as err:
        load_qrels(d, "test")
    assert "test.tsv:3" in str(err.value) and "UTF-8" in str(err.value)

    c = _collection(tmp_path / "c2", [json.dumps({"_id": "d1", "text": "ok"})])
    (c / "corpus.jsonl").write_bytes(b'{"_id": "d1", "text": "ok"}\n{"_id": "d2", "text": "caf\xe9"}\n')
    with pytest.raises(DataFormatError) as err:
        list(iter_corpus(c))
    assert "corpus.jsonl:2" in str(err.value) and "UTF-8" in str(err.value)

    with gzip.open(c / "queries.jsonl.gz", "wb") as fh:
        fh.write(b'{"_id": "q1", "text": "\xc3("}\n')
    (c / "queries.jsonl").unlink()
    with pytest.raises(DataFormatError) as err:
        load_queries(c)
    assert "queries.jsonl.gz:1" in str(err.value) and "UTF-8" in str(err.value)


def test_a_requested_split_that_is_missing_is_an_error_unless_optional(tmp_path: Path, beir_root: Path) -> None:
    import shutil

    d = tmp_path / "bio"
    shutil.copytree(beir_root / "bio", d)
    (d / "qrels" / "train.tsv").unlink()
    with pytest.raises(NotFound) as err:
        load_dataset(d, ("train",))
    assert "split 'train'" in str(err.value) and "splits here: test" in str(err.value)
    with pytest.raises(NotFound, match="split 'train'"):
        load_dataset(d)  # train and test, both needed
    assert set(load_dataset(d, ("train", "test"), optional=("train",)).qrels) == {"test"}
    with pytest.raises(NotFound, match=r"no corpus\.jsonl"):  # not a collection: said before any split
        load_dataset(tmp_path, ("train",))


def test_a_damaged_gzip_body_is_a_clear_error(tmp_path: Path) -> None:
    """Bytes flipped inside the compressed data: zlib's error was a traceback (a truncated file was caught)."""
    d = tmp_path / "g"
    d.mkdir()
    data = bytearray(gzip.compress(b"".join(b'{"_id": "q%d", "text": "words %d"}\n' % (i, i * i) for i in range(400))))
    for i in range(200, 260):
        data[i] ^= 0xFF
    (d / "queries.jsonl.gz").write_bytes(bytes(data))
    with pytest.raises(DataFormatError, match="cannot be read") as err:
        load_queries(d)
    assert "queries.jsonl.gz" in str(err.value)


def test_a_byte_order_mark_opening_a_file_is_not_data(tmp_path: Path) -> None:
    """A qrels file saved with a BOM had its header read as a judgement ("field 'score': not a finite number")."""
    d = _qrels(tmp_path, "\ufeffquery-id\tcorpus-id\tscore\nq1\td1\t1\n".encode())
    assert load_qrels(d, "test") == {"q1": {"d1": 1}}
    (d / "corpus.jsonl").write_bytes("\ufeff".encode() + json.dumps({"_id": "d1", "text": "a"}).encode() + b"\n")
    assert [doc.id for doc in iter_corpus(d)] == ["d1"]


@pytest.mark.parametrize(
    ("rows", "field", "message"),
    [
        ("q1\t0\td1\t1\n", None, "got 4 (a TREC qrels row"),  # was read as corpus-id '0', grade from 'd1'... silently
        ("q1\td1\t1\textra\n", None, "expected 3 tab-separated columns, got 4"),
        ("q1\td1\t0.7\n", "score", "a grade is an integer, got '0.7'"),  # was truncated to 0
        ("q1\td1\t1\nq1\td1\t0\n", "corpus-id", "'d1' is judged twice for 'q1'"),  # the last one won
    ],
)
def test_qrels_rows_that_would_be_misread_are_errors(
    tmp_path: Path, rows: str, field: str | None, message: str
) -> None:
    d = _qrels(tmp_path, "query-id\tcorpus-id\tscore\n" + rows)
    with pytest.raises(DataFormatError, match=message.replace("(", r"\(")) as err:
        load_qrels(d, "test")
    assert err.value.field == field and "test.tsv:" in str(err.value)


@pytest.mark.parametrize("split", ["../../outside", "a/b", "..", "", "a\\b"])
def test_a_split_is_a_name_not_a_path(tmp_path: Path, split: str) -> None:
    d = _collection(tmp_path, [json.dumps({"_id": "d1", "text": "a"})])
    (tmp_path / "outside.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")  # read before the check
    with pytest.raises(InvalidInput, match="split must be a qrels file's name") as err:
        load_qrels(d, split)
    assert err.value.field == "split"


def test_an_empty_corpus_and_a_collection_named_dot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`rr eval` on an empty corpus printed nDCG@10 = 0.0000 and succeeded; `--data .` made a collection named ''
    (an expert trained on it failed at its very end, 'domain must not be empty')."""
    d = _collection(tmp_path, [json.dumps({"_id": "d1", "text": "a"})])
    monkeypatch.chdir(d)
    assert load_dataset(".", ("test",)).name == "c"
    monkeypatch.chdir(d / "qrels")
    assert load_dataset("..", ("test",)).name == "c"
    (d / "corpus.jsonl").write_text("\n")
    with pytest.raises(DataFormatError, match="holds no document") as err:
        load_dataset(d, ("test",))
    assert "corpus.jsonl" in str(err.value)


def test_a_judged_query_without_text_is_an_error(tmp_path: Path) -> None:
    """It was scored (and trained on) as an empty string without a word."""
    d = _collection(tmp_path, [json.dumps({"_id": "d1", "text": "a"})])
    lines = [json.dumps({"_id": "q1", "text": "  "}), json.dumps({"_id": "q2", "text": ""})]
    (d / "queries.jsonl").write_text("\n".join(lines) + "\n")
    ds = load_dataset(d, ("test",))  # q2 is judged by no split: not an error
    with pytest.raises(DataFormatError, match="1 judged queries of split 'test' have no text") as err:
        ds.split_queries("test")
    assert "queries.jsonl" in str(err.value) and err.value.field == "text"
