"""FibQuant: fixed-rate, random-access vector quantization of KV-cache vectors.

The Rust runtime (crate ``fibquant``) with a numpy API:

- :class:`Codec`: encode, decode and attend on codes (scores, weighted sums, their group forms);
- :func:`registry_entries`, :func:`best_for_rate`, :data:`PRESET_RATES`: the embedded codebooks;
- :class:`KvCache` with :class:`CachePolicy`: the KV cache an engine attends through;
- :class:`CodeFile`: the code files ``fibquant-gen encode`` writes;
- :mod:`fibquant.hf`: a Hugging Face transformers cache on :class:`KvCache` (needs torch and
  transformers).

Every error is a :class:`FibQuantError` (a ``ValueError``) subclass carrying the runtime's message.
"""

from ._native import (
    DEFAULT_SEED,
    MAX_DIM,
    PRESET_RATES,
    ArithmeticOverflowError,
    ArrayError,
    CachePolicy,
    Codec,
    CodeFile,
    CorruptDataError,
    EmptyCacheError,
    FibQuantError,
    InvalidConfigError,
    KvCache,
    NonFiniteError,
    NormOverflowError,
    RegistryEntry,
    UnknownCodeError,
    WrongLengthError,
    __version__,
    best_for_rate,
    registry_entries,
)

import os as _os
import tempfile as _tempfile


def read_code_file(path: "str | _os.PathLike[str]") -> CodeFile:
    """Reads and checks the code file at ``path`` (what ``fibquant-gen encode`` writes)."""
    with open(path, "rb") as f:
        return CodeFile.from_bytes(f.read())


def write_code_file(path: "str | _os.PathLike[str]", codec: Codec, slots) -> None:
    """Writes ``slots`` (uint8, ``(rows, codec.slot_bytes)``) of ``codec`` to ``path`` as a
    version-2 code file (``fibquant-gen decode`` reads it). The file is written beside its
    destination and renamed, so a failed call leaves no partial file."""
    data = CodeFile.to_bytes(codec, slots)
    folder = _os.path.dirname(_os.path.abspath(path))
    fd, tmp = _tempfile.mkstemp(dir=folder, prefix=".fibquant-", suffix=".tmp")
    try:
        with _os.fdopen(fd, "wb") as f:
            f.write(data)
        _os.replace(tmp, path)
    except BaseException:
        if _os.path.exists(tmp):
            _os.unlink(tmp)
        raise


# The place a runtime error names; instances carry their own where the runtime names one.
FibQuantError.layer = None
FibQuantError.head = None
FibQuantError.position = None
FibQuantError.row = None

__all__ = [
    "DEFAULT_SEED",
    "MAX_DIM",
    "PRESET_RATES",
    "ArithmeticOverflowError",
    "ArrayError",
    "CachePolicy",
    "Codec",
    "CodeFile",
    "CorruptDataError",
    "EmptyCacheError",
    "FibQuantError",
    "InvalidConfigError",
    "KvCache",
    "NonFiniteError",
    "NormOverflowError",
    "RegistryEntry",
    "UnknownCodeError",
    "WrongLengthError",
    "__version__",
    "best_for_rate",
    "read_code_file",
    "registry_entries",
    "write_code_file",
]
