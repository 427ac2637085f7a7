"""Experts on disk and the one registry that lists, adds and removes them.

An expert is a directory: the peft LoRA adapter (``adapter_config.json``, ``adapter_model.safetensors``) and a
``manifest.json`` that says what it is, what base model it needs, which sides it encodes, how it was trained and how
well it scored. The registry owns a folder of such directories; nothing else decides which experts exist.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from core.errors import Conflict, InvalidInput, NotFound

log = logging.getLogger(__name__)

Sides = Literal["query", "query+document"]
SIDES: tuple[str, ...] = ("query", "query+document")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,62}$")
MANIFEST = "manifest.json"
FORMAT_VERSION = 1


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name) or name == "base":
        raise InvalidInput(
            f"expert name {name!r} is invalid: use 1-63 lowercase letters, digits, '-' or '_' (and not 'base')",
            field="name",
        )
    return name


@dataclass
class Manifest:
    name: str
    domain: str
    base_model: str
    base_fingerprint: str
    sides: str = "query"
    rank: int = 8
    alpha: int = 32
    dropout: float = 0.1
    target_modules: list[str] = field(default_factory=lambda: ["query", "key", "value"])
    training: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        check_name(self.name)
        if self.sides not in SIDES:
            raise InvalidInput(f"sides must be one of {SIDES}, got {self.sides!r}", field="sides")
        if self.rank < 1:
            raise InvalidInput(f"rank must be >= 1, got {self.rank}", field="rank")
        if not self.domain:
            raise InvalidInput("domain must not be empty", field="domain")

    @property
    def encodes_documents(self) -> bool:
        return self.sides == "query+document"

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / MANIFEST
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> Manifest:
        path = Path(directory) / MANIFEST
        if not path.is_file():  # a folder that is not an expert, like one that lacks its adapter: bad input (400)
            raise InvalidInput(f"{directory}: no {MANIFEST}; is this an expert directory?", field="path")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            raise InvalidInput(f"{path}: not valid UTF-8 ({e.reason})") from None
        except json.JSONDecodeError as e:
            raise InvalidInput(f"{path}: not valid JSON ({e.msg})") from None
        if not isinstance(data, dict):
            raise InvalidInput(f"{path}: a manifest is a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InvalidInput(f"{path}: unknown fields {sorted(unknown)}")
        missing = [n for n in ("name", "domain", "base_model", "base_fingerprint") if n not in data]
        if missing:
            raise InvalidInput(f"{path}: missing fields {missing}")
        try:
            return cls(**data)
        except InvalidInput as e:
            raise InvalidInput(f"{path}: {e}", field=e.field) from None
        except TypeError as e:  # a field of the wrong type, e.g. a rank that is a string
            raise InvalidInput(f"{path}: a field has the wrong type ({e})") from None


@dataclass(frozen=True)
class Expert:
    manifest: Manifest
    path: Path

    @property
    def name(self) -> str:
        return self.manifest.name


class ExpertRegistry:
    """A folder of expert directories. Adding copies an expert in; removing deletes its directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.unreadable: dict[Path, str] = {}  # expert folders the last all() skipped, and why

    def all(self) -> list[Expert]:
        """Every expert whose manifest loads. One that does not (hand-edited, half-copied) is skipped with a warning
        and kept in ``unreadable``: it is not served, and it does not stop the others (nor their removal)."""
        self.unreadable = {}
        if not self.root.is_dir():
            return []
        out = []
        for d in sorted(self.root.iterdir()):
            if d.is_dir() and not d.name.startswith(".") and (d / MANIFEST).is_file():
                try:
                    out.append(Expert(Manifest.load(d), d))
                except InvalidInput as e:
                    self.unreadable[d] = str(e)
                    log.warning("skipping expert folder %s: %s", d, e)
        return out

    def names(self) -> list[str]:
        return [e.name for e in self.all()]

    def get(self, name: str) -> Expert:
        d = self.root / check_name(name)
        if not (d / MANIFEST).is_file():
            raise NotFound(f"no expert {name!r} in {self.root} (have: {', '.join(self.names()) or 'none'})")
        return Expert(Manifest.load(d), d)

    def add(self, source: str | Path, *, replace: bool = False) -> Expert:
        """Copy an expert directory in under its manifest's name."""
        src = Path(source)
        manifest = Manifest.load(src)
        if not (src / "adapter_config.json").is_file():
            raise InvalidInput(f"{src}: no adapter_config.json; an expert needs its peft LoRA adapter")
        dest = self.root / manifest.name
        if dest.exists() and dest.resolve() != src.resolve() and not replace:
            raise Conflict(f"expert {manifest.name!r} exists in {self.root}; remove it first or pass replace")
        if dest.resolve() != src.resolve():
            # Copy beside, then rename: another process listing the registry never sees half an expert, and the
            # expert it replaces is set aside only once the copy is whole (a full disk loses neither).
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = self.root / f".{manifest.name}.incoming"
            old = self.root / f".{manifest.name}.old"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)
            shutil.copytree(src, tmp)
            if dest.exists():
                dest.rename(old)
            tmp.rename(dest)
            shutil.rmtree(old, ignore_errors=True)
        return Expert(manifest, dest)

    def remove(self, name: str) -> None:
        """Delete the expert's directory; one whose manifest does not load can be removed too."""
        d = self.root / check_name(name)
        if not (d / MANIFEST).is_file():
            raise NotFound(f"no expert {name!r} in {self.root} (have: {', '.join(self.names()) or 'none'})")
        shutil.rmtree(d)
