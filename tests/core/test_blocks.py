"""Block format, verification and adaptive compression."""

import os
import random

import pytest

from razordav.core import errors
from razordav.core.blocks import CODEC_FRAMES, FRAME, HEADER, BlockCodec, digest, frame_table, \
    kind_of_head, kind_of_name


def text_bytes(n, seed=1):
    rng = random.Random(seed)
    words = ["storage", "gateway", "block", "the", "of", "inode", "cache", "bucket", "écrit",
             "upload", "\n", "données", "metadata", "journal", "zstd"]
    out = []
    size = 0
    while size < n:
        w = rng.choice(words) + " "
        out.append(w)
        size += len(w.encode())
    return "".join(out).encode()[:n]


def test_roundtrip_and_name_is_sha256():
    codec = BlockCodec()
    raw = text_bytes(100_000)
    enc = codec.encode(raw)
    assert enc.digest == digest(raw)
    assert codec.decode(enc.data, enc.digest) == raw
    assert len(enc.data) < len(raw) // 2


def test_random_data_is_stored_raw():
    codec = BlockCodec()
    raw = os.urandom(1 << 20)
    enc = codec.encode(raw)
    assert enc.kind == "compressed"
    assert len(enc.data) == len(raw) + HEADER.size


def test_text_gets_a_higher_level_than_binary():
    codec = BlockCodec()
    assert codec.classify(text_bytes(200_000)) == "text"
    binary = bytes(random.Random(2).choice(range(16)) for _ in range(200_000))
    binary = binary.replace(b"\x0a", b"\x00")
    assert codec.classify(binary) == "binary"


@pytest.mark.parametrize("name", ["photo.JPG", "a.zip", "movie.mp4", "x.tar.gz"])
def test_compressed_by_extension(name):
    assert kind_of_name(name) == "compressed"
    codec = BlockCodec()
    enc = codec.encode(text_bytes(50_000), hint=kind_of_name(name))
    assert enc.kind == "compressed" and len(enc.data) == 50_000 + HEADER.size


@pytest.mark.parametrize("head", [b"\xff\xd8\xff\xe0", b"\x89PNG\r\n", b"PK\x03\x04", b"\x1f\x8b\x08",
                                  b"\x00\x00\x00\x18ftypmp42"])
def test_compressed_by_magic(head):
    assert kind_of_head(head) == "compressed"
    assert kind_of_head(b"plain text") is None
    assert kind_of_name("notes.txt") is None


def test_counters_per_kind():
    codec = BlockCodec()
    codec.encode(text_bytes(100_000))
    codec.encode(os.urandom(100_000))
    stats = codec.snapshot()
    assert stats["text"]["bytes_in"] == 100_000 and stats["text"]["bytes_stored"] < 50_000
    assert stats["compressed"]["bytes_in"] == 100_000


@pytest.mark.parametrize("damage", ["flip_payload", "truncate", "bad_magic", "newer_version",
                                    "wrong_name"])
def test_damaged_objects_are_refused(damage):
    codec = BlockCodec()
    raw = text_bytes(10_000)
    enc = codec.encode(raw)
    data, name = bytearray(enc.data), enc.digest
    if damage == "flip_payload":
        data[-5] ^= 0xFF
    elif damage == "truncate":
        data = data[:10]
    elif damage == "bad_magic":
        data[0:4] = b"XXXX"
    elif damage == "newer_version":
        data[4] = 99
    else:
        name = digest(b"other")
    with pytest.raises(errors.Corrupt):
        codec.decode(bytes(data), name)


# -- codec 2: blocks in frames (issue 17) --

@pytest.mark.parametrize("size", [FRAME + 1, 2 * FRAME, 4 << 20, 3 * FRAME + 12345])
def test_compressible_blocks_over_a_frame_are_stored_in_frames(size):
    codec = BlockCodec()
    raw = text_bytes(size)
    enc = codec.encode(raw)
    assert enc.header[4:6] == bytes([2, CODEC_FRAMES])      # version 2, codec 2
    assert codec.decode(enc.data, enc.digest) == raw
    payload = enc.data[HEADER.size:]
    table = frame_table(payload[-8:], len(payload), size, "t", payload)
    assert len(table) == -(-size // FRAME)
    for fr in table:                                     # each frame decodes on its own
        assert codec.decode_frame(payload[fr.at:fr.at + fr.length], fr, "t") == \
            raw[fr.raw_at:fr.raw_at + fr.raw_length]


@pytest.mark.parametrize("size", [1000, FRAME])
def test_blocks_of_one_frame_keep_codec_1(size):
    enc = BlockCodec().encode(text_bytes(size))
    assert enc.header[4:6] == bytes([1, 1])


def test_frames_cost_under_2_percent_of_stored_size_on_text():
    import zstandard
    raw = text_bytes(4 << 20)
    framed = BlockCodec().encode(raw, hint=None).size
    whole = len(zstandard.ZstdCompressor(level=3).compress(raw)) + HEADER.size
    assert framed <= whole * 1.02, (framed, whole)


def test_a_damaged_frame_is_caught_by_its_own_checksum_and_by_the_whole_block():
    codec = BlockCodec()
    raw = text_bytes(4 * FRAME)
    data = bytearray(codec.encode(raw).data)
    payload = bytes(data[HEADER.size:])
    table = frame_table(payload[-8:], len(payload), len(raw), "t", payload)
    fr = table[2]
    data[HEADER.size + fr.at + 3] ^= 0xFF
    with pytest.raises(errors.Corrupt, match="checksum"):
        codec.decode_frame(bytes(data[HEADER.size + fr.at:HEADER.size + fr.at + fr.length]),
                           fr, "t")
    with pytest.raises(errors.Corrupt):
        codec.decode(bytes(data), digest(raw))
    data[-3] ^= 0xFF                                     # and a damaged table
    with pytest.raises(errors.Corrupt):
        frame_table(bytes(data[-8:]), len(payload), len(raw), "t", bytes(data))


def test_a_version_1_block_of_one_big_zstd_frame_still_decodes():
    """What the previous main wrote for compressible blocks of any size."""
    import zlib

    import zstandard
    raw = text_bytes(4 << 20)
    payload = zstandard.ZstdCompressor(level=3).compress(raw)
    data = HEADER.pack(b"RZBK", 1, 1, 0, len(raw), zlib.crc32(payload)) + payload
    assert BlockCodec().decode(data, digest(raw)) == raw


def test_a_truncated_frame_table_is_refused():
    raw = text_bytes(3 * FRAME)
    payload = BlockCodec().encode(raw).data[HEADER.size:]
    cut = payload[:-20]                                  # the end of the table is gone
    with pytest.raises(errors.Corrupt):
        frame_table(cut[-8:], len(cut), len(raw), "t", cut)
    with pytest.raises(errors.Corrupt):                  # a table of the wrong length
        frame_table(payload[-8:], len(payload) + 5, len(raw), "t", payload)
    with pytest.raises(errors.Corrupt):                  # sizes that do not add up
        frame_table(payload[-8:], len(payload), len(raw) + 1, "t", payload)
