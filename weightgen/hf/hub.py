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

from ..errors import UsageError, WeightgenError

_PART = r"[A-Za-z0-9](?:[\w.-]{0,94}[A-Za-z0-9_])?"
_ID = re.compile(rf"(?P<repo>{_PART}/{_PART})(?:@(?P<revision>[\w.\-/]{{1,256}}))?")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_TRUE = {"1", "ON", "YES", "TRUE"}  # huggingface_hub's reading of HF_HUB_OFFLINE
FILENAME = "config.json"
PROBE_SECONDS = 3.0  # how long the Hub may take to answer before it counts as unreachable


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


def endpoint() -> str:
    """The Hub's address, as huggingface_hub reads it."""
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def reach(url: str, timeout: float = PROBE_SECONDS) -> str | None:
    """Why ``url`` cannot be reached (no network, no name resolution, refused, silent past
    ``timeout`` seconds), or None when it answers at all (any HTTP status: the download then
    says what it means). One HEAD request, through the environment's proxies, no retries:
    huggingface_hub retries a network failure for about 24 seconds."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None  # it answered
    except urllib.error.URLError as exc:
        reason = exc.reason
        text = getattr(reason, "strerror", None) or str(reason)
        return " ".join(str(text).split())
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except OSError as exc:
        return " ".join((exc.strerror or str(exc)).split())


def download(hub_id: HubId) -> Path:
    """config.json alone, through huggingface_hub into its cache; one line when it cannot:
    exit 1 when the Hub cannot be reached (after one try of at most PROBE_SECONDS), 2 for a
    repository, revision or file that does not exist."""
    how = (
        f"get it with `hf download {hub_id.repo} {FILENAME}"
        + (f" --revision {hub_id.revision}`" if hub_id.revision != "main" else "`")
        + " where the Hub is reachable, or pass a path"
    )
    missing = f"{hub_id}: no such file here, and its {FILENAME} is not in the Hugging Face cache"
    variable = offline()
    if variable is not None:
        raise WeightgenError(f"{missing} ({cache_dir()}) and {variable} is set; {how}")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise UsageError(
            f"{missing} ({cache_dir()}) and huggingface_hub is not installed to download it; {how}"
        ) from None
    base = endpoint()
    url = f"{base}/{hub_id.repo}/resolve/{hub_id.revision}/{FILENAME}"
    why = reach(url)
    if why is not None:
        raise WeightgenError(
            f"{missing} ({cache_dir()}), and the Hugging Face Hub ({base}) cannot be reached: "
            f"{why}; {how}"
        )
    try:
        path = hf_hub_download(
            hub_id.repo, FILENAME, revision=hub_id.revision, cache_dir=str(cache_dir())
        )
    except Exception as exc:  # unknown or gated repository, no such revision or file
        raise _refusal(hub_id, exc, how) from None
    return Path(path)


def _refusal(hub_id: HubId, exc: Exception, how: str) -> WeightgenError:
    """huggingface_hub's error as one whole line, in this tool's terms."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "GatedRepoError" in names:
        return WeightgenError(
            f"{hub_id.repo} is a gated repository: accept its terms on the Hub and log in "
            "(`hf auth login`), or pass a path"
        )
    if "RepositoryNotFoundError" in names:
        return UsageError(
            f"{hub_id.repo}: no such repository on the Hub (or it is private: log in with "
            "`hf auth login`); check the name, or pass a path"
        )
    if "RevisionNotFoundError" in names:
        return UsageError(f"{hub_id.repo} has no revision {hub_id.revision!r} on the Hub")
    if "EntryNotFoundError" in names or "RemoteEntryNotFoundError" in names:
        return UsageError(f"{hub_id}: the repository has no {FILENAME}")
    first = " ".join(str(exc).strip().splitlines()[0].split()) if str(exc).strip() else ""
    return WeightgenError(
        f"{hub_id}: could not download {FILENAME} ({type(exc).__name__}: {first}); {how}"
    )
