"""Hub ids as config sources: ``weightgen hf ORG/NAME[@REVISION]`` reads that model's
config.json from the local Hugging Face cache, or downloads that one file through
huggingface_hub (when it is installed and HF_HUB_OFFLINE is not set); never any weights.

Pure Python: the cache is read as huggingface_hub 2.x lays it out
(``models--ORG--NAME/refs/<revision>`` holding a commit hash,
``models--ORG--NAME/snapshots/<commit>/config.json``), found where it looks for it
(HF_HUB_CACHE, else HF_HOME/hub, else $XDG_CACHE_HOME or ~/.cache, /huggingface/hub).
huggingface_hub is imported only to download. An existing local path always wins.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError

_PART = r"[A-Za-z0-9](?:[\w.-]{0,94}[A-Za-z0-9_])?"
_ID = re.compile(rf"(?P<repo>{_PART}/{_PART})(?:@(?P<revision>[\w.\-/]{{1,256}}))?")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_TRUE = {"1", "ON", "YES", "TRUE"}  # huggingface_hub's reading of HF_HUB_OFFLINE
FILENAME = "config.json"


@dataclass(frozen=True)
class HubId:
    repo: str  # ORG/NAME
    revision: str  # a branch or tag name, or a commit hash; "main" when not given

    def __str__(self) -> str:
        return self.repo if self.revision == "main" else f"{self.repo}@{self.revision}"


def parse(source: str) -> HubId | None:
    """``ORG/NAME`` or ``ORG/NAME@REVISION`` as a hub id, else None."""
    match = _ID.fullmatch(source)
    if match is None:
        return None
    repo, revision = match["repo"], match["revision"] or "main"
    if "--" in repo or ".." in repo or repo.endswith(".git"):
        return None
    if revision.startswith("/") or any(p in ("", ".", "..") for p in revision.split("/")):
        return None
    return HubId(repo, revision)


def config_path(source: str | os.PathLike) -> Path:
    """Where to read a config from: ``source`` itself when it exists (or is no hub id),
    else the cached or downloaded config.json of the hub id it names."""
    path = Path(source)
    if not isinstance(source, str) or source == "-" or path.exists() or _looks_local(path):
        return path  # the reader says when it does not exist
    hub_id = parse(source)
    if hub_id is None:
        if "@" in source:
            raise UsageError(
                f"{source}: no such file, and not a hub id (ORG/NAME or ORG/NAME@REVISION)"
            )
        return path  # the reader says it does not exist
    cached = cached_config(hub_id)
    if cached is not None:
        return cached
    return download(hub_id)


def _looks_local(path: Path) -> bool:
    """A .json file name (``configs/llama.json``) is a mistyped path, not a hub id: never
    looked up, never sent to the Hub."""
    return path.suffix.lower() == ".json"


def cache_dir() -> Path:
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.path.expandvars(os.environ[variable])).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface"
    )
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def cached_config(hub_id: HubId) -> Path | None:
    """The cached config.json of ``hub_id`` at its revision (a ref name the cache has
    recorded, or a commit hash it holds a snapshot of), else None."""
    repo = cache_dir() / ("models--" + hub_id.repo.replace("/", "--"))
    commit = hub_id.revision
    ref = repo / "refs" / hub_id.revision
    if ref.is_file():
        try:
            commit = ref.read_text(encoding="ascii", errors="replace").strip()
        except OSError:
            return None
    if not _COMMIT.fullmatch(commit):
        return None
    found = repo / "snapshots" / commit / FILENAME
    return found if found.is_file() else None


def offline() -> str | None:
    """The variable that says not to download (as huggingface_hub reads it), else None."""
    for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(variable, "").upper() in _TRUE:
            return variable
    return None


def download(hub_id: HubId) -> Path:
    """config.json alone, through huggingface_hub into its cache; one line when it cannot."""
    how = (
        f"get it with `hf download {hub_id.repo} {FILENAME}"
        + (f" --revision {hub_id.revision}`" if hub_id.revision != "main" else "`")
        + " (or huggingface-cli download), or pass a path"
    )
    missing = f"{hub_id}: no such file here, and its {FILENAME} is not in the Hugging Face cache"
    variable = offline()
    if variable is not None:
        raise UsageError(f"{missing} ({cache_dir()}) and {variable} is set; {how}")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise UsageError(
            f"{missing} ({cache_dir()}) and huggingface_hub is not installed to download it; {how}"
        ) from None
    try:
        path = hf_hub_download(
            hub_id.repo, FILENAME, revision=hub_id.revision, cache_dir=str(cache_dir())
        )
    except Exception as exc:  # network, unknown or gated repository, no such revision
        text = " ".join(str(exc).split())
        text = text if len(text) <= 200 else text[:197] + "..."
        raise UsageError(
            f"{hub_id}: could not download {FILENAME} ({type(exc).__name__}: {text}); {how}"
        ) from None
    return Path(path)
