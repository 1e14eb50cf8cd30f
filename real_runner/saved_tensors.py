"""Bytes saved for backward, per rank and per chunk, measured with saved-tensor hooks.

Each forward of a (chunk, micro-batch) runs inside `tracker.scope(key)`, which installs
torch.autograd.graph.saved_tensors_hooks. The pack hook sees every tensor autograd keeps for
backward and registers its *storage*: what stays alive is the storage, and several saved tensors
often share one (a tensor saved by two ops, views of one buffer, a block representation that a
later chunk on the same rank reads through a detached alias). So a storage counts once, with
its full size, however many tensors or (chunk, micro-batch) keys save it. Parameters are not
activations and are skipped. When the backward of a key finishes, `release(key)` drops its
storages; a storage still held by another key stays counted.

Per-chunk figures attribute each storage to the first live key that saved it, so the chunk
numbers add up to the rank's total.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["SavedTensorTracker"]

Key = tuple[int, int]  # (chunk, microbatch)


@dataclass
class _Storage:
    num_bytes: int
    holders: list[Key] = field(default_factory=list)


class SavedTensorTracker:
    """Live and peak bytes saved for backward on one rank."""

    def __init__(self, parameters: list[torch.nn.Parameter]) -> None:
        self._param_ptrs = {p.untyped_storage().data_ptr() for p in parameters}
        self._storages: dict[int, _Storage] = {}
        self._keys: dict[Key, set[int]] = {}
        self._chunk_bytes: dict[int, int] = {}
        self.live_bytes = 0
        self.peak_bytes = 0
        self.chunk_peak_bytes: dict[int, int] = {}

    def reset_peaks(self) -> None:
        """Start a new peak window (each step)."""
        self.peak_bytes = self.live_bytes
        self.chunk_peak_bytes = dict(self._chunk_bytes)

    @contextmanager
    def scope(self, key: Key) -> Iterator[None]:
        """Count what the forward run inside this block saves for backward, under `key`."""
        self._keys.setdefault(key, set())

        def pack(tensor: Tensor) -> Tensor:
            self._register(key, tensor)
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            yield
        self._update_peaks()

    def key_bytes(self, key: Key) -> int:
        """Bytes attributed to `key` (storages it was first to save among live keys)."""
        return sum(self._storages[ptr].num_bytes for ptr in self._keys.get(key, ())
                   if self._storages[ptr].holders[0] == key)

    def chunk_bytes(self, chunk: int) -> int:
        """Live bytes attributed to one chunk."""
        return self._chunk_bytes.get(chunk, 0)

    def release(self, key: Key) -> int:
        """Forget `key` after its backward; returns the bytes that were attributed to it."""
        released = self.key_bytes(key)
        for ptr in self._keys.pop(key, set()):
            entry = self._storages[ptr]
            owner = entry.holders[0]
            entry.holders.remove(key)
            if owner == key:
                self._chunk_bytes[key[0]] -= entry.num_bytes
                if entry.holders:
                    new_owner = entry.holders[0][0]
                    self._chunk_bytes[new_owner] = self._chunk_bytes.get(new_owner, 0) + \
                        entry.num_bytes
            if not entry.holders:
                self.live_bytes -= entry.num_bytes
                del self._storages[ptr]
        return released

    def _register(self, key: Key, tensor: Tensor) -> None:
        storage = tensor.untyped_storage()
        ptr, num_bytes = storage.data_ptr(), storage.nbytes()
        if num_bytes == 0 or ptr in self._param_ptrs:
            return
        entry = self._storages.get(ptr)
        if entry is None:
            entry = self._storages[ptr] = _Storage(num_bytes)
            self.live_bytes += num_bytes
            self._chunk_bytes[key[0]] = self._chunk_bytes.get(key[0], 0) + num_bytes
        if key not in entry.holders:
            entry.holders.append(key)
            self._keys[key].add(ptr)

    def _update_peaks(self) -> None:
        self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        for chunk, num_bytes in self._chunk_bytes.items():
            self.chunk_peak_bytes[chunk] = max(self.chunk_peak_bytes.get(chunk, 0), num_bytes)
