"""Passive storage: durable file writes and checksummed safetensors checkpoints.

Every write goes to a hidden temporary name in the same folder, is fsynced and then atomically
renamed, so a crash leaves the old file or the new one, never a torn one.  Readers only look
for final names, so leftover `.*.tmp-*` files are ignored (and swept by `clean_leftovers`).

pandas, torch and safetensors are imported by the functions that need them: the command line reads
YAML through this module before it knows whether it will train, and `li2 --version`, `--help` or an
argument error must not wait for torch.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

if TYPE_CHECKING:
    import pandas as pd
    import torch

CHECKPOINT_FORMAT = "li2-checkpoint-1"


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


class StoreError(ValueError):
    """A file li2 should read is missing, corrupted or belongs to something else (one-line message)."""


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        try:   # mkstemp makes 0600 files; give the result the permissions an ordinary open() would
            os.fchmod(fd, 0o666 & ~_UMASK)
        except OSError:
            pass
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def jsonable(obj: Any) -> Any:
    """A strict-JSON copy: dicts (str keys), lists; numpy scalars/arrays → Python; NaN, ±inf, NA → None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    pd = sys.modules.get("pandas")   # without pandas loaded, obj cannot be one of its missing values
    if pd is not None and (obj is pd.NA or obj is pd.NaT):
        return None
    return obj


def write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def write_yaml(path, obj: Any) -> None:
    write_text(path, yaml.safe_dump(obj, sort_keys=False))


def write_parquet(path, df: pd.DataFrame) -> None:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    atomic_write_bytes(path, buf.getvalue())


FIGURE_DPI = 120   # every li2 figure; views create their figures at it so layout and rendering share text metrics


def save_figure(fig, path, crop: bool = True) -> None:
    """Save a matplotlib figure durably (format from the suffix). crop: trim to the drawn content
    (bbox_inches="tight", one more drawing pass); a figure laid out by tight_layout fits already."""
    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip("."), dpi=FIGURE_DPI, bbox_inches="tight" if crop else None)
    atomic_write_bytes(path, buf.getvalue())


def read_text(path) -> str:
    """A text file's content; StoreError (one line) when it is missing, unreadable or not UTF-8."""
    try:
        return Path(path).read_text()
    except FileNotFoundError:
        raise StoreError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise StoreError(f"{path} is a folder, not a file") from None
    except UnicodeDecodeError:
        raise StoreError(f"{path} is not a UTF-8 text file") from None
    except OSError as e:
        raise StoreError(f"cannot read {path}: {e.strerror or e.__class__.__name__}") from None


def read_json(path) -> Any:
    text = read_text(path)
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        where = f" line {e.lineno}" if isinstance(e, json.JSONDecodeError) else ""
        raise StoreError(f"{path}{where} is not valid JSON ({e.__class__.__name__})") from None


def parse_yaml(text: str, source: str) -> Any:
    """yaml.safe_load with errors as one line naming `source` and the line: 'FILE line 3, column 7: …'."""
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise StoreError(f"{source}{where} is not valid YAML: {e.problem or e.context}") from None
    except (yaml.YAMLError, RecursionError) as e:
        raise StoreError(f"{source} is not valid YAML: {' '.join(str(e).split())[:120]}") from None


def mapping_lines(text: str, inside: tuple[str, ...] = ()) -> dict[str, int]:
    """1-based line of each key of the YAML mapping in `text` (or of the mapping under the keys
    `inside`), for messages that point at a line; {} when the text is not such a mapping."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except (yaml.YAMLError, RecursionError):
        return {}
    for key in inside:
        if not isinstance(node, yaml.MappingNode):
            return {}
        node = next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == key), None)
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {k.value: k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}


def read_yaml(path) -> Any:
    return parse_yaml(read_text(path), str(path))


def read_parquet(path) -> pd.DataFrame:
    import pandas as pd
    try:
        return pd.read_parquet(path)
    except FileNotFoundError:
        raise StoreError(f"{path} does not exist") from None
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise StoreError(f"{path} is not a readable Parquet table ({e.__class__.__name__})") from None


def is_leftover(name: str) -> bool:
    """A temporary file a killed writer left behind (`.NAME.tmp-XXXX`, or the write probe of an --out)."""
    return (name.startswith(".") and ".tmp-" in name) or name == ".li2-write-test"


def clean_leftovers(folder) -> None:
    """Remove temporary files a killed writer left behind."""
    for p in Path(folder).rglob(".*"):
        if is_leftover(p.name) and p.is_file():
            try:
                p.unlink()
            except OSError:
                pass


# -- checkpoints ----------------------------------------------------------------------------

def _digest(tensors: dict[str, torch.Tensor], meta_json: str) -> str:
    """sha256 over the metadata text and every tensor (name, dtype, shape, bytes)."""
    import torch
    h = hashlib.sha256()
    h.update(f"{CHECKPOINT_FORMAT}|{len(meta_json)}|".encode())
    h.update(meta_json.encode())
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_checkpoint(path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """safetensors file whose metadata holds `meta` (JSON) and a sha256 of every tensor."""
    from safetensors.torch import save as st_save
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta_json = json.dumps(meta)
    header = {"format": CHECKPOINT_FORMAT, "meta": meta_json, "sha256": _digest(tensors, meta_json)}
    atomic_write_bytes(path, st_save(tensors, metadata=header))


def load_checkpoint(path, expected_shapes: dict[str, tuple[int, ...]] | None = None
                    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load and verify a checkpoint; any damage or mismatch raises StoreError (never unpickles)."""
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise StoreError(f"checkpoint {path} does not exist") from None
    except OSError as e:
        raise StoreError(f"checkpoint {path} cannot be read: {e.strerror or e.__class__.__name__}") from None
    try:
        tensors = st_load(data)
        header = _read_header(data)
    except (SafetensorError, ValueError, TypeError, AttributeError, RecursionError, OverflowError) as e:
        detail = str(e).splitlines()[0][:80] if str(e).strip() else e.__class__.__name__
        raise StoreError(f"checkpoint {path} is damaged or not a safetensors file ({detail})") from None
    if header.get("format") != CHECKPOINT_FORMAT:
        raise StoreError(f"checkpoint {path} was not written by li2 (format {str(header.get('format'))[:40]!r})")
    meta_json = header.get("meta")
    if not isinstance(meta_json, str) or _digest(tensors, meta_json) != header.get("sha256"):
        raise StoreError(f"checkpoint {path} is corrupted: checksum mismatch")
    try:
        meta = json.loads(meta_json)
    except (json.JSONDecodeError, RecursionError):
        meta = None
    if not isinstance(meta, dict):
        raise StoreError(f"checkpoint {path} has damaged metadata")
    if expected_shapes is not None:
        for key, shape in expected_shapes.items():
            if key not in tensors:
                raise StoreError(f"checkpoint {path} lacks tensor '{key}'")
            if tuple(tensors[key].shape) != tuple(shape):
                raise StoreError(f"checkpoint {path}: '{key}' has shape {tuple(tensors[key].shape)}, "
                                 f"this run needs {tuple(shape)}")
    return tensors, meta


def _read_header(data: bytes) -> dict[str, str]:
    n = int.from_bytes(data[:8], "little")
    if n <= 0 or n > len(data) - 8:
        raise ValueError("bad header length")
    header = json.loads(data[8:8 + n])
    meta = header.get("__metadata__", {}) if isinstance(header, dict) else None
    if not isinstance(meta, dict):
        raise ValueError("header is not a safetensors header")
    return meta
