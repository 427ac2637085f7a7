"""Download the official BEIR archives, for users who have the internet (tested against a file:// URL)."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from core.errors import InvalidInput, NotFound, RRError

BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"
BEIR_NAMES = (
    "msmarco",
    "trec-covid",
    "nfcorpus",
    "nq",
    "hotpotqa",
    "fiqa",
    "arguana",
    "webis-touche2020",
    "cqadupstack",
    "quora",
    "dbpedia-entity",
    "scidocs",
    "fever",
    "climate-fever",
    "scifact",
)


def download_beir(name: str, out: str | Path, url: str | None = None, show_progress: bool = True) -> Path:
    """Fetch ``name``'s archive and unpack it to ``out/name``; returns that folder.

    An unknown name needs an explicit ``url``. The archive is checked (every member stays inside the target, and a
    corpus file is present) before anything is moved into place, so a broken download leaves nothing behind.
    """
    if url is None:
        if name not in BEIR_NAMES:
            raise InvalidInput(
                f"unknown BEIR dataset {name!r}; known: {', '.join(BEIR_NAMES)} (or pass --url)", field="name"
            )
        url = BEIR_URL.format(name=name)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) or ".." in name:  # a folder name under --out, nothing else
        raise InvalidInput(f"dataset name {name!r} must be a folder name: letters, digits, '.', '_' or '-'", "name")
    target_root = Path(out)
    if target_root.exists() and not target_root.is_dir():
        raise InvalidInput(f"{target_root} is not a folder", field="out")
    dest = target_root / name
    if dest.exists():
        raise InvalidInput(f"{dest} exists; remove it first to download again", field="out")
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / f"{name}.zip"
        try:
            with urllib.request.urlopen(url, timeout=60) as resp, archive.open("wb") as fh:
                total = int(resp.headers.get("Content-Length") or 0) or None
                with Progress(
                    TextColumn(f"{name}"),
                    BarColumn(),
                    DownloadColumn(),
                    TransferSpeedColumn(),
                    disable=not show_progress,
                ) as prog:
                    task = prog.add_task("download", total=total)
                    for block in iter(lambda: resp.read(1 << 20), b""):
                        fh.write(block)
                        prog.advance(task, len(block))
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise NotFound(f"could not download {url}: {e}") from None
        try:
            with zipfile.ZipFile(archive) as zf:
                unpacked = Path(tmp) / "unpacked"
                inside = unpacked.resolve()
                for member in zf.namelist():
                    target = (unpacked / member).resolve()
                    if not target.is_relative_to(inside):  # not a string prefix: unpacked2/ starts with unpacked
                        raise RRError(f"{url}: archive member {member!r} escapes the target folder")
                zf.extractall(unpacked)
        except zipfile.BadZipFile as e:  # also a member whose CRC does not match: a damaged archive
            raise RRError(f"{url}: not a zip archive, or a damaged one ({e})") from None
        except (zlib.error, EOFError, zipfile.LargeZipFile, NotImplementedError, OSError) as e:
            raise RRError(f"{url}: damaged or unreadable archive ({type(e).__name__}: {e})") from None
        candidates = [p.parent for p in unpacked.rglob("corpus.jsonl*")]
        if not candidates:
            raise RRError(f"{url}: the archive holds no corpus.jsonl")
        # one collection's folder; several (CQADupStack's sub-forums) come with the folder that holds them all
        root = Path(os.path.commonpath([str(c) for c in candidates]))
        try:
            target_root.mkdir(parents=True, exist_ok=True)
            shutil.move(str(root), dest)
        except OSError as e:
            shutil.rmtree(dest, ignore_errors=True)  # a copy across file systems that stopped part way
            raise RRError(f"could not move the unpacked {name} into {target_root}: {e}") from None
    return dest
