"""Code files through the bindings: round trip, and every corruption refused."""

import numpy as np
import pytest

import fibquant as fq


def small_file():
    codec = fq.Codec(64, 8, 256)
    x = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    slots = codec.encode_batch(x)
    return codec, slots, bytes(fq.CodeFile.to_bytes(codec, slots))


def test_round_trip():
    codec, slots, data = small_file()
    assert len(data) == 64 + 3 * codec.slot_bytes
    f = fq.CodeFile.from_bytes(data)
    assert (f.version, f.dim, f.k, f.n, f.rows, f.seed) == (2, 64, 8, 256, 3, fq.DEFAULT_SEED)
    assert (f.norm, f.rotation, f.checked) == ("f16", "hadamard(3)", True)
    assert len(f.codebook_tag) == 16
    assert np.array_equal(f.slots(), slots)
    assert np.array_equal(f.decode(), codec.decode_batch(slots))
    c = f.codec()
    assert (c.dim, c.k, c.n, c.seed) == (64, 8, 256, fq.DEFAULT_SEED)
    # An empty file of rows, and a seeded codec, round trip too.
    seeded = fq.Codec(64, 8, 256, seed=11)
    e = fq.CodeFile.from_bytes(fq.CodeFile.to_bytes(seeded, np.zeros((0, seeded.slot_bytes), np.uint8)))
    assert e.rows == 0 and e.seed == 11 and e.decode().shape == (0, 64)


def test_every_changed_byte_and_truncation_is_refused():
    _, _, data = small_file()
    for pos in range(len(data)):
        changed = bytearray(data)
        changed[pos] ^= 0x10
        with pytest.raises(fq.CorruptDataError, match="^corrupt code file"):
            fq.CodeFile.from_bytes(bytes(changed))
    for cut in range(len(data)):
        with pytest.raises(fq.CorruptDataError, match="^corrupt code file"):
            fq.CodeFile.from_bytes(data[:cut])


def test_wrong_slot_width_refused():
    codec, slots, _ = small_file()
    with pytest.raises(fq.WrongLengthError, match=r"^slots has shape \(3, 9\), expected \(rows, 10\)$"):
        fq.CodeFile.to_bytes(codec, slots[:, :9])


def test_read_and_write_files(tmp_path):
    codec, slots, data = small_file()
    path = tmp_path / "keys.fq"
    fq.write_code_file(path, codec, slots)
    assert path.read_bytes() == data
    assert np.array_equal(fq.read_code_file(path).slots(), slots)
    # A failed write leaves nothing behind, and an existing file as it was.
    with pytest.raises(fq.WrongLengthError):
        fq.write_code_file(path, codec, slots[:, :9])
    assert path.read_bytes() == data and sorted(p.name for p in tmp_path.iterdir()) == ["keys.fq"]
