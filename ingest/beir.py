"""A streaming reader for BEIR-layout collections.

Layout: ``corpus.jsonl[.gz]`` ({"_id", "title", "text"}), ``queries.jsonl[.gz]`` ({"_id", "text"}) and
``qrels/<split>.tsv`` (``query-id  corpus-id  score`` with a header). Every malformed line raises
:class:`core.errors.DataFormatError` naming the file, the line and the field, so nothing is skipped silently.
"""

from __future__ import annotations

import csv
import gzip
import json
import zlib
from collections.abc import Generator, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import DataFormatError, InvalidInput, NotFound
from store._checks import first_non_json, non_json_problem


@dataclass(frozen=True, slots=True)
class Document:
    id: str
    title: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def full_text(self) -> str:
        """Title and body joined as BEIR's dense retrievers do; either part may be empty."""
        if self.title and self.text:
            return f"{self.title} {self.text}"
        return self.title or self.text


Qrels = dict[str, dict[str, int]]


def _find(folder: Path, stem: str) -> Path:
    for name in (f"{stem}.jsonl", f"{stem}.jsonl.gz"):
        if (folder / name).is_file():
            return folder / name
    raise NotFound(f"{folder}: no {stem}.jsonl or {stem}.jsonl.gz (is this a BEIR collection folder?)")


def _iter_lines(path: Path) -> Generator[tuple[int, str]]:
    """The file's lines with their numbers (from 1), each decoded as UTF-8 on its own, so that a bad byte is
    reported with its line; a byte-order mark opening the file is not part of its first line (editors on Windows
    write one). A file that cannot be read (a truncated or damaged gzip) is a :class:`DataFormatError` too."""
    with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as fh:
        try:
            for lineno, raw in enumerate(fh, start=1):
                if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataFormatError(
                        str(path), lineno, None, f"not valid UTF-8 (byte {e.start + 1} of the line: {e.reason})"
                    ) from None
                yield lineno, line
        except (OSError, EOFError, zlib.error) as e:
            raise DataFormatError(str(path), None, None, f"cannot be read: {e}") from None


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Each JSON object of a .jsonl (or .jsonl.gz) file with its line number; blank lines are skipped, anything
    else (bad JSON, a line that is not an object, bytes that are not UTF-8) is a :class:`DataFormatError`."""
    with closing(_iter_lines(path)) as lines:
        for lineno, line in lines:
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataFormatError(str(path), lineno, None, f"not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise DataFormatError(str(path), lineno, None, "a line must hold a JSON object")
            if (bad := first_non_json(obj)) is not None:  # e.g. a lone surrogate, NaN in metadata
                raise DataFormatError(str(path), lineno, bad[0] or None, non_json_problem(bad[1]))
            yield lineno, obj


def _str_field(path: Path, lineno: int, obj: dict[str, Any], name: str, required: bool) -> str:
    if name not in obj or obj[name] is None:
        if required:
            raise DataFormatError(str(path), lineno, name, "missing")
        return ""
    value = obj[name]
    if isinstance(value, int | float) and not isinstance(value, bool) and name == "_id":
        return str(value)
    if not isinstance(value, str):
        raise DataFormatError(str(path), lineno, name, f"must be a string, got {type(value).__name__}")
    if required and name == "_id" and not value.strip():
        raise DataFormatError(str(path), lineno, name, "must not be empty")
    return value


def iter_corpus(folder: str | Path) -> Iterator[Document]:
    """Stream the corpus; duplicate ids are an error (a search index keys on them)."""
    path = _find(Path(folder), "corpus")
    seen: set[str] = set()
    for lineno, obj in iter_jsonl(path):
        doc_id = _str_field(path, lineno, obj, "_id", True)
        if doc_id in seen:
            raise DataFormatError(str(path), lineno, "_id", f"duplicate document id {doc_id!r}")
        seen.add(doc_id)
        title = _str_field(path, lineno, obj, "title", False)
        text = _str_field(path, lineno, obj, "text", False)
        if "text" not in obj and "title" not in obj:
            raise DataFormatError(str(path), lineno, "text", "missing (a document needs a text or a title)")
        meta = {} if obj.get("metadata") is None else obj["metadata"]  # null is none; false or [] is an error
        if not isinstance(meta, dict):
            raise DataFormatError(str(path), lineno, "metadata", "must be an object")
        yield Document(doc_id, title.strip(), text.strip(), meta)


def load_queries(folder: str | Path) -> dict[str, str]:
    path = _find(Path(folder), "queries")
    out: dict[str, str] = {}
    for lineno, obj in iter_jsonl(path):
        qid = _str_field(path, lineno, obj, "_id", True)
        if qid in out:
            raise DataFormatError(str(path), lineno, "_id", f"duplicate query id {qid!r}")
        out[qid] = _str_field(path, lineno, obj, "text", True)
    return out


def available_splits(folder: str | Path) -> list[str]:
    qdir = Path(folder) / "qrels"
    return sorted(p.stem for p in qdir.glob("*.tsv")) if qdir.is_dir() else []


def load_qrels(folder: str | Path, split: str) -> Qrels:
    """A split's judgements: three tab-separated columns (``query-id  corpus-id  score``, the score an integer
    grade), one row per pair. A row of another width (a TREC qrels file has four), a fractional grade and a pair
    judged twice are errors: each would be misread without a word."""
    if not split or split in (".", "..") or any(c in split for c in "/\\"):
        raise InvalidInput(f"split must be a qrels file's name under qrels/, got {split!r}", field="split")
    path = Path(folder) / "qrels" / f"{split}.tsv"
    if not path.is_file():
        have = ", ".join(available_splits(folder)) or "none"
        raise NotFound(f"{path}: no qrels for split {split!r} (splits here: {have})")
    qrels: Qrels = {}
    header_checked = False
    with closing(_iter_lines(path)) as lines:
        # QUOTE_NONE: a '"' is data, so a field that starts with one cannot run on into the next line; every row is
        # one line, and reader.line_num is its line number in the file.
        reader = csv.reader((line for _, line in lines), delimiter="\t", quoting=csv.QUOTE_NONE)
        try:
            for row in reader:
                lineno = reader.line_num
                if not row or not "".join(row).strip():
                    continue
                if not header_checked:  # the header, if any, is the first row that is not blank
                    header_checked = True
                    if row[0].strip().lower() in ("query-id", "query_id", "qid"):
                        continue
                if len(row) != 3:
                    trec = " (a TREC qrels row: query-id, iteration, corpus-id, score?)" if len(row) == 4 else ""
                    raise DataFormatError(
                        str(path), lineno, None, f"expected 3 tab-separated columns, got {len(row)}{trec}"
                    )
                qid, did, score = row[0].strip(), row[1].strip(), row[2].strip()
                if not qid:
                    raise DataFormatError(str(path), lineno, "query-id", "empty")
                if not did:
                    raise DataFormatError(str(path), lineno, "corpus-id", "empty")
                try:
                    value = float(score)
                    grade = int(value)
                except (ValueError, OverflowError):  # 'high'; 'nan' and 'inf' have no integer grade
                    raise DataFormatError(str(path), lineno, "score", f"not a finite number: {score!r}") from None
                if grade != value:
                    raise DataFormatError(str(path), lineno, "score", f"a grade is an integer, got {score!r}")
                judged = qrels.setdefault(qid, {})
                if did in judged:
                    raise DataFormatError(str(path), lineno, "corpus-id", f"{did!r} is judged twice for {qid!r}")
                judged[did] = grade
        except csv.Error as e:
            raise DataFormatError(str(path), reader.line_num, None, f"not a tab-separated line ({e})") from None
    return qrels


@dataclass
class BeirDataset:
    """One collection with its corpus, all queries and the qrels of the splits asked for."""

    name: str
    path: Path
    corpus: list[Document]
    queries: dict[str, str]
    qrels: dict[str, Qrels]

    def split_queries(self, split: str) -> dict[str, str]:
        """The judged queries of a split (unjudged queries are not scored, as trec_eval does); each must be in the
        queries file, with a text."""
        qrels = self.qrels[split]
        missing = [q for q in qrels if q not in self.queries]
        if missing:
            raise DataFormatError(
                str(self.path / "qrels" / f"{split}.tsv"),
                None,
                "query-id",
                f"{len(missing)} judged queries are absent from queries.jsonl (first: {missing[0]!r})",
            )
        empty = [q for q in qrels if not self.queries[q].strip()]
        if empty:  # scored, or trained on, as an empty string: nothing to search with
            raise DataFormatError(
                str(_find(self.path, "queries")),
                None,
                "text",
                f"{len(empty)} judged queries of split {split!r} have no text (first: {empty[0]!r})",
            )
        return {q: self.queries[q] for q in qrels}


def load_dataset(
    folder: str | Path, splits: tuple[str, ...] = ("train", "test"), optional: tuple[str, ...] = ()
) -> BeirDataset:
    """The collection with the qrels of ``splits``. A split the folder has no qrels for is a :class:`NotFound` naming
    it and the splits there (checked before the corpus is read), unless it is in ``optional``: such a split is left
    out of ``qrels`` (a caller going over many collections, some without a train split)."""
    path = Path(folder)
    if not path.is_dir():
        raise NotFound(f"{path}: no such collection folder")
    for stem in ("corpus", "queries"):  # not a collection at all: say that before naming a missing split
        _find(path, stem)
    have = available_splits(path)
    qrels = {s: load_qrels(path, s) for s in splits if s in have or s not in optional}
    corpus = list(iter_corpus(path))
    if not corpus:
        raise DataFormatError(str(_find(path, "corpus")), None, None, "holds no document")
    queries = load_queries(path)
    name = path.name if path.name not in ("", "..") else path.resolve().name  # `--data .` is named after the folder
    return BeirDataset(name, path, corpus, queries, qrels)


def discover(root: str | Path) -> list[Path]:
    """Every BEIR collection folder directly under ``root`` (has a corpus file), sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise NotFound(f"{root}: no such folder of BEIR collections")
    found = [p for p in sorted(root.iterdir()) if p.is_dir() and any(p.glob("corpus.jsonl*"))]
    if not found:
        raise NotFound(f"{root}: holds no BEIR collection (a folder with corpus.jsonl[.gz])")
    return found
