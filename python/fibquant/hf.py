"""A Hugging Face transformers cache that stores keys and values as FibQuant codes.

:class:`FibQuantCache` is a ``transformers.Cache`` whose layers (:class:`FibQuantLayer`) keep
each layer's keys and values in a :class:`fibquant.KvCache` (one per batch row), stored by a
:class:`fibquant.CachePolicy`. On every ``update`` the layer appends the new keys and values to
the codes and hands the model back the cache's reconstruction of **every** cached position
(``KvCache.reconstruct``: decoded codes, fp16 sinks and windows, block means added back) as
tensors of the model's dtype and device; the model's own attention (eager, sdpa, ...) then runs
on those tensors. So this cache saves memory for what is stored between steps, not compute:
each step decodes the whole layer on the CPU (``O(length)`` per step and layer), and the
runtime's attention on codes (``KvCache.attend``) is not used here, because transformers'
attention interface computes attention from the tensors the cache returns.

Attention sees exactly what the cache stores, the current chunk's own keys and values included
(with ``CachePolicy.plain("fp16", "fp16")`` every position comes back rounded to fp16).
Balanced key scaling needs the queries, which a transformers cache never sees: layers get no
key scales (``KeyScaling`` ``"none"`` in effect); centering, sinks and windows apply.

Requires transformers >= 4.56 (the ``CacheLayerMixin`` layer API) and torch.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

import numpy as np

from . import CachePolicy, KvCache

try:
    import torch
    from transformers.cache_utils import Cache, CacheLayerMixin
except ImportError as e:  # pragma: no cover - exercised only without torch/transformers
    raise ImportError(
        "fibquant.hf needs torch and transformers >= 4.56 (transformers.cache_utils."
        f"CacheLayerMixin): {e}"
    ) from e

__all__ = ["FibQuantCache", "FibQuantLayer"]


class FibQuantLayer(CacheLayerMixin):
    """One model layer's cache: a :class:`fibquant.KvCache` of one layer per batch row.

    ``policy`` is the layer's policy (its codes as the defaults, no per-layer overrides).
    Shapes (batch, kv heads, head dim) are taken from the first ``update``.
    """

    is_sliding = False
    is_compileable = False
    is_croppable = False

    def __init__(self, policy: CachePolicy, prepare: bool = True):
        super().__init__()
        self.policy = policy
        self.prepare = prepare
        self.caches: List[KvCache] = []
        self.length = 0

    def lazy_initialization(self, key_states: "torch.Tensor", value_states: "torch.Tensor") -> None:
        """Creates one :class:`fibquant.KvCache` per batch row for ``key_states``'s shape
        ``(batch, kv_heads, seq, head_dim)``."""
        batch, kv_heads, _, head_dim = key_states.shape
        self.device = key_states.device
        self.dtype = key_states.dtype
        self.batch_size = batch
        self.caches = [
            KvCache(1, kv_heads, kv_heads, head_dim, policy=self.policy) for _ in range(batch)
        ]
        if self.prepare and self.caches:
            self.caches[0].prepare()  # Codecs of one code share their search structures.
        self.is_initialized = True

    @staticmethod
    def _rows(x: "torch.Tensor") -> np.ndarray:
        return x.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()

    def update(
        self, key_states: "torch.Tensor", value_states: "torch.Tensor", *args: Any, **kwargs: Any
    ) -> Tuple["torch.Tensor", "torch.Tensor"]:
        """Stores the new keys and values (``(batch, kv_heads, seq, head_dim)``) as codes and
        returns the reconstruction of every cached position, ``(batch, kv_heads, length,
        head_dim)`` each, in the model's dtype and on its device."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if key_states.shape[0] != len(self.caches):
            raise ValueError(
                f"batch of {key_states.shape[0]} rows, but the cache holds {len(self.caches)}"
            )
        k, v = self._rows(key_states), self._rows(value_states)
        keys, values = [], []
        for b, cache in enumerate(self.caches):
            cache.append(0, k[b], v[b])
            kb, vb = cache.reconstruct(0)
            keys.append(kb)
            values.append(vb)
        self.length += key_states.shape[-2]
        self.keys = torch.from_numpy(np.stack(keys)).to(device=self.device, dtype=self.dtype)
        self.values = torch.from_numpy(np.stack(values)).to(device=self.device, dtype=self.dtype)
        out_keys, out_values = self.keys, self.values
        # The tensors are handed to the model; between steps only the codes are kept.
        self.keys = self.values = None
        return out_keys, out_values

    def get_mask_sizes(self, query_length: Any) -> Tuple[int, int]:
        """``(kv_length, kv_offset)`` of the attention mask, as for ``DynamicLayer``. Takes the
        query length (transformers 5) or the ``cache_position`` tensor (transformers 4.56+)."""
        if isinstance(query_length, torch.Tensor):
            query_length = query_length.shape[0]
        return self.get_seq_length() + int(query_length), 0

    def get_seq_length(self) -> int:
        """Positions cached."""
        return self.length

    def get_max_length(self) -> int:
        """No maximum length: ``-1``."""
        return -1

    def get_max_cache_shape(self) -> int:
        """No maximum length: ``-1`` (the name transformers 4.x uses)."""
        return -1

    def reset(self) -> None:
        """Drops every cached position (the codecs stay)."""
        for cache in self.caches:
            cache.clear()
        self.length = 0

    def offload(self) -> None:
        """Nothing to move: the codes live in host memory."""

    def prefetch(self) -> None:
        """Nothing to move: the codes live in host memory."""

    def reorder_cache(self, beam_idx: "torch.LongTensor") -> None:
        """Beam search is not supported: the codes cannot be reordered between rows cheaply."""
        raise NotImplementedError("FibQuantCache does not support beam search (reorder_cache)")

    def crop(self, tokens_to_remove: int) -> None:
        """Cropping is not supported (the codes are append-only)."""
        raise NotImplementedError("FibQuantCache does not support crop")

    def batch_repeat_interleave(self, repeats: int) -> None:
        """Not supported (batch expansion of the codes)."""
        raise NotImplementedError("FibQuantCache does not support batch_repeat_interleave")

    def batch_select_indices(self, indices: "torch.Tensor") -> None:
        """Not supported (batch selection of the codes)."""
        raise NotImplementedError("FibQuantCache does not support batch_select_indices")

    def bytes(self) -> int:
        """Bytes the layer's codes and exact rows take (every batch row)."""
        return sum(c.bytes() for c in self.caches)


class FibQuantCache(Cache):
    """A transformers ``Cache`` storing every layer's keys and values as FibQuant codes.

    ``FibQuantCache(policy, num_layers=None, config=None)``: ``policy`` (default
    ``CachePolicy()``, 4 bits) may carry per-layer codes (``CachePolicy.with_layer``); the
    number of layers is ``num_layers`` or the text config's ``num_hidden_layers``. Pass it to a
    model as its cache (``cache=`` in transformers 5, ``past_key_values=`` before), to
    ``forward`` or ``generate``.
    """

    def __init__(
        self,
        policy: Optional[CachePolicy] = None,
        num_layers: Optional[int] = None,
        config: Any = None,
        prepare: bool = True,
    ):
        if num_layers is None:
            if config is None:
                raise ValueError("FibQuantCache needs num_layers or a model config")
            text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
            num_layers = text.num_hidden_layers
        policy = policy if policy is not None else CachePolicy()
        layers = [FibQuantLayer(policy.for_layer(i), prepare=prepare) for i in range(num_layers)]
        super().__init__(layers=layers)
        self.policy = policy

    def bytes(self) -> int:
        """Bytes every layer's codes and exact rows take."""
        return sum(layer.bytes() for layer in self.layers)

    def effective_bits(self) -> Optional[float]:
        """Bits per stored value, every overhead included (None when empty)."""
        values = sum(
            c.len(0) * c.kv_heads * 2 * c.head_dim for layer in self.layers for c in layer.caches
        )
        return self.bytes() * 8.0 / values if values else None
