"""A streaming reader for BEIR-layout collections.

Layout: ``corpus.jsonl[.gz]`` ({"_id", "title", "text"}), ``queries.jsonl[.gz]`` ({"_id", "text"}) and
``qrels/<split>.tsv`` (``query-id  corpus-id  score`` with a header). Every malformed line raises
:class:`core.errors.DataFormatError` naming the file, the line and the field, so nothing is skipped silently.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from core.errors import DataFormatError, NotFound


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


def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return path.open("r", encoding="utf-8")


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with _open_text(path) as fh:
        try:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataFormatError(str(path), lineno, None, f"not valid JSON ({e.msg})") from None
                if not isinstance(obj, dict):
                    raise DataFormatError(str(path), lineno, None, "a line must hold a JSON object")
                yield lineno, obj
        except (OSError, EOFError, UnicodeDecodeError) as e:
            raise DataFormatError(str(path), None, None, f"cannot be read: {e}") from None


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
    for lineno, obj in _iter_jsonl(path):
        doc_id = _str_field(path, lineno, obj, "_id", True)
        if doc_id in seen:
            raise DataFormatError(str(path), lineno, "_id", f"duplicate document id {doc_id!r}")
        seen.add(doc_id)
        title = _str_field(path, lineno, obj, "title", False)
        text = _str_field(path, lineno, obj, "text", False)
        if "text" not in obj and "title" not in obj:
            raise DataFormatError(str(path), lineno, "text", "missing (a document needs a text or a title)")
        meta = obj.get("metadata") or {}
        if not isinstance(meta, dict):
            raise DataFormatError(str(path), lineno, "metadata", "must be an object")
        yield Document(doc_id, title.strip(), text.strip(), meta)


def load_queries(folder: str | Path) -> dict[str, str]:
    path = _find(Path(folder), "queries")
    out: dict[str, str] = {}
    for lineno, obj in _iter_jsonl(path):
        qid = _str_field(path, lineno, obj, "_id", True)
        if qid in out:
            raise DataFormatError(str(path), lineno, "_id", f"duplicate query id {qid!r}")
        out[qid] = _str_field(path, lineno, obj, "text", True)
    return out


def available_splits(folder: str | Path) -> list[str]:
    qdir = Path(folder) / "qrels"
    return sorted(p.stem for p in qdir.glob("*.tsv")) if qdir.is_dir() else []


def load_qrels(folder: str | Path, split: str) -> Qrels:
    path = Path(folder) / "qrels" / f"{split}.tsv"
    if not path.is_file():
        have = ", ".join(available_splits(folder)) or "none"
        raise NotFound(f"{path}: no qrels for split {split!r} (splits here: {have})")
    qrels: Qrels = {}
    with path.open("r", encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t")
        for lineno, row in enumerate(reader, start=1):
            if not row or not "".join(row).strip():
                continue
            if lineno == 1 and row[0].strip().lower() in ("query-id", "query_id", "qid"):
                continue
            if len(row) < 3:
                raise DataFormatError(str(path), lineno, None, f"expected 3 tab-separated columns, got {len(row)}")
            qid, did, score = row[0].strip(), row[1].strip(), row[2].strip()
            if not qid:
                raise DataFormatError(str(path), lineno, "query-id", "empty")
            if not did:
                raise DataFormatError(str(path), lineno, "corpus-id", "empty")
            try:
                grade = int(float(score))
            except ValueError:
                raise DataFormatError(str(path), lineno, "score", f"not a number: {score!r}") from None
            qrels.setdefault(qid, {})[did] = grade
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
        """The judged queries of a split (unjudged queries are not scored, as trec_eval does)."""
        qrels = self.qrels[split]
        missing = [q for q in qrels if q not in self.queries]
        if missing:
            raise DataFormatError(
                str(self.path / "qrels" / f"{split}.tsv"),
                None,
                "query-id",
                f"{len(missing)} judged queries are absent from queries.jsonl (first: {missing[0]!r})",
            )
        return {q: self.queries[q] for q in qrels}


def load_dataset(folder: str | Path, splits: tuple[str, ...] = ("train", "test")) -> BeirDataset:
    path = Path(folder)
    if not path.is_dir():
        raise NotFound(f"{path}: no such collection folder")
    corpus = list(iter_corpus(path))
    queries = load_queries(path)
    qrels = {s: load_qrels(path, s) for s in splits if s in available_splits(path) or s == "test"}
    return BeirDataset(path.name, path, corpus, queries, qrels)


def discover(root: str | Path) -> list[Path]:
    """Every BEIR collection folder directly under ``root`` (has a corpus file), sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise NotFound(f"{root}: no such folder of BEIR collections")
    found = [p for p in sorted(root.iterdir()) if p.is_dir() and any(p.glob("corpus.jsonl*"))]
    if not found:
        raise NotFound(f"{root}: holds no BEIR collection (a folder with corpus.jsonl[.gz])")
    return found
