"""An on-disk embedding cache keyed by encoder fingerprint and text.

Encoding is the expensive step on a CPU machine (minutes per corpus), while the same texts are encoded again by every
benchmark rerun, every expert re-registration and every re-ingest. One SQLite file per encoder fingerprint keeps the
vectors (float32) under the SHA-1 of the text; a different model, adapter, side or max length is another fingerprint,
so a stale vector can never be served.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def text_key(text: str) -> bytes:
    return hashlib.sha1(text.encode("utf-8")).digest()


class EmbeddingCache:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._conns: dict[str, sqlite3.Connection] = {}
        self._lock = threading.Lock()

    def _conn(self, fingerprint: str) -> sqlite3.Connection:
        with self._lock:
            conn = self._conns.get(fingerprint)
            if conn is None:
                conn = sqlite3.connect(self.root / f"{fingerprint}.sqlite", check_same_thread=False, timeout=60)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("CREATE TABLE IF NOT EXISTS emb (k BLOB PRIMARY KEY, v BLOB NOT NULL)")
                self._conns[fingerprint] = conn
            return conn

    def get_many(self, fingerprint: str, texts: Sequence[str]) -> dict[int, np.ndarray]:
        """Vectors found for ``texts``, by position."""
        conn = self._conn(fingerprint)
        keys = [text_key(t) for t in texts]
        found: dict[bytes, np.ndarray] = {}
        unique = list(dict.fromkeys(keys))
        for i in range(0, len(unique), 500):
            chunk = unique[i : i + 500]
            marks = ",".join("?" * len(chunk))
            with self._lock:
                rows = conn.execute(f"SELECT k, v FROM emb WHERE k IN ({marks})", chunk).fetchall()
            for k, v in rows:
                found[bytes(k)] = np.frombuffer(v, dtype=np.float32)
        return {i: found[k] for i, k in enumerate(keys) if k in found}

    def put_many(self, fingerprint: str, texts: Sequence[str], vectors: np.ndarray) -> None:
        conn = self._conn(fingerprint)
        rows = [(text_key(t), np.asarray(v, dtype=np.float32).tobytes()) for t, v in zip(texts, vectors, strict=True)]
        with self._lock, conn:
            conn.executemany("INSERT OR REPLACE INTO emb (k, v) VALUES (?, ?)", rows)

    def close(self) -> None:
        with self._lock:
            for conn in self._conns.values():
                conn.close()
            self._conns.clear()
