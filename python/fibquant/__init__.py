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
    "registry_entries",
]
