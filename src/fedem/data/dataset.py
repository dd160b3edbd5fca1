"""The processed federated dataset (one client = one user) and its deterministic on-disk artifact."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedem.errors import DataError

_ARRAYS = ("train_indptr", "train_items", "val_items", "test_items", "eval_negatives", "user_ids", "item_ids")
# A fixed zip timestamp makes the artifact byte-identical for identical content.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass
class FederatedDataset:
    """Leave-one-out split: per user a chronological train list, one validation and one test item,
    and the shared evaluation negatives (the same for validation and test)."""

    train_indptr: np.ndarray  # [U+1] CSR offsets into train_items
    train_items: np.ndarray  # [N] item ids, chronological per user, duplicates kept unless deduped
    val_items: np.ndarray  # [U]
    test_items: np.ndarray  # [U]
    eval_negatives: np.ndarray  # [U, num_eval_negatives]
    user_ids: np.ndarray  # [U] raw ids (str)
    item_ids: np.ndarray  # [I] raw ids (str)
    meta: dict = field(default_factory=dict)

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    @property
    def train_counts(self) -> np.ndarray:
        return np.diff(self.train_indptr)

    @property
    def train_users(self) -> np.ndarray:
        """User of every train row, aligned with train_items."""
        return np.repeat(np.arange(self.num_users), self.train_counts)

    def user_train_items(self, user: int) -> np.ndarray:
        return self.train_items[self.train_indptr[user] : self.train_indptr[user + 1]]

    def interacted_mask(self) -> np.ndarray:
        """[U, I] bool: items a user interacted with in any split."""
        mask = self.train_mask()
        users = np.arange(self.num_users)
        mask[users, self.val_items] = True
        mask[users, self.test_items] = True
        return mask

    def train_mask(self) -> np.ndarray:
        """[U, I] bool: items in a user's train set."""
        mask = np.zeros((self.num_users, self.num_items), dtype=bool)
        mask[self.train_users, self.train_items] = True
        return mask

    @property
    def content_hash(self) -> str:
        return self.meta["content_hash"]


def _artifact_bytes(ds: FederatedDataset, meta: dict) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in _ARRAYS:
            arr = getattr(ds, name)
            if arr.dtype.kind in "OU":
                arr = np.asarray(arr, dtype=str)
            payload = io.BytesIO()
            np.lib.format.write_array(payload, np.ascontiguousarray(arr), allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH), payload.getvalue())
        meta_json = json.dumps(meta, sort_keys=True, indent=1).encode()
        zf.writestr(zipfile.ZipInfo("meta.json", date_time=_ZIP_EPOCH), meta_json)
    return buffer.getvalue()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results and artifacts are ordinary files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_dataset(ds: FederatedDataset, path: Path) -> str:
    """Write the artifact atomically; its sha256 (returned, and set in ds.meta) is the data hash."""
    meta = {k: v for k, v in ds.meta.items() if k != "content_hash"}
    data = _artifact_bytes(ds, meta)
    digest = hashlib.sha256(data).hexdigest()
    atomic_write_bytes(Path(path), data)
    ds.meta["content_hash"] = digest
    return digest


def load_dataset(path: Path) -> FederatedDataset:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"processed dataset '{path}' not found: run `python -m fedem prepare DATASET` first")
    data = path.read_bytes()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            arrays = {
                name: np.lib.format.read_array(io.BytesIO(zf.read(f"{name}.npy")), allow_pickle=False)
                for name in _ARRAYS
            }
            meta = json.loads(zf.read("meta.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise DataError(f"processed dataset '{path}' is corrupt ({exc}); delete it and run prepare again") from exc
    meta["content_hash"] = hashlib.sha256(data).hexdigest()
    return FederatedDataset(**arrays, meta=meta)
