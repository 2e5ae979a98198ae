"""Files on disk: atomic writes, records, digests and the cache folder.

The leaf of the package: every stage (data -> encode -> quantize -> decode -> label ->
train -> export) writes through here, and this module imports nothing of ddoq.

- `atomic_write`, `write_json` and `save_tensors` write a file under a temporary name
  beside it and rename it into place, so a crash never leaves half a file behind.
- `staged_dir` / `replace_dir` build a folder under a temporary name and swap it in, so an
  interrupted export, prior or teacher never leaves half a folder behind.
- `save_record` / `load_record` store tensors with literal metadata in one safetensors file;
  `save_state` / `load_state` store a nested state (a training checkpoint: model, optimizer,
  scheduler, generator) as safetensors tensors plus a JSON skeleton. Nothing is unpickled.
- `array_digest` is the content key of the caches under `cache_dir`.
"""

from __future__ import annotations

import ast
import ctypes
import ctypes.util
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save

__all__ = [
    "array_digest",
    "atomic_write",
    "cache_dir",
    "load_record",
    "load_state",
    "replace_dir",
    "save_record",
    "save_state",
    "save_tensors",
    "staged_dir",
    "write_json",
]


def cache_dir() -> Path:
    """Directory of ddoq's on-disk caches.

    Returns
    -------
    Path
        ``$DDOQ_CACHE_DIR``, else ``~/.cache/ddoq``. It is not created here; writers create
        it when they need it.
    """
    env = os.environ.get("DDOQ_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ddoq"


def array_digest(array: np.ndarray) -> str:
    """Hex digest of an array's dtype, shape and bytes (a content key for caches).

    Parameters
    ----------
    array : np.ndarray
        Any array; it is made contiguous first, so views digest like copies.

    Returns
    -------
    str
        32 hexadecimal characters (blake2b, 16 bytes).
    """
    array = np.ascontiguousarray(array)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{array.dtype.str}{array.shape}".encode())
    h.update(array.tobytes())
    return h.hexdigest()


def atomic_write(path: str | os.PathLike, write: Callable[[Any], Any]) -> None:
    """Write a file through ``write(fileobj)`` to a temporary name, then rename it.

    Every file ddoq writes goes through here, so a crash never leaves half a file behind.

    Parameters
    ----------
    path : str or os.PathLike
        The file to (re)place; its folder is created when missing.
    write : callable
        Called once with a binary file object open for writing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; ddoq's files are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, payload: dict) -> None:
    """Write `payload` as indented JSON, atomically (`atomic_write`).

    Parameters
    ----------
    path : str or os.PathLike
        The JSON file.
    payload : dict
        JSON-serialisable values; anything else is written as its ``str``.
    """
    text = json.dumps(payload, indent=2, default=str) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def save_tensors(
    path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None
) -> None:
    """Write a safetensors file atomically (`atomic_write`).

    Parameters
    ----------
    path : str or os.PathLike
        The ``.safetensors`` file.
    tensors : dict of str to torch.Tensor
        The tensors (made contiguous here).
    metadata : dict of str to str, optional
        The file's string metadata.
    """
    payload = save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata)
    atomic_write(path, lambda f: f.write(payload))


def save_record(
    path: str | os.PathLike, tensors: dict[str, torch.Tensor | None], metadata: dict
) -> None:
    """Store the tensors that are not None and `metadata` in one safetensors file.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.safetensors`` file, written atomically.
    tensors : dict of str to torch.Tensor or None
        None values are left out (`load_record` then has no such key).
    metadata : dict
        Python literals (numbers, strings, lists, dicts, None); numpy scalars are stored as
        Python ones. Read back with `ast.literal_eval`, never unpickled.
    """
    kept = {k: v for k, v in tensors.items() if v is not None}
    # numpy scalars as Python ones: repr(np.float64(1.5)) is no literal
    plain = {k: v.item() if isinstance(v, np.generic) else v for k, v in metadata.items()}
    save_tensors(path, kept, {k: repr(v) for k, v in plain.items()})


def load_record(
    path: str | os.PathLike, skip: tuple[str, ...] = ()
) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a file written by `save_record`.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.safetensors`` file.
    skip : tuple of str
        Tensors not to read (e.g. ``("images",)``).

    Returns
    -------
    tensors : dict of str to torch.Tensor
        The stored tensors but those in `skip`.
    metadata : dict
        The stored metadata, as Python literals.
    """
    with safe_open(str(path), framework="pt") as f:
        meta = {k: ast.literal_eval(v) for k, v in (f.metadata() or {}).items()}
        tensors = {k: f.get_tensor(k) for k in f.keys() if k not in skip}  # noqa: SIM118
    return tensors, meta


_STATE_FORMAT = "ddoq-state-1"
_TENSOR, _TUPLE, _PAIRS = "__tensor__", "__tuple__", "__pairs__"


def _pack(obj: Any, tensors: dict[str, torch.Tensor], at: str) -> Any:
    """JSON skeleton of `obj`; its tensors go into `tensors` under their path `at`."""
    if isinstance(obj, torch.Tensor):
        tensors[at] = obj.detach().cpu().clone()  # clone: safetensors refuses shared storage
        return {_TENSOR: at}
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _pack(v, tensors, f"{at}.{k}") for k, v in obj.items()}
        return {_PAIRS: [[k, _pack(v, tensors, f"{at}.{k}")] for k, v in obj.items()]}
    if isinstance(obj, tuple | list):
        items = [_pack(v, tensors, f"{at}.{i}") for i, v in enumerate(obj)]
        return {_TUPLE: items} if isinstance(obj, tuple) else items
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} (at {at!r}) in a state file")


def _unpack(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_unpack(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if _TENSOR in obj:
        return tensors[obj[_TENSOR]]
    if _TUPLE in obj:
        return tuple(_unpack(v, tensors) for v in obj[_TUPLE])
    if _PAIRS in obj:
        return {k: _unpack(v, tensors) for k, v in obj[_PAIRS]}
    return {k: _unpack(v, tensors) for k, v in obj.items()}


def save_state(path: str | os.PathLike, state: dict) -> None:
    """Store a nested state atomically: its tensors as safetensors, the rest as JSON.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.safetensors`` file.
    state : dict
        Nested dicts (any hashable JSON keys, e.g. an optimizer's integer ones), lists,
        tuples, tensors, numbers, strings, booleans and None, as in a ``state_dict()``.

    Raises
    ------
    TypeError
        `state` holds another kind of object (it would need pickling).
    """
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _pack(state, tensors, "state")
    save_tensors(path, tensors, {"format": _STATE_FORMAT, "state": json.dumps(skeleton)})


def load_state(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict:
    """Read a state written by `save_state`, its tensors on `device`.

    Raises
    ------
    ValueError
        `path` is not a state file of `save_state` (for instance a pickle).
    """
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same message
        raise ValueError(f"{path} is not a ddoq state file (safetensors): {err}") from err
    if meta.get("format") != _STATE_FORMAT:
        raise ValueError(f"{path} is not a ddoq state file (format {meta.get('format')!r})")
    return _unpack(json.loads(meta["state"]), tensors)


_RENAME_EXCHANGE = 2  # linux/fs.h


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False if unsupported."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd = -100
    done = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    return done == 0


def replace_dir(tmp: str | os.PathLike, out: str | os.PathLike) -> None:
    """Move the finished folder `tmp` to `out`, replacing whatever `out` was.

    On Linux an existing `out` is swapped with `tmp` in one atomic step, so `out` is always
    either the old folder or the new one. Elsewhere the old folder is first renamed aside
    (`out` is then briefly absent, never half-written). The old folder is removed last.

    Parameters
    ----------
    tmp : str or os.PathLike
        The complete new folder, on the same file system as `out` (e.g. from `staged_dir`).
    out : str or os.PathLike
        The destination; an existing file or folder there is replaced.
    """
    tmp, out = Path(tmp), Path(out)
    os.chmod(tmp, 0o755)  # mkdtemp makes a private folder; ddoq's outputs are readable
    if not out.exists():
        os.replace(tmp, out)
        return
    if out.is_dir() and _exchange(tmp, out):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old folder
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(out, old)
    os.replace(tmp, out)
    if old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)


@contextmanager
def staged_dir(out: str | os.PathLike) -> Iterator[Path]:
    """Build a folder under a temporary name beside `out`, then `replace_dir` it in.

    Parameters
    ----------
    out : str or os.PathLike
        The destination folder; its parent is created when missing.

    Yields
    ------
    Path
        The empty temporary folder to fill. When the ``with`` block ends normally it
        replaces `out`; when it raises, the temporary folder is removed and `out` is untouched.
    """
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield tmp
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
