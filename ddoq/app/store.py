"""The app's session store: one folder per browser session, what a session may read, and
how long folders live (no Streamlit here; app_pages/_common.py calls it).

Each browser session writes its runs, exports and uploads under its own folder of the
store (``$DDOQ_APP_RUNS``, default ``<cache dir>/app-sessions``). When the app is served
to a group, three settings bound what sessions can do:

- ``DDOQ_APP_DATA_ROOTS`` (paths joined by `os.pathsep`): a typed folder must resolve
  inside one of them (`check_typed_folder`). Unset, any readable folder works.
- The store itself is never a dataset: a typed folder inside it, after resolving links,
  is refused whatever the roots, so no session reads another's runs or uploads.
- ``DDOQ_APP_SESSION_TTL`` (seconds, or ``"90m"``, ``"12h"``, ``"7d"``; default 7 days)
  and ``DDOQ_APP_STORE_MAX_BYTES`` (bytes, or ``"500M"``, ``"20G"``; unset: no cap):
  `sweep` removes the folders not used for the TTL, then the least recently used ones
  while the store is over the cap, never an active session's. A session marks its
  folder used on each run (`touch`); `start_sweeping` sweeps now and then every hour.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from ddoq._io import cache_dir

__all__ = [
    "DEFAULT_TTL",
    "SweepReport",
    "StoreSettings",
    "check_typed_folder",
    "data_roots",
    "parse_duration",
    "parse_size",
    "start_sweeping",
    "store_root",
    "sweep",
    "touch",
]

DEFAULT_TTL = 7 * 24 * 3600.0  # seconds
SWEEP_EVERY = 3600.0  # seconds between two sweeps
ACTIVE_SECONDS = 3600.0  # a folder used this recently is an active session's
MARKER = ".last-used"  # touched on each run of the session
_TOUCH_EVERY = 60.0  # seconds: a live view reruns every second, the marker needs less
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SIZES = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def store_root() -> Path:
    """The folder holding every session's folder: ``$DDOQ_APP_RUNS`` or the cache's."""
    env = os.environ.get("DDOQ_APP_RUNS")
    return Path(env).expanduser() if env else cache_dir() / "app-sessions"


def _parse(text: str, units: dict[str, int], what: str, example: str) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([a-zA-Z]?)[bB]?\s*", str(text))
    if match is None or match.group(2).lower() not in units:
        raise ValueError(f"{what} {text!r} is not understood; give e.g. {example}")
    return float(match.group(1)) * units[match.group(2).lower()]


def parse_duration(text: str) -> float:
    """Seconds in `text`: a number of seconds, or one with a unit (``90m``, ``12h``, ``7d``)."""
    return _parse(text, _UNITS, "the duration", "3600, 90m, 12h or 7d")


def parse_size(text: str) -> int:
    """Bytes in `text`: a number of bytes, or one with a unit (``500M``, ``20G``)."""
    return int(_parse(text, _SIZES, "the size", "1000000, 500M or 20G"))


def data_roots() -> list[Path] | None:
    """The allowed data folders (``DDOQ_APP_DATA_ROOTS``, resolved), or None when unset."""
    env = os.environ.get("DDOQ_APP_DATA_ROOTS", "").strip()
    if not env:
        return None
    return [Path(p).expanduser().resolve() for p in env.split(os.pathsep) if p.strip()]


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_typed_folder(
    folder: str, store: Path | None = None, roots: Collection[Path] | None = None
) -> Path:
    """The real path of a folder a session typed; ValueError (one line) when refused.

    Parameters
    ----------
    folder : str
        the path as typed (``~`` expanded; links resolved before any check).
    store : Path | None
        the session store (default `store_root`): never readable as a dataset.
    roots : Collection[Path] | None
        the allowed folders (default `data_roots`; None: any folder).
    """
    real = Path(folder).expanduser().resolve()
    store = Path(store or store_root()).expanduser().resolve()
    if _within(real, store):
        raise ValueError(
            f"{folder!r} is inside the app's session store, where sessions keep their runs "
            "and uploads: it cannot be read as a dataset"
        )
    roots = data_roots() if roots is None else roots
    if roots is not None and not any(_within(real, Path(r).resolve()) for r in roots):
        allowed = ", ".join(str(r) for r in roots) or "none"
        raise ValueError(
            f"{folder!r} is outside the folders this server allows ({allowed}; "
            "DDOQ_APP_DATA_ROOTS): choose a folder inside one of them, or upload a zip"
        )
    return real


def touch(folder: Path, now: float | None = None) -> None:
    """Mark the session folder `folder` as used now (at most once a minute on disk)."""
    marker = Path(folder) / MARKER
    now = time.time() if now is None else now
    try:
        if now - marker.stat().st_mtime < _TOUCH_EVERY:
            return
    except OSError:
        Path(folder).mkdir(parents=True, exist_ok=True)
        marker.touch()
    os.utime(marker, (now, now))


def last_used(folder: Path) -> float:
    """When `folder` was last used: its marker's time (the folder's own without one)."""
    for path in (Path(folder) / MARKER, Path(folder)):
        try:
            return path.stat().st_mtime
        except OSError:
            continue
    return 0.0


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under `folder` (links not followed)."""
    total = 0
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
    return total


@dataclass(frozen=True)
class StoreSettings:
    """How long session folders live, and how large the store may grow."""

    ttl: float = DEFAULT_TTL
    max_bytes: int | None = None

    @classmethod
    def from_env(cls) -> StoreSettings:
        """``DDOQ_APP_SESSION_TTL`` and ``DDOQ_APP_STORE_MAX_BYTES`` (ValueError if unreadable)."""
        ttl = os.environ.get("DDOQ_APP_SESSION_TTL", "").strip()
        cap = os.environ.get("DDOQ_APP_STORE_MAX_BYTES", "").strip()
        return cls(
            ttl=parse_duration(ttl) if ttl else DEFAULT_TTL,
            max_bytes=parse_size(cap) if cap else None,
        )


@dataclass(frozen=True)
class SweepReport:
    """What one `sweep` removed: expired folders, then those removed for the cap, and
    the store's bytes after it (-1 when no cap is set: not measured)."""

    expired: tuple[Path, ...]
    over_cap: tuple[Path, ...]
    store_bytes: int


def sweep(
    store: Path,
    settings: StoreSettings,
    *,
    busy: Collection[str] = (),
    now: float | None = None,
) -> SweepReport:
    """Remove the session folders of `store` not used for the TTL, then the least
    recently used ones while the store is over its cap.

    A folder is never removed while its session is active: named in `busy` (sessions
    with a queued or running job) or used within the last hour (`ACTIVE_SECONDS`, or
    the TTL when shorter).
    """
    now = time.time() if now is None else now
    store = Path(store)
    if not store.is_dir():
        return SweepReport((), (), 0)
    active_for = min(ACTIVE_SECONDS, settings.ttl)
    folders = sorted(
        (last_used(p), p) for p in store.iterdir() if p.is_dir() and not p.is_symlink()
    )
    removable = [(t, p) for t, p in folders if p.name not in busy and now - t > active_for]
    expired = [p for t, p in removable if now - t > settings.ttl]
    for path in expired:
        shutil.rmtree(path, ignore_errors=True)
    over: list[Path] = []
    if settings.max_bytes is None:
        return SweepReport(tuple(expired), (), -1)
    sizes = {p: folder_bytes(p) for _, p in folders if p not in expired}
    total = sum(sizes.values())
    for _, path in removable:  # the least recently used first
        if total <= settings.max_bytes:
            break
        if path not in expired:
            shutil.rmtree(path, ignore_errors=True)
            total -= sizes.pop(path)
            over.append(path)
    return SweepReport(tuple(expired), tuple(over), total)


def start_sweeping(
    store: Path,
    settings: StoreSettings,
    busy: Callable[[], Collection[str]] = frozenset,
    every: float = SWEEP_EVERY,
) -> threading.Thread:
    """Sweep `store` now (before returning), then every `every` seconds in a daemon
    thread, which is returned.

    `busy` returns the ids of the sessions with work queued or running at each sweep.
    """

    def once() -> None:
        try:
            sweep(store, settings, busy=busy())
        except OSError:
            pass  # a folder that vanished meanwhile: the next sweep sees the rest

    def loop() -> None:
        while True:
            time.sleep(every)
            once()

    once()

    thread = threading.Thread(target=loop, name="ddoq-store-sweep", daemon=True)
    thread.start()
    return thread
