"""1-D neighborhood attention (NA) with a plain-PyTorch backend and an optional NATTEN backend.

This module is *hub-facing*: it is copied flat next to saved checkpoints and loaded with
``trust_remote_code`` on machines that do not have ``ecgnat_hf`` installed. It must therefore
import only ``torch`` and the standard library; NATTEN is imported lazily and is optional.

The operation
-------------
Sequence length ``L``, odd kernel size ``K``, dilation ``d`` (``K * d <= L``), head dim ``D``.
Query ``i`` belongs to dilation group ``g = i % d`` at in-group index ``i' = i // d``; the group
has ``n_g = ceil((L - g) / d)`` tokens. With ``r = K // 2`` the window centre is
``c = clamp(i', r, n_g - 1 - r)`` and the neighbours are ``j_t = (c - r + t) * d + g`` for
``t = 0 .. K-1``: every query attends to exactly ``K`` keys, windows are shifted inward at the
borders (no padding, no masking). ``out_i = softmax_t(scale * q_i . k_{j_t}) v_{j_t}`` with
``scale = D ** -0.5`` by default. In the causal variant query ``i'`` attends to the in-group keys
``max(i' - K + 1, 0) .. i'`` (early queries see fewer than ``K`` keys).

``K * d <= L`` guarantees ``n_g >= K`` for every group, so the windows are always well defined.
This is the definition implemented by ``natten.na1d`` (checked in the test-suite).

The torch backend
-----------------
Instead of gathering ``L * K`` keys (memory ``L*K*D``), queries of each dilation group are cut
into blocks of ``B`` consecutive in-group queries. The union of the windows of a block is a
contiguous in-group range of at most ``B + K - 1`` keys, so each block attends densely to one
key tile of that size, with a mask that keeps exactly the keys of each query's window. All tiles
of all groups are gathered with a single ``index_select`` (about ``(1 + (K-1)/B) * L`` rows), the
scores are small dense batched matmuls, and the result is put back in order with one more
``index_select``. Everything is plain autograd, so the backward pass comes for free.

Layout of ``query``/``key``/``value`` and of the output: ``[batch, length, heads, head_dim]``
(the same as ``natten.na1d``).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F

__all__ = [
    "neighborhood_attention_1d",
    "available_backends",
    "natten_available",
    "default_block_size",
]

_BACKENDS = ("auto", "torch", "natten")


# --------------------------------------------------------------------------------------------
# NATTEN (optional, imported lazily)
# --------------------------------------------------------------------------------------------
_NATTEN_MODULE = None
_NATTEN_CHECKED = False
_NATTEN_ERROR: Optional[str] = None


def _import_natten():
    """Return the ``natten`` module, or ``None`` when it cannot be imported (cached)."""
    global _NATTEN_MODULE, _NATTEN_CHECKED, _NATTEN_ERROR
    if not _NATTEN_CHECKED:
        _NATTEN_CHECKED = True
        try:
            import natten  # noqa: WPS433 (lazy optional import)

            if not hasattr(natten, "na1d"):
                raise ImportError("this natten version has no natten.na1d (need natten >= 0.20)")
            _NATTEN_MODULE = natten
        except Exception as exc:  # ImportError, or a broken build raising something else
            _NATTEN_MODULE = None
            _NATTEN_ERROR = f"{type(exc).__name__}: {exc}"
    return _NATTEN_MODULE


def natten_available() -> bool:
    """True when ``natten`` (>= 0.20, with ``natten.na1d``) can be imported."""
    return _import_natten() is not None


def available_backends() -> List[str]:
    """Names of the concrete backends usable on this machine (``"torch"`` is always there)."""
    backends = ["torch"]
    if natten_available():
        backends.append("natten")
    return backends


# --------------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------------
def _check_args(query, key, value, kernel_size, dilation, is_causal, scale, backend) -> None:
    if not isinstance(backend, str) or backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {list(_BACKENDS)}, got {backend!r}.")
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}.")
        if t.dim() != 4:
            raise ValueError(
                f"{name} must be 4-D [batch, length, heads, head_dim], got shape {tuple(t.shape)}."
            )
    if query.shape != key.shape:
        raise ValueError(
            f"query and key must have the same shape [batch, length, heads, head_dim], got "
            f"{tuple(query.shape)} and {tuple(key.shape)}."
        )
    if value.shape[:3] != key.shape[:3]:
        raise ValueError(
            f"value must match key in [batch, length, heads], got value {tuple(value.shape)} and "
            f"key {tuple(key.shape)}."
        )
    if query.dtype != key.dtype or query.dtype != value.dtype:
        raise ValueError(
            f"query, key and value must share a dtype, got {query.dtype}, {key.dtype}, {value.dtype}."
        )
    if query.device != key.device or query.device != value.device:
        raise ValueError(
            f"query, key and value must be on the same device, got {query.device}, {key.device}, "
            f"{value.device}."
        )
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int):
        raise ValueError(f"kernel_size must be an int, got {type(kernel_size).__name__}.")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}.")
    if isinstance(dilation, bool) or not isinstance(dilation, int):
        raise ValueError(f"dilation must be an int, got {type(dilation).__name__}.")
    if dilation < 1:
        raise ValueError(f"dilation must be >= 1, got {dilation}.")
    length = query.shape[1]
    if kernel_size * dilation > length:
        raise ValueError(
            f"kernel_size * dilation must be <= sequence length, got kernel_size={kernel_size}, "
            f"dilation={dilation} ({kernel_size * dilation}) > length={length}."
        )
    if not isinstance(is_causal, bool):
        raise ValueError(f"is_causal must be a bool, got {type(is_causal).__name__}.")
    if scale is not None:
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
            raise ValueError(f"scale must be a finite float or None, got {scale!r}.")


# --------------------------------------------------------------------------------------------
# Torch backend
# --------------------------------------------------------------------------------------------
def default_block_size(kernel_size: int) -> int:
    """Query-block size used by the torch backend (tuned on CPU, forward + backward).

    A key tile holds ``B + K - 1`` keys, so small blocks waste little work on masked scores but
    give small matmuls and more overhead; on a 2-core CPU the optimum is flat around
    ``B ~ K + 9`` (16 for K=7, 24 for K=15, 40 for K=31) and stops growing near 48.
    """
    return int(max(16, min(48, 8 * ((kernel_size + 9 + 7) // 8))))


@lru_cache(maxsize=64)
def _block_plan(
    length: int, kernel_size: int, dilation: int, is_causal: bool, block: int
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int, int]:
    """Index tensors (on CPU) describing the blocked computation.

    Returns ``(q_idx, kv_idx, allowed, out_idx, n_tiles, tile_w)`` where
      * ``q_idx``   [n_tiles * block]   token index of every (padded) query slot,
      * ``kv_idx``  [n_tiles * tile_w]  token index of every key slot of every tile,
      * ``allowed`` [n_tiles, block, tile_w] bool, True where the query attends to the key,
      * ``out_idx`` [length]  slot of each token's query in the flattened query slots.
    Tiles are ordered (group, block).
    """
    L, K, d, B = length, kernel_size, dilation, block
    r = K // 2
    n_max = -(-L // d)  # ceil(L / d): length of group 0 (the longest)
    nb = -(-n_max // B)  # query blocks per group
    W = min(B + K - 1, n_max)  # key-tile width

    g = torch.arange(d).view(d, 1, 1)
    n_g = (L - g + d - 1) // d  # [d,1,1]
    pos = (torch.arange(nb).view(1, nb, 1) * B + torch.arange(B).view(1, 1, B))  # [1,nb,B]
    # Padded query slots (in-group index >= n_g) reuse the last real query: their rows are
    # never read back, but they keep a non-empty window so no softmax row is all -inf.
    qpos = torch.minimum(pos, n_g - 1)  # [d,nb,B]
    if is_causal:
        lo = (qpos - K + 1).clamp_min(0)
        hi = qpos + 1
    else:
        lo = torch.minimum((qpos - r).clamp_min(0), n_g - K)
        hi = lo + K
    # Start of each tile: the first query's window start, pulled back so the tile fits the group.
    # Window starts/ends are non-decreasing within a block and span <= B + K - 1 keys.
    ks = torch.minimum(lo[:, :, :1], (n_g - W).clamp_min(0))  # [d,nb,1]
    kpos = ks + torch.arange(W).view(1, 1, W)  # [d,nb,W] in-group key position (may be >= n_g)
    allowed = (kpos.unsqueeze(2) >= lo.unsqueeze(3)) & (kpos.unsqueeze(2) < hi.unsqueeze(3))
    # Out-of-group key slots (only in shorter groups) are never allowed; point them at a valid token.
    kv_idx = torch.minimum(kpos, n_g - 1) * d + g
    q_idx = qpos * d + g
    tok = torch.arange(L)
    out_idx = (tok % d) * (nb * B) + tok // d
    n_tiles = d * nb
    return (
        q_idx.reshape(-1),
        kv_idx.reshape(-1),
        allowed.reshape(n_tiles, B, W),
        out_idx,
        n_tiles,
        W,
    )


_PLAN_ON_DEVICE: dict = {}


def _plan_on(device: torch.device, dtype: torch.dtype, *key):
    """Block plan with index tensors on ``device`` and an additive float mask of ``dtype``."""
    cache_key = (device, dtype) + key
    plan = _PLAN_ON_DEVICE.get(cache_key)
    if plan is None:
        # Cached plans outlive the call: built under torch.inference_mode() they would be inference tensors,
        # which autograd refuses to save later (predict first, then train, in one process).
        with torch.inference_mode(False):
            q_idx, kv_idx, allowed, out_idx, n_tiles, W = _block_plan(*key)
            bias = torch.zeros(allowed.shape, dtype=dtype)
            bias.masked_fill_(~allowed, float("-inf"))
            plan = (
                q_idx.to(device),
                kv_idx.to(device),
                bias.to(device),
                out_idx.to(device),
                n_tiles,
                W,
            )
        if len(_PLAN_ON_DEVICE) > 64:
            _PLAN_ON_DEVICE.clear()
        _PLAN_ON_DEVICE[cache_key] = plan
    return plan


def _na1d_torch_traced(query, key, value, kernel_size: int, dilation: int, is_causal: bool, scale: float):
    """The torch backend for a *symbolic* length (torch.export / ONNX export with a dynamic length).

    The blocked version computes its plan in Python from the concrete length (and caches it), which a
    traced graph cannot do for every length. Here each query's ``K`` neighbour indices are computed with
    tensor arithmetic on ``arange(L)`` (the definition in the module docstring) and gathered, so the
    graph holds no length-dependent Python control flow. Same result as the blocked version up to float
    rounding (the sums run in another order); memory ``L*K*D``, which is fine for inference.
    """
    if is_causal:
        raise NotImplementedError("causal neighborhood attention cannot be traced with a dynamic length")
    bsz, L, heads, dim = query.shape
    r = kernel_size // 2
    device = query.device
    tok = torch.arange(L, device=device)
    group = tok % dilation
    n_group = (L - group + dilation - 1) // dilation  # tokens in each query's dilation group
    centre = torch.minimum((tok // dilation).clamp_min(r), n_group - 1 - r)
    offsets = torch.arange(kernel_size, device=device) - r
    neighbours = ((centre[:, None] + offsets[None, :]) * dilation + group[:, None]).reshape(-1)  # (L*K,)
    k = key.index_select(1, neighbours).view(bsz, L, kernel_size, heads, dim)
    v = value.index_select(1, neighbours).view(bsz, L, kernel_size, heads, value.shape[-1])
    scores = torch.einsum("blhd,blkhd->blhk", query, k) * scale
    return torch.einsum("blhk,blkhd->blhd", torch.softmax(scores, dim=-1), v)


def _na1d_torch(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    kernel_size: int,
    dilation: int,
    is_causal: bool,
    scale: float,
    block_size: Optional[int] = None,
) -> torch.Tensor:
    bsz, L, heads, dim = query.shape
    if isinstance(L, torch.SymInt):  # traced with a dynamic length: no Python plan for every length
        return _na1d_torch_traced(query, key, value, kernel_size, dilation, is_causal, scale)
    dim_v = value.shape[-1]
    B = int(block_size) if block_size is not None else default_block_size(kernel_size)
    q_idx, kv_idx, bias, out_idx, n_tiles, W = _plan_on(
        query.device, query.dtype, L, kernel_size, dilation, is_causal, B
    )
    # [batch, heads, length, dim] so that the token gathers below yield contiguous tiles.
    q = query.transpose(1, 2)
    k = key.transpose(1, 2)
    v = value.transpose(1, 2)
    if dilation == 1 and n_tiles * B == L:
        q_t = q.reshape(bsz, heads, n_tiles, B, dim)
    elif dilation == 1:
        q_t = F.pad(q, (0, 0, 0, n_tiles * B - L)).view(bsz, heads, n_tiles, B, dim)
    else:
        q_t = q.index_select(2, q_idx).view(bsz, heads, n_tiles, B, dim)
    k_t = k.index_select(2, kv_idx).view(bsz, heads, n_tiles, W, dim)
    v_t = v.index_select(2, kv_idx).view(bsz, heads, n_tiles, W, dim_v)

    # bias + scale * (q k^T) in one op; bias is 0 inside each query's window and -inf elsewhere.
    scores = torch.add(bias, torch.matmul(q_t, k_t.transpose(-1, -2)), alpha=scale)  # [b,h,tiles,B,W]
    probs = torch.softmax(scores, dim=-1)
    out = torch.matmul(probs, v_t).view(bsz, heads, n_tiles * B, dim_v)
    if dilation == 1:
        out = out[:, :, :L]
    else:
        out = out.index_select(2, out_idx)
    return out.transpose(1, 2).contiguous()


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------
def neighborhood_attention_1d(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    kernel_size: int,
    dilation: int = 1,
    is_causal: bool = False,
    scale: Optional[float] = None,
    backend: str = "auto",
) -> torch.Tensor:
    """1-D neighborhood attention over ``[batch, length, heads, head_dim]`` tensors.

    Args:
        query, key, value: ``[batch, length, heads, head_dim]`` (value may have its own head dim
            with the torch backend).
        kernel_size: odd window size ``K``.
        dilation: dilation ``d``; ``K * d`` must not exceed ``length``.
        is_causal: attend only to the current and the ``K - 1`` previous in-group tokens.
        scale: softmax scale, default ``head_dim ** -0.5``.
        backend: ``"auto"`` (NATTEN when importable and the tensors are on CUDA, else torch),
            ``"torch"`` (plain PyTorch, any device, forward and backward) or ``"natten"``.

    Returns:
        ``[batch, length, heads, head_dim_v]`` tensor.
    """
    _check_args(query, key, value, kernel_size, dilation, is_causal, scale, backend)
    if scale is None:
        scale = query.shape[-1] ** -0.5
    scale = float(scale)

    if backend == "auto":
        backend = "natten" if (query.is_cuda and natten_available()) else "torch"

    if backend == "natten":
        natten = _import_natten()
        if natten is None:
            raise RuntimeError(
                "backend='natten' was requested but natten cannot be imported "
                f"({_NATTEN_ERROR}). Install it with `pip install --no-build-isolation natten` "
                "or use backend='torch'."
            )
        if kernel_size < 2:
            raise ValueError("backend='natten' needs kernel_size >= 3 (natten rejects kernel_size=1).")
        return natten.na1d(
            query, key, value, kernel_size=kernel_size, dilation=dilation, is_causal=is_causal,
            scale=scale,
        )

    return _na1d_torch(query, key, value, kernel_size, dilation, is_causal, scale)
