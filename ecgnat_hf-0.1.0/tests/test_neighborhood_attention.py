"""Tests for the 1-D neighborhood attention operation (ecgnat_hf.neighborhood_attention)."""
from __future__ import annotations

import ast
import itertools
import warnings
from pathlib import Path

import pytest
import torch

from ecgnat_hf import neighborhood_attention as na_mod
from ecgnat_hf.neighborhood_attention import (
    available_backends,
    natten_available,
    neighborhood_attention_1d,
)


# ---------------------------------------------------------------------------------------------
# Brute-force reference: an explicit loop over queries, windows built from the definition.
# ---------------------------------------------------------------------------------------------
def _window(i: int, length: int, kernel_size: int, dilation: int, is_causal: bool) -> list[int]:
    g, ip = i % dilation, i // dilation
    n_g = -(-(length - g) // dilation)  # ceil((L - g) / d)
    if is_causal:
        return [t * dilation + g for t in range(max(ip - kernel_size + 1, 0), ip + 1)]
    left = right = kernel_size // 2
    c = min(max(ip, left), n_g - 1 - right)
    return [(c - left + t) * dilation + g for t in range(kernel_size)]


def reference_na1d(q, k, v, kernel_size, dilation=1, is_causal=False, scale=None):
    length = q.shape[1]
    if scale is None:
        scale = q.shape[-1] ** -0.5
    out = torch.empty(q.shape[:3] + (v.shape[-1],), dtype=q.dtype)
    for i in range(length):
        idx = _window(i, length, kernel_size, dilation, is_causal)
        if not is_causal:
            assert len(idx) == kernel_size and len(set(idx)) == kernel_size
            assert all(0 <= j < length for j in idx)
        logits = torch.einsum("bhd,bjhd->bhj", q[:, i], k[:, idx]) * scale
        out[:, i] = torch.einsum("bhj,bjhd->bhd", logits.softmax(-1), v[:, idx])
    return out


def _qkv(length, heads=2, dim=4, batch=2, dtype=torch.float64, dim_v=None):
    q = torch.randn(batch, length, heads, dim, dtype=dtype)
    k = torch.randn(batch, length, heads, dim, dtype=dtype)
    v = torch.randn(batch, length, heads, dim if dim_v is None else dim_v, dtype=dtype)
    return q, k, v


def test_reference_window_definition():
    # Borders shift inward: the first queries all share [0, K); the last ones share [L-K, L).
    assert _window(0, 10, 5, 1, False) == [0, 1, 2, 3, 4]
    assert _window(2, 10, 5, 1, False) == [0, 1, 2, 3, 4]
    assert _window(5, 10, 5, 1, False) == [3, 4, 5, 6, 7]
    assert _window(9, 10, 5, 1, False) == [5, 6, 7, 8, 9]
    # Dilation 3, L=10: group 1 is {1, 4, 7}; group 0 {0, 3, 6, 9}.
    assert _window(1, 10, 3, 3, False) == [1, 4, 7]
    assert _window(9, 10, 3, 3, False) == [3, 6, 9]
    assert _window(0, 10, 3, 3, True) == [0]
    assert _window(9, 10, 3, 3, True) == [3, 6, 9]


# ---------------------------------------------------------------------------------------------
# Torch backend == brute force (float64)
# ---------------------------------------------------------------------------------------------
_GRID = [
    (length, k, d, causal)
    for length, k, d, causal in itertools.product(
        [3, 7, 8, 13, 17, 30, 41, 70], [1, 3, 5, 7, 9], [1, 2, 3, 4], [False, True]
    )
    if k * d <= length
]


@pytest.mark.parametrize("length,kernel_size,dilation,is_causal", _GRID)
def test_torch_backend_matches_reference(length, kernel_size, dilation, is_causal):
    q, k, v = _qkv(length)
    out = neighborhood_attention_1d(q, k, v, kernel_size, dilation, is_causal, backend="torch")
    ref = reference_na1d(q, k, v, kernel_size, dilation, is_causal)
    assert out.shape == q.shape
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=0)


@pytest.mark.parametrize("block_size", [1, 2, 3, 8, 64])
@pytest.mark.parametrize("dilation,is_causal", [(1, False), (3, False), (2, True)])
def test_torch_backend_any_block_size(block_size, dilation, is_causal):
    # The blocking is an implementation detail: every block size gives the same result.
    length, kernel_size = 29, 5
    q, k, v = _qkv(length)
    out = na_mod._na1d_torch(q, k, v, kernel_size, dilation, is_causal, 0.3, block_size)
    ref = reference_na1d(q, k, v, kernel_size, dilation, is_causal, scale=0.3)
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=0)


def test_kernel_equal_to_length_is_global_attention():
    q, k, v = _qkv(9)
    out = neighborhood_attention_1d(q, k, v, 9)
    ref = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    ).transpose(1, 2)
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=0)


def test_custom_scale_and_value_head_dim():
    q, k, v = _qkv(23, dim=4, dim_v=6)
    out = neighborhood_attention_1d(q, k, v, 5, dilation=2, scale=1.7)
    assert out.shape == (2, 23, 2, 6)
    torch.testing.assert_close(out, reference_na1d(q, k, v, 5, 2, scale=1.7), atol=1e-10, rtol=0)


def test_float32_and_noncontiguous_inputs():
    base = torch.randn(1, 4, 37, 8)  # [b, h, L, D] -> transposed views, non-contiguous
    q = base.transpose(1, 2)
    k = (base * 0.5).transpose(1, 2)
    v = torch.randn(1, 4, 37, 8).transpose(1, 2)
    out = neighborhood_attention_1d(q, k, v, 7, dilation=2)
    assert out.dtype == torch.float32 and out.is_contiguous()
    ref = reference_na1d(q.double(), k.double(), v.double(), 7, 2).float()
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "length,kernel_size,dilation,is_causal",
    [(11, 3, 1, False), (13, 3, 2, False), (14, 5, 2, True), (10, 3, 3, False), (9, 3, 1, True)],
)
def test_gradcheck(length, kernel_size, dilation, is_causal):
    q, k, v = (t.requires_grad_() for t in _qkv(length, heads=2, dim=3, batch=1))

    def fn(q_, k_, v_):
        return neighborhood_attention_1d(q_, k_, v_, kernel_size, dilation, is_causal, backend="torch")

    assert torch.autograd.gradcheck(fn, (q, k, v), eps=1e-6, atol=1e-6)


def test_gradients_match_reference():
    q, k, v = (t.requires_grad_() for t in _qkv(19))
    g = torch.randn(2, 19, 2, 4, dtype=torch.float64)
    grads = torch.autograd.grad(neighborhood_attention_1d(q, k, v, 5, 3), (q, k, v), g)
    grads_ref = torch.autograd.grad(reference_na1d(q, k, v, 5, 3), (q, k, v), g)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


# ---------------------------------------------------------------------------------------------
# NATTEN (CPU flex backend, forward only)
# ---------------------------------------------------------------------------------------------
_NATTEN_CASES = [
    (16, 3, 1, False),
    (33, 5, 1, False),
    (33, 5, 1, True),
    (40, 7, 2, False),
    (41, 7, 2, True),
    (29, 3, 3, False),
    (30, 5, 4, False),
    (23, 5, 4, True),
    (64, 9, 3, False),
    (22, 5, 4, False),
    (21, 7, 3, False),  # K * d == L, groups of exactly K tokens
]


@pytest.mark.parametrize("length,kernel_size,dilation,is_causal", _NATTEN_CASES)
@pytest.mark.parametrize("dim", [16, 32])
def test_matches_natten_flex_cpu(length, kernel_size, dilation, is_causal, dim):
    natten = pytest.importorskip(
        "natten", reason="natten is not installed: the cross-check against natten.na1d is skipped"
    )
    q, k, v = _qkv(length, heads=2, dim=dim, batch=1, dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # flex_attention warns when run without torch.compile
        ref = natten.na1d(
            q, k, v, kernel_size=kernel_size, dilation=dilation, is_causal=is_causal,
            backend="flex-fna",
        )
    out = neighborhood_attention_1d(q, k, v, kernel_size, dilation, is_causal, backend="torch")
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_natten_backend_on_cpu_matches_torch():
    pytest.importorskip("natten", reason="natten is not installed")
    q, k, v = _qkv(24, heads=2, dim=16, batch=1, dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = neighborhood_attention_1d(q, k, v, 5, 2, backend="natten")
    torch.testing.assert_close(out, neighborhood_attention_1d(q, k, v, 5, 2), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Backends and validation
# ---------------------------------------------------------------------------------------------
def test_available_backends():
    backends = available_backends()
    assert backends[0] == "torch"
    assert ("natten" in backends) == natten_available()


def test_auto_picks_torch_on_cpu(monkeypatch):
    called = []
    real = na_mod._na1d_torch
    monkeypatch.setattr(na_mod, "_na1d_torch", lambda *a, **kw: called.append(1) or real(*a, **kw))
    q, k, v = _qkv(12, dtype=torch.float32)
    neighborhood_attention_1d(q, k, v, 3)  # default backend="auto"
    assert called == [1]


def test_natten_backend_missing_raises(monkeypatch):
    monkeypatch.setattr(na_mod, "_import_natten", lambda: None)
    assert not na_mod.natten_available()
    assert na_mod.available_backends() == ["torch"]
    q, k, v = _qkv(12, dtype=torch.float32)
    with pytest.raises(RuntimeError, match="natten cannot be imported"):
        neighborhood_attention_1d(q, k, v, 3, backend="natten")
    # auto still works (falls back to torch)
    neighborhood_attention_1d(q, k, v, 3, backend="auto")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(kernel_size=4), "odd"),
        (dict(kernel_size=0), "odd"),
        (dict(kernel_size=-3), "odd"),
        (dict(kernel_size=3.0), "kernel_size must be an int"),
        (dict(kernel_size=13), "kernel_size \\* dilation must be <= sequence length"),
        (dict(kernel_size=5, dilation=3), "kernel_size \\* dilation must be <= sequence length"),
        (dict(kernel_size=3, dilation=0), "dilation must be >= 1"),
        (dict(kernel_size=3, backend="cuda"), "backend must be one of"),
        (dict(kernel_size=3, is_causal=1), "is_causal must be a bool"),
        (dict(kernel_size=3, scale=float("nan")), "scale must be"),
    ],
)
def test_validation_errors(kwargs, match):
    q, k, v = _qkv(12, dtype=torch.float32)
    with pytest.raises(ValueError, match=match):
        neighborhood_attention_1d(q, k, v, **kwargs)


def test_shape_validation():
    q, k, v = _qkv(12, dtype=torch.float32)
    with pytest.raises(ValueError, match="4-D"):
        neighborhood_attention_1d(q[0], k[0], v[0], 3)
    with pytest.raises(ValueError, match="query and key must have the same shape"):
        neighborhood_attention_1d(q, k[:, :10], v, 3)
    with pytest.raises(ValueError, match="value must match key"):
        neighborhood_attention_1d(q, k, v[:, :10], 3)
    with pytest.raises(ValueError, match="share a dtype"):
        neighborhood_attention_1d(q, k, v.double(), 3)


def test_module_is_hub_safe():
    """The module is copied next to checkpoints: only torch / stdlib imports, natten lazily."""
    source = Path(na_mod.__file__).read_text()
    tree = ast.parse(source)
    allowed = {"torch", "math", "typing", "functools", "__future__"}
    for node in tree.body:  # module-level imports only
        if isinstance(node, ast.Import):
            for alias in node.names:
                assert alias.name.split(".")[0] in allowed, alias.name
        elif isinstance(node, ast.ImportFrom):
            assert node.module.split(".")[0] in allowed, node.module
    assert "ecgnat_hf" not in "\n".join(
        line for line in source.splitlines() if "import" in line
    )


def test_module_works_when_copied_flat(tmp_path):
    """Loaded from a standalone file (as trust_remote_code does), without the ecgnat_hf package."""
    import importlib.util
    import shutil

    path = tmp_path / "neighborhood_attention.py"
    shutil.copy(na_mod.__file__, path)
    spec = importlib.util.spec_from_file_location("hub_copy_neighborhood_attention", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    q, k, v = _qkv(15)
    out = mod.neighborhood_attention_1d(q, k, v, 5, dilation=2, is_causal=True)
    torch.testing.assert_close(out, reference_na1d(q, k, v, 5, 2, True), atol=1e-10, rtol=0)


def test_plan_built_in_inference_mode_can_train_later():
    """Predict first (inference mode), then train with the same shapes in one process."""
    q = torch.randn(1, 37, 2, 8)
    with torch.inference_mode():
        neighborhood_attention_1d(q, q, q, kernel_size=5, dilation=3)
    x = q.clone().requires_grad_(True)
    neighborhood_attention_1d(x, x, x, kernel_size=5, dilation=3).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
