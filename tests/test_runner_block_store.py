"""Unit tests of the runner's bookkeeping: what to send, the header, the store, saved bytes.

    python -m pytest tests/test_runner_block_store.py -q
"""

from __future__ import annotations

import pytest
import torch

from real_runner.block_store import (
    HELD,
    BlockStore,
    blocks_to_send,
    decode_header,
    encode_header,
    expected_payload,
    header_length,
)
from real_runner.saved_tensors import SavedTensorTracker
from simulator.layout import Layout
from simulator.manifest import build_manifest_for_layout

CPU = torch.device("cpu")


def test_naive_sends_every_block():
    wire, held = blocks_to_send("naive", [2, 0, 1], {0: 0, 1: 1, 2: 0}, peer=0,
                                already_sent={0, 1, 2})
    assert (wire, held) == ([0, 1, 2], [])


def test_cached_skips_what_was_sent_and_b0_to_its_producer_only():
    origins = {0: 0, 1: 1, 2: 2}
    # To rank 0: b0 was computed there; b1 already went to rank 0; b2 it lacks.
    assert blocks_to_send("cached", [0, 1, 2], origins, peer=0, already_sent={1}) == ([2], [0, 1])
    # To rank 1: b1 was produced by rank 1, but the paper's cache only counts what it received.
    assert blocks_to_send("cached", [0, 1, 2], origins, peer=1, already_sent=set()) == (
        [0, 1, 2], [])


def test_cached_own_also_skips_blocks_the_peer_produced():
    origins = {0: 0, 1: 1, 2: 2}
    assert blocks_to_send("cached-own", [0, 1, 2], origins, peer=1, already_sent=set()) == (
        [0, 2], [1])
    assert blocks_to_send("cached-own", [0, 1, 2], origins, peer=2, already_sent={0}) == (
        [1], [0, 2])


def test_expected_payload_replays_the_senders_rule_by_hand():
    # P = 2, V = 2, L = 8, S = 2: chunk c holds sublayers 2c+1..2c+2 and completes block c+1.
    layout = Layout(num_sublayers=8, num_stages=2, num_virtual_stages=2,
                    chunk_sublayer_counts=(2, 2, 2, 2), block_size=2)
    assert expected_payload(layout, "naive", 2) == ([0, 1, 2], False)
    # Rank 1 -> 0, its first transfer: b0 is rank 0's own embedding; b1 (rank 0's) still goes.
    assert expected_payload(layout, "cached", 2) == ([1, 2], False)
    # Rank 0 -> 1 again: b0 and b1 went with chunk 1's input; b2 came from rank 1 itself.
    assert expected_payload(layout, "cached", 3) == ([2, 3], False)
    assert expected_payload(layout, "cached-own", 3) == ([3], False)
    # S = 3 cuts block 1 after sublayer 2: a partial sum follows.
    uneven = Layout(num_sublayers=8, num_stages=2, num_virtual_stages=2,
                    chunk_sublayer_counts=(2, 2, 2, 2), block_size=3)
    assert expected_payload(uneven, "naive", 1) == ([0], True)


@pytest.mark.parametrize("stages,virtual,block_size,counts", [
    (2, 1, 1, (3, 5)), (2, 2, 3, (3, 1, 2, 2)), (3, 2, 2, (2, 2, 1, 3, 2, 2)),
    (4, 2, 2, (1,) * 8), (4, 3, 4, (2,) * 12), (3, 1, 5, (4, 4, 4))])
def test_expected_payload_agrees_with_the_manifest(stages, virtual, block_size, counts):
    # Two separate accountings of one rule: the runner's sender replay and the simulator's
    # per-rank holdings (simulator/manifest.py).
    layout = Layout(num_sublayers=sum(counts), num_stages=stages, num_virtual_stages=virtual,
                    chunk_sublayer_counts=counts, block_size=block_size)
    manifest = build_manifest_for_layout(layout, 4, "block", "naive")
    for mode in ("naive", "cached", "cached-own"):
        for hop in manifest.forward():
            wire, partial = expected_payload(layout, mode, hop.dst_chunk)
            assert hop.names(mode) == tuple(f"b{j}" for j in wire) + (
                ("partial",) if partial else ()), (mode, hop.dst_chunk)


def test_header_round_trip_and_length():
    header = encode_header(4, src_chunk=3, microbatch=5, has_partial=True, wire=[2, 4],
                           held=[0, 1], origins={2: 1, 4: 0}, device=CPU)
    assert header.dtype == torch.int64 and header.numel() == header_length(4) == 9
    info = decode_header(header)
    assert (info.src_chunk, info.microbatch, info.has_partial) == (3, 5, True)
    assert info.wire == [(2, 1), (4, 0)] and info.held == [0, 1]
    assert header[4:].tolist() == [HELD, HELD, 1, -1, 0]


def test_store_routes_reader_gradients_to_the_owner_and_checks_counts():
    store = BlockStore()
    produced = torch.ones(3, requires_grad=True) * 2  # a non-leaf, as a sublayer output is
    store.put(0, 1, produced, owner_chunk=1, origin_rank=1)
    store.put(0, 1, torch.zeros(3), owner_chunk=3, origin_rank=0)  # first owner stays
    leaf_a, origin = store.read(0, 1)
    leaf_b, _ = store.read(0, 1)
    assert origin == 1 and leaf_a.is_leaf and leaf_a.requires_grad
    assert leaf_a.untyped_storage().data_ptr() == produced.untyped_storage().data_ptr()
    store.deposit(0, 1, torch.full((3,), 0.5))
    with pytest.raises(AssertionError, match=r"2 readers but 1 gradient deposits"):
        store.owned(0, 1)
    store.deposit(0, 1, torch.full((3,), 0.25))
    (entry,) = store.owned(0, 1)
    assert entry.tensor is produced and torch.equal(entry.deposit, torch.full((3,), 0.75))
    store.mark_sent(2, 0, [0, 1])
    assert store.sent_to(2, 0) == {0, 1} and store.sent_to(2, 1) == set()
    store.release(0)
    assert store.is_empty()


def test_saved_bytes_count_each_storage_once_and_skip_parameters():
    weight = torch.nn.Parameter(torch.randn(8, 8))
    tracker = SavedTensorTracker([weight])
    x = torch.randn(4, 8, requires_grad=True)
    with tracker.scope((0, 0)):
        y = x @ weight  # saves x and the weight (a parameter: skipped)
        z = (y * y).sum()  # y saved once although used twice
    assert tracker.live_bytes == x.numel() * 4 + y.numel() * 4
    alias = x.detach().requires_grad_()  # what a later chunk reads from the store
    with tracker.scope((2, 0)):
        w = (alias.sin() * 3).sum()  # sin saves alias: x's storage, so no new bytes
    assert tracker.live_bytes == (x.numel() + y.numel()) * 4
    assert tracker.chunk_bytes(0) == (x.numel() + y.numel()) * 4
    peak = tracker.peak_bytes
    assert tracker.release((0, 0)) == (x.numel() + y.numel()) * 4
    # x's storage is still held by chunk 2, so it stays counted and moves to chunk 2.
    assert tracker.live_bytes == x.numel() * 4 and tracker.chunk_bytes(2) == tracker.live_bytes
    tracker.release((2, 0))
    assert tracker.live_bytes == 0 and tracker.peak_bytes == peak
    del z, w
