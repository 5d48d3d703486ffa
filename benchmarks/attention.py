"""Benchmark 1-D neighborhood attention against global attention (SDPA) and natten on CPU.

For each length L it times, with the same q/k/v of shape [batch, L, heads, head_dim]:
  (a) our torch neighborhood attention, forward + backward
  (b) global attention, torch.nn.functional.scaled_dot_product_attention, forward + backward
  (c) natten.na1d with the flex backend, forward only (natten has no CPU backward)
  (d) our torch neighborhood attention, forward only (no grad)
  (e) SDPA forward only (no grad), the reference for the forward-only ratios
It prints a markdown table of median milliseconds (after warm-up) and speed-ups against SDPA
measured in the same run (speed-up = sdpa_ms / other_ms; > 1 means faster than SDPA).

Usage:
    python benchmarks/attention.py [--lengths 1250 5000 20000] [--repeats 5] [--threads 2]
"""
from __future__ import annotations

import os

# Pin BLAS/OpenMP pools before numpy/torch are imported (torch's own pool is set below).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

try:
    from ecgnat_hf.neighborhood_attention import default_block_size, neighborhood_attention_1d
except ImportError:  # running from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from ecgnat_hf.neighborhood_attention import default_block_size, neighborhood_attention_1d


def _time_interleaved(fns: dict, repeats: int, warmup: int, stat: str) -> dict:
    """Time several callables in round-robin (one call of each per round), so that a change in
    machine load hits all of them alike; returns {name: ms} (median or min over the rounds)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    agg = statistics.median if stat == "median" else min
    return {name: agg(ts) * 1e3 for name, ts in times.items()}


def _fmt_ms(ms) -> str:
    if ms is None:
        return "skipped"
    return f"{ms:,.1f}" if ms >= 10 else f"{ms:.2f}"


def _fmt_ratio(ref, ms) -> str:
    if ms is None or ref is None:
        return "-"
    return f"{ref / ms:.2f}x"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=[1250, 5000, 20000])
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement (median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls before timing")
    p.add_argument(
        "--stat", choices=("median", "min"), default="median",
        help="aggregate over the timed rounds (min is less sensitive to a busy machine)",
    )
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=32)
    p.add_argument("--kernel-size", type=int, default=15)
    p.add_argument("--dilation", type=int, default=1)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument(
        "--natten-budget-s", type=float, default=60.0,
        help="skip natten at a length when its estimated time (warm-up + repeats, extrapolated "
             "quadratically from the previous length) exceeds this many seconds",
    )
    p.add_argument("--no-natten", action="store_true", help="never run natten")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    try:
        import natten  # noqa: F401

        natten_version = getattr(natten, "__version__", "?")
    except Exception:  # natten missing or broken
        natten = None
        natten_version = None
    use_natten = natten is not None and not args.no_natten

    K, d = args.kernel_size, args.dilation
    print(
        f"# 1-D neighborhood attention benchmark\n"
        f"torch {torch.__version__}, natten {natten_version or 'not installed'}, "
        f"{platform.processor() or platform.machine()}, torch threads={torch.get_num_threads()}\n"
        f"batch={args.batch}, heads={args.heads}, head_dim={args.head_dim}, kernel_size={K}, "
        f"dilation={d}, block size={default_block_size(K)}, float32, {args.stat} of {args.repeats} "
        f"interleaved rounds after {args.warmup} warm-up calls\n",
        flush=True,
    )

    rows = []
    notes = []
    last_natten = None  # (length, ms)
    for L in args.lengths:
        shape = (args.batch, L, args.heads, args.head_dim)
        q, k, v = (torch.randn(shape, requires_grad=True) for _ in range(3))
        grad_out = torch.randn(shape)

        def na_fwd_bwd():
            out = neighborhood_attention_1d(q, k, v, K, d, backend="torch")
            out.backward(grad_out)

        def sdpa_fwd_bwd():
            out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
            out.transpose(1, 2).backward(grad_out)

        def na_fwd():
            with torch.no_grad():
                neighborhood_attention_1d(q, k, v, K, d, backend="torch")

        def sdpa_fwd():
            with torch.no_grad():
                F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))

        # flex_attention on CPU refuses inputs that require grad, even under no_grad
        qd, kd, vd = q.detach(), k.detach(), v.detach()

        def natten_fwd():
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                natten.na1d(qd, kd, vd, kernel_size=K, dilation=d, backend="flex-fna")

        r = {"L": L}
        r.update(
            _time_interleaved(
                {"na_fb": na_fwd_bwd, "sdpa_fb": sdpa_fwd_bwd, "na_f": na_fwd, "sdpa_f": sdpa_fwd},
                args.repeats, args.warmup, args.stat,
            )
        )
        r["natten_f"] = None
        if use_natten:
            est_s = None
            if last_natten is not None:
                prev_L, prev_ms = last_natten
                est_s = prev_ms * (L / prev_L) ** 2 * (args.repeats + 1) / 1e3
            if est_s is not None and est_s > args.natten_budget_s:
                notes.append(
                    f"natten flex skipped at L={L:,}: estimated {est_s:,.0f} s for "
                    f"{args.repeats + 1} calls (quadratic extrapolation from L={last_natten[0]:,}) "
                    f"> --natten-budget-s {args.natten_budget_s:g}"
                )
            else:
                r["natten_f"] = _time_interleaved({"n": natten_fwd}, args.repeats, 1, args.stat)["n"]
                last_natten = (L, r["natten_f"])
        rows.append(r)
        print(
            f"L={L}: NA f+b {_fmt_ms(r['na_fb'])} ms, SDPA f+b {_fmt_ms(r['sdpa_fb'])} ms, "
            f"NA fwd {_fmt_ms(r['na_f'])} ms, SDPA fwd {_fmt_ms(r['sdpa_f'])} ms, "
            f"natten fwd {_fmt_ms(r['natten_f'])} ms",
            file=sys.stderr, flush=True,
        )
        del q, k, v, qd, kd, vd, grad_out

    print(
        "| tokens L | NA torch fwd+bwd (ms) | SDPA fwd+bwd (ms) | speed-up fwd+bwd | "
        "NA torch fwd (ms) | SDPA fwd (ms) | speed-up fwd | natten flex fwd (ms) | natten speed-up fwd |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['L']:,} | {_fmt_ms(r['na_fb'])} | {_fmt_ms(r['sdpa_fb'])} | "
            f"{_fmt_ratio(r['sdpa_fb'], r['na_fb'])} | {_fmt_ms(r['na_f'])} | {_fmt_ms(r['sdpa_f'])} | "
            f"{_fmt_ratio(r['sdpa_f'], r['na_f'])} | {_fmt_ms(r['natten_f'])} | "
            f"{_fmt_ratio(r['sdpa_f'], r['natten_f'])} |"
        )
    print("\nspeed-up = SDPA ms / other ms in the same run (> 1: faster than global attention).")
    if not use_natten:
        print("natten: " + ("disabled (--no-natten)" if natten is not None else "not installed"))
    for n in notes:
        print(n)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
