"""The pack format (issue 16 groundwork): blocks and an index a reader finds from the end."""

import os
import struct

import pytest

from razordav.core import errors, packs
from razordav.core.blocks import BlockCodec, digest
from razordav.store.local import LocalStore


def stored_blocks(n):
    codec = BlockCodec()
    out = []
    for i in range(n):
        raw = (b"text %d " % i) * (50 + i) if i % 2 else os.urandom(300 + i)
        name = digest(raw)
        out.append((name, raw, b"".join(codec.encode(raw, None, name).parts)))
    return out


def test_round_trip_and_each_block_reads_by_range(tmp_path):
    blocks = stored_blocks(20)
    b = packs.PackBuilder()
    for name, _raw, stored in blocks:
        assert b.add(name, stored) is not None
    assert b.add(blocks[0][0], blocks[0][2]) is None      # once per pack
    data = b.finish()
    entries = packs.parse(data)
    assert [e.name for e in entries] == [n for n, _, _ in blocks]
    store = LocalStore(tmp_path / "s")
    key = packs.pack_key("ab" + "0" * 30)
    assert key == "packs/ab/ab" + "0" * 30
    store.put(key, data)
    assert packs.index_of(store, key) == entries
    codec = BlockCodec()
    for (name, raw, _), e in zip(blocks, entries):
        assert codec.decode(store.get(key, e.offset, e.length), name) == raw


def test_an_empty_pack_is_valid():
    assert packs.parse(packs.PackBuilder().finish()) == []


@pytest.mark.parametrize("damage", ["trailer magic", "index crc", "newer version", "truncated",
                                    "size mismatch"])
def test_damaged_packs_are_refused_not_misread(damage):
    data = bytearray(_two_block_pack())
    t = len(data) - packs.TRAILER.size
    if damage == "trailer magic":
        data[-1] ^= 0xFF
    elif damage == "index crc":
        data[t - 1] ^= 0xFF                      # last byte of the index
    elif damage == "newer version":
        struct.pack_into(">H", data, t + 4, packs.FORMAT_VERSION + 1)
    elif damage == "truncated":
        data = data[:-5]
    else:
        data = b"x" + data
    with pytest.raises(errors.Corrupt):
        packs.parse(bytes(data))


def _two_block_pack():
    b = packs.PackBuilder()
    for name, _raw, stored in stored_blocks(2):
        b.add(name, stored)
    return b.finish()


def test_a_block_damaged_inside_a_pack_is_found_by_its_own_checks():
    name, _raw, stored = stored_blocks(1)[0]
    b = packs.PackBuilder()
    b.add(name, stored)
    data = bytearray(b.finish())
    e = packs.parse(bytes(data))[0]
    data[e.offset + e.length - 1] ^= 0xFF        # the block's payload, not the index
    entries = packs.parse(bytes(data))           # the index is intact
    with pytest.raises(errors.Corrupt):
        BlockCodec().decode(bytes(data[e.offset:e.offset + e.length]), entries[0].name)
