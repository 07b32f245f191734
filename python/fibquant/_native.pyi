"""Type stubs of the native module ``fibquant._native`` (re-exported by ``fibquant``).

Arrays: float32 and uint8 numpy arrays in native byte order; C-contiguous inputs are read in
place, others copied once. Every error is a :class:`FibQuantError` subclass.
"""

from typing import List, Optional, Tuple, Union

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]
# A side code: a rate in stored bits per coordinate (the registry's preset), an exact
# registry code ``(k, n)``, or ``"fp16"`` (uncompressed).
SideCode = Union[float, Tuple[int, int], str]

PRESET_RATES: List[float]
"""The rates, in bits per coordinate, that have a preset code."""
DEFAULT_SEED: int
"""Default rotation seed."""
MAX_DIM: int
"""Largest head dim a codec accepts."""
__version__: str
"""Version of the bindings."""

class FibQuantError(ValueError):
    """Base of every error of the module; the message is the Rust runtime's. ``layer``,
    ``head``, ``position`` and ``row`` name the place where the runtime names one."""

    layer: Optional[int]
    head: Optional[int]
    position: Optional[int]
    row: Optional[int]

class UnknownCodeError(FibQuantError):
    """No embedded codebook for this (dim, k, n)."""

class InvalidConfigError(FibQuantError):
    """A configuration value is out of range or inconsistent."""

class WrongLengthError(FibQuantError):
    """An input has the wrong length or shape."""

class NonFiniteError(FibQuantError):
    """An input holds a NaN or infinite value."""

class NormOverflowError(FibQuantError):
    """A vector's norm does not fit the norm format."""

class CorruptDataError(FibQuantError):
    """Corrupt slot, codebook file or code file bytes."""

class EmptyCacheError(FibQuantError):
    """Attention over a cache layer that holds no position."""

class ArithmeticOverflowError(FibQuantError):
    """Finite inputs whose magnitudes f32 arithmetic cannot combine."""

class ArrayError(FibQuantError):
    """Not a numpy array of the required dtype and number of dimensions."""

class Codec:
    """A FibQuant codec for one (dim, k, n): vectors become fixed-size slots. Immutable and
    thread-safe; heavy calls release the GIL."""

    def __init__(
        self,
        dim: int,
        k: int,
        n: int,
        seed: Optional[int] = None,
        norm: str = "f16",
        rotation: str = "auto",
        rounds: Optional[int] = None,
    ) -> None:
        """The codec on the embedded codebook for (dim, k, n). ``norm``: "f16" or "f32";
        ``rotation``: "auto", "hadamard" (with ``rounds``, default 3) or "haar"."""
    @staticmethod
    def preset(
        dim: int,
        rate: float,
        seed: Optional[int] = None,
        norm: str = "f16",
        rotation: str = "auto",
        rounds: Optional[int] = None,
    ) -> "Codec":
        """The registry's lowest-MSE code for ``dim`` at ``rate`` stored bits per coordinate."""
    @property
    def dim(self) -> int:
        """Head dimension."""
    @property
    def k(self) -> int:
        """Block size."""
    @property
    def n(self) -> int:
        """Codebook size."""
    @property
    def seed(self) -> int:
        """Rotation seed."""
    @property
    def norm(self) -> str:
        """Norm format, "f16" or "f32"."""
    @property
    def rotation(self) -> str:
        """Rotation: "auto", "haar" or "hadamard(rounds)"."""
    @property
    def slot_bytes(self) -> int:
        """Bytes of one slot (norm included)."""
    @property
    def rate_bits(self) -> float:
        """Nominal rate log2(n) / k bits per coordinate."""
    @property
    def blocks(self) -> int:
        """Blocks per vector, dim / k."""
    @property
    def compression_vs_f16(self) -> float:
        """2 * dim / slot_bytes."""
    def prepare(self) -> None:
        """Builds the search structures and attention tables ahead of first use."""
    def encode(self, x: F32) -> U8:
        """One vector (dim,) -> one slot (slot_bytes,)."""
    def encode_batch(self, rows: F32) -> U8:
        """Rows (count, dim) -> slots (count, slot_bytes)."""
    def decode(self, slot: U8) -> F32:
        """One slot (slot_bytes,) -> one vector (dim,)."""
    def decode_batch(self, slots: U8) -> F32:
        """Slots (count, slot_bytes) -> rows (count, dim)."""
    def scores(self, q: F32, slots: U8) -> F32:
        """q . x_hat_i for a query (dim,) against slots (count, slot_bytes): (count,)."""
    def weighted_sum(self, weights: F32, slots: U8) -> F32:
        """sum_i weights[i] x_hat_i, weights (count,): (dim,)."""
    def scores_group(self, queries: F32, slots: U8) -> F32:
        """Scores of g queries (g, dim): (g, count), each row as ``scores`` alone."""
    def weighted_sum_group(self, weights: F32, slots: U8) -> F32:
        """Weighted sums of g weight rows (g, count): (g, dim), each as ``weighted_sum``."""

class RegistryEntry:
    """One embedded rate point of the registry."""

    @property
    def file(self) -> str:
        """Codebook file name."""
    @property
    def dim(self) -> int:
        """Head dimension."""
    @property
    def k(self) -> int:
        """Block size."""
    @property
    def n(self) -> int:
        """Number of codewords."""
    @property
    def rate_bits(self) -> float:
        """log2(n) / k."""
    @property
    def stored_bits(self) -> float:
        """ceil(log2 n) / k."""
    @property
    def mse(self) -> float:
        """Normalized MSE E||x - x_hat||^2 / ||x||^2 measured when generated."""
    @property
    def sha256(self) -> str:
        """sha256 of the codebook file."""
    @property
    def file_bytes(self) -> int:
        """Compressed file size."""

def registry_entries() -> List[RegistryEntry]:
    """Every embedded rate point, in manifest order."""

def best_for_rate(dim: int, rate: float) -> RegistryEntry:
    """The preset for ``dim`` at ``rate`` stored bits per coordinate."""

class CachePolicy:
    """What a KvCache stores and how; immutable, ``with_*`` return changed copies."""

    def __init__(self) -> None:
        """The default policy, ``CachePolicy.preset(4.0)``."""
    @staticmethod
    def preset(bits: float) -> "CachePolicy":
        """Keys and values at the preset of ``bits``, keys centered, balanced key scales,
        4 sinks."""
    @staticmethod
    def plain(key: SideCode, value: SideCode) -> "CachePolicy":
        """Every token encoded as it arrives, no transform, no exact token."""
    def with_codes(self, key: SideCode, value: SideCode) -> "CachePolicy":
        """Other default codes."""
    def with_layer(self, layer: int, key: SideCode, value: SideCode) -> "CachePolicy":
        """Other codes for one layer."""
    def with_centering(self, keys: bool, values: bool) -> "CachePolicy":
        """Centering of keys and values switched."""
    def with_key_scaling(self, scaling: str) -> "CachePolicy":
        """Key scaling "balanced" or "none"."""
    def with_sinks(self, sinks: int) -> "CachePolicy":
        """``sinks`` exact first positions."""
    def with_window(self, window: int) -> "CachePolicy":
        """An exact recent window of ``window`` positions."""
    def with_block_len(self, block_len: int) -> "CachePolicy":
        """Blocks of ``block_len`` positions on centered sides."""
    def with_seed(self, seed: int) -> "CachePolicy":
        """Another rotation seed."""
    def for_layer(self, layer: int) -> "CachePolicy":
        """``layer``'s codes as the defaults, no overrides."""
    def codes_of(self, layer: int) -> Tuple[SideCode, SideCode]:
        """The key and value codes of ``layer``."""
    @property
    def key(self) -> SideCode:
        """Default key code."""
    @property
    def value(self) -> SideCode:
        """Default value code."""
    @property
    def overrides(self) -> List[Tuple[int, SideCode, SideCode]]:
        """Per-layer codes."""
    @property
    def center_keys(self) -> bool:
        """Whether keys are centered per block."""
    @property
    def center_values(self) -> bool:
        """Whether values are centered per block."""
    @property
    def key_scaling(self) -> str:
        """"balanced" or "none"."""
    @property
    def sinks(self) -> int:
        """Exact first positions."""
    @property
    def window(self) -> int:
        """Exact recent positions."""
    @property
    def block_len(self) -> Optional[int]:
        """Positions per block (None: the head dim)."""
    @property
    def seed(self) -> int:
        """Rotation seed."""

class KvCache:
    """A KV cache for one sequence; attention on what it stores. Keys and values
    (kv_heads, seq, head_dim), queries and outputs (query_heads, seq, head_dim), float32."""

    def __init__(
        self,
        layers: int,
        query_heads: int,
        kv_heads: int,
        head_dim: int,
        policy: Optional[CachePolicy] = None,
        score_scale: Optional[float] = None,
    ) -> None:
        """An empty cache; ``score_scale`` defaults to 1 / sqrt(head_dim)."""
    @property
    def layers(self) -> int:
        """Layers."""
    @property
    def query_heads(self) -> int:
        """Query heads per layer."""
    @property
    def kv_heads(self) -> int:
        """Key/value heads per layer."""
    @property
    def head_dim(self) -> int:
        """Head dimension."""
    @property
    def score_scale(self) -> float:
        """Softmax scale of the scores."""
    @property
    def policy(self) -> CachePolicy:
        """The policy."""
    def prepare(self) -> None:
        """Builds the codecs' structures ahead of the first append."""
    def codecs(self, layer: int) -> Tuple[Optional[Codec], Optional[Codec]]:
        """Key and value codecs of ``layer`` (None: fp16)."""
    def append(self, layer: int, keys: F32, values: F32) -> None:
        """Appends (kv_heads, seq, head_dim) keys and values."""
    def attend(self, layer: int, queries: F32) -> F32:
        """Causal attention of the last ``seq`` positions' queries over the cache."""
    def append_and_attend(self, layer: int, queries: F32, keys: F32, values: F32) -> F32:
        """Appends the chunk, then attends its queries, causally."""
    def reconstruct(self, layer: int, head: Optional[int] = None) -> Tuple[F32, F32]:
        """Keys and values as stored, (kv_heads, len, head_dim) or (len, head_dim)."""
    def len(self, layer: int) -> int:
        """Positions cached for ``layer``."""
    def is_empty(self) -> bool:
        """Whether no layer holds a position."""
    def bytes(self) -> int:
        """Bytes the cache holds."""
    def layer_bytes(self, layer: int) -> int:
        """Bytes one layer holds."""
    def effective_bits(self) -> Optional[float]:
        """Bits per stored value, every overhead included."""
    def clear(self) -> None:
        """Drops every position and the frozen key scales."""

class CodeFile:
    """A parsed, checksum-verified code file."""

    @staticmethod
    def from_bytes(data: bytes) -> "CodeFile":
        """Parses and checks a code file."""
    @staticmethod
    def to_bytes(codec: Codec, slots: U8) -> bytes:
        """Serializes slots (rows, slot_bytes) as a version-2 code file."""
    @property
    def version(self) -> int:
        """File version."""
    @property
    def dim(self) -> int:
        """Head dimension."""
    @property
    def k(self) -> int:
        """Block size."""
    @property
    def n(self) -> int:
        """Codebook size."""
    @property
    def rows(self) -> int:
        """Number of rows."""
    @property
    def seed(self) -> int:
        """Rotation seed."""
    @property
    def rotation(self) -> str:
        """Rotation."""
    @property
    def norm(self) -> str:
        """Norm format."""
    @property
    def codebook_tag(self) -> str:
        """Codebook tag, 16 hex digits."""
    @property
    def checked(self) -> bool:
        """Whether the checksums were verified (version 2)."""
    def slots(self) -> U8:
        """The slots (rows, slot_bytes)."""
    def codec(self) -> Codec:
        """The codec that decodes the slots."""
    def decode(self) -> F32:
        """Every slot decoded, (rows, dim)."""
