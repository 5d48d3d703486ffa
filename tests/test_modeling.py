"""ECG-NAT config, encoder, pretraining and classification heads, transformers integration."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForPreTraining,
    AutoModelForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

import ecgnat_hf  # noqa: F401  (registers the Auto classes)
from ecgnat_hf import (
    ECGNATConfig,
    ECGNATFeatureExtractor,
    ECGNATForPreTraining,
    ECGNATForSequenceClassification,
    ECGNATModel,
)
from ecgnat_hf.modeling_ecgnat import augment_signal, random_lead_mask, supervised_contrastive_loss

from helpers import load_ptbxl

TINY = dict(drop_path_rate=0.0)


def tiny(**kw) -> ECGNATConfig:
    return ECGNATConfig.from_preset("tiny", **{**TINY, **kw})


# ----------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(hidden_sizes=[30, 64, 128], num_heads=[4, 2, 4]), "multiple of num_heads"),
        (dict(kernel_sizes=[14, 15, 15]), "kernel size must be odd"),
        (dict(depths=[1, 1]), "depths has 2 stages"),
        (dict(dilations=[[1], [1], [1]]), "dilations given for 2 blocks"),
        (dict(mask_ratio=1.0), "mask_ratio"),
        (dict(mask_unit_size=6), "multiple of the coarsest stride"),
        (dict(lead_names=["I", "I"]), "duplicates"),
        (dict(sampling_rate=0), "sampling_rate"),
        (dict(lead_mask_prob=1.0), "lead_mask_prob"),
        (dict(supcon_temperature=0.0), "supcon_temperature"),
        (dict(lead_fusion="max"), "lead_fusion"),
        (dict(drop_path_rate=1.5), "drop_path_rate"),
        (dict(attn_implementation="flash"), "attn_implementation"),
        (dict(classifier_pooling="cls"), "classifier_pooling"),
        (dict(finetune_lead_mask_prob=1.0), "finetune_lead_mask_prob"),
        (dict(stem_hidden_size=1), "stem_hidden_size"),
        (dict(stem_norm="batch"), "stem_norm"),
        (dict(finetune_amplitude_scale=1.0), "finetune_amplitude_scale"),
        (dict(finetune_noise_std=-0.1), "finetune_noise_std"),
        (dict(finetune_noise_std=float("nan")), "finetune_noise_std"),
        (dict(finetune_time_shift_s=-1.0), "finetune_time_shift_s"),
        (dict(finetune_baseline_wander=float("inf")), "finetune_baseline_wander"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ECGNATConfig.from_preset("tiny", **kwargs)


def test_presets_and_round_trip(tmp_path):
    counts = {}
    for name in ("tiny", "small", "base"):
        config = ECGNATConfig.from_preset(name)
        counts[name] = sum(p.numel() for p in ECGNATModel(config).parameters())
        config.save_pretrained(tmp_path / name)
        loaded = AutoConfig.from_pretrained(tmp_path / name)
        assert isinstance(loaded, ECGNATConfig)
        drop = {"_name_or_path"}
        assert {k: v for k, v in loaded.to_dict().items() if k not in drop} == {
            k: v for k, v in config.to_dict().items() if k not in drop
        }
    assert counts["tiny"] < counts["small"] < counts["base"]
    assert counts["tiny"] < 1_000_000
    with pytest.raises(ValueError, match="Unknown ECG-NAT preset"):
        ECGNATConfig.from_preset("huge")


def test_stem_norm_options_and_old_configs(tmp_path):
    """'token' LayerNorms every lead's stem token (a flat stretch and a QRS enter the fusion equally big);
    'fused' keeps only the fused token's norm; 'none' neither. Configs saved before the option load as
    'token', so older checkpoints keep their architecture."""
    norms = {}
    for option in ("token", "fused", "none"):
        stem = ECGNATModel(ECGNATConfig.from_preset("tiny", stem_norm=option)).stem
        norms[option] = (isinstance(stem.norm, torch.nn.LayerNorm), isinstance(stem.fusion_norm, torch.nn.LayerNorm))
    assert norms == {"token": (True, True), "fused": (False, True), "none": (False, False)}
    assert ECGNATConfig.from_preset("tiny").stem_norm == "fused"
    config = ECGNATConfig.from_preset("tiny").to_dict()
    config.pop("stem_norm")
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert AutoConfig.from_pretrained(tmp_path).stem_norm == "token"
    # with no per-lead token norm, the size of a lead reaches the trunk: doubling lead II changes the tokens
    model = ECGNATModel(ECGNATConfig.from_preset("tiny", stem_norm="fused")).eval()
    x = torch.randn(1, 12, 1000)
    y = x.clone()
    y[:, 1] *= 2
    with torch.no_grad():
        assert not torch.allclose(model(x).last_hidden_state, model(y).last_hidden_state, atol=1e-3)


# ----------------------------------------------------------------------------------------------- encoder
def test_missing_leads_do_not_influence_output():
    model = ECGNATModel(tiny()).eval()
    x = torch.randn(3, 12, 1000)
    lead_mask = torch.ones(3, 12, dtype=torch.bool)
    lead_mask[0, 3:] = False  # limb leads I, II, III only
    lead_mask[1, [0, 2, 5, 7, 11]] = False
    lead_mask[2, :] = False
    lead_mask[2, 1] = True  # lead II alone
    garbage = x.clone()
    garbage[~lead_mask] = torch.randn(int((~lead_mask).sum()), 1000) * 1e4
    garbage[0, 11, 10] = float("nan")
    with torch.no_grad():
        a = model(x, lead_mask=lead_mask, output_lead_weights=True)
        b = model(garbage, lead_mask=lead_mask, output_lead_weights=True)
    assert torch.equal(a.last_hidden_state, b.last_hidden_state)
    assert torch.equal(a.pooler_output, b.pooler_output)
    # absent leads get exactly zero fusion weight; present ones sum to one at each token
    w = a.lead_fusion_weights
    assert torch.all(w[~lead_mask[:, None, :].expand_as(w)] == 0)
    torch.testing.assert_close(w.sum(-1), torch.ones_like(w.sum(-1)))
    # ...and the output really depends on the present leads
    changed = x.clone()
    changed[0, 0] += 1.0
    with torch.no_grad():
        c = model(changed, lead_mask=lead_mask)
    assert not torch.allclose(c.pooler_output[0], a.pooler_output[0])


def test_batch_sharing_its_leads_skips_the_absent_leads_with_the_same_result():
    """A batch whose samples all have the same leads (a 2-lead Holter) runs the stem on those leads only; the
    output, the reported fusion weights and the gradients equal the path that runs all 12 (mixed batches)."""
    from ecgnat_hf.models.ecgnat.modeling_ecgnat import ECGNATStem

    torch.manual_seed(0)
    model = ECGNATForSequenceClassification(tiny(num_labels=3)).train()
    model.config.finetune_lead_mask_prob = 0.0
    x = torch.randn(4, 12, 600)
    lead_mask = torch.zeros(4, 12, dtype=torch.bool)
    lead_mask[:, [1, 10]] = True  # II and V5 in every sample
    assert torch.equal(ECGNATStem._shared_present_leads(lead_mask), torch.tensor([1, 10]))
    assert ECGNATStem._shared_present_leads(torch.ones(4, 12, dtype=torch.bool)) is None  # nothing to skip
    mixed = lead_mask.clone()
    mixed[0, 0] = True
    assert ECGNATStem._shared_present_leads(mixed) is None  # samples differ: the general path

    def run(fast: bool):
        model.zero_grad()
        original = ECGNATStem.__dict__["_shared_present_leads"]
        if not fast:
            ECGNATStem._shared_present_leads = staticmethod(lambda mask: None)
        try:
            out = model(x, lead_mask=lead_mask, labels=torch.tensor([0, 1, 2, 0]), output_lead_weights=True)
            out.loss.backward()
        finally:
            ECGNATStem._shared_present_leads = original
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return out, grads

    torch.manual_seed(1)
    fast, fast_grads = run(True)
    torch.manual_seed(1)
    full, full_grads = run(False)
    torch.testing.assert_close(fast.logits, full.logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(fast.lead_fusion_weights, full.lead_fusion_weights, rtol=0, atol=1e-7)
    assert torch.all(fast.lead_fusion_weights[..., ~lead_mask[0]] == 0)
    assert fast_grads.keys() == full_grads.keys()
    for name in full_grads:
        torch.testing.assert_close(fast_grads[name], full_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_lead_fusion_equals_projecting_each_lead():
    """The fused token is sum_l w_l (W_l h_l + b_l), whatever the stem width (narrow stem, wide fusion)."""
    from ecgnat_hf.modeling_ecgnat import ECGNATStem

    config = tiny(stem_hidden_size=16, hidden_sizes=[48, 64, 128], num_heads=[2, 2, 4])
    stem = ECGNATStem(config).eval()
    with torch.no_grad():
        stem.lead_projection_bias.normal_()
    x = torch.randn(2, 12, 400)
    lead_mask = torch.ones(2, 12, dtype=torch.bool)
    lead_mask[1, 4:] = False
    with torch.no_grad():
        fused, weights = stem(x, lead_mask)
        h = stem.conv2(stem.act(stem.conv1(x.reshape(24, 1, 400))))
        h = stem.norm(h.transpose(1, 2).reshape(2, 12, h.shape[-1], 16)) + stem.lead_embeddings[None, :, None, :]
        projected = torch.einsum("bnlc,ncd->bnld", h, stem.lead_projection) + stem.lead_projection_bias[None, :, None]
        reference = stem.fusion_norm(torch.einsum("bln,bnld->bld", weights, projected))
    assert fused.shape == (2, 200, 48) and weights.shape == (2, 200, 12)
    torch.testing.assert_close(fused, reference, rtol=1e-4, atol=1e-5)


def test_mean_max_pooling_covers_real_tokens_only():
    config = tiny(classifier_pooling="mean_max", num_labels=3)
    model = ECGNATForSequenceClassification(config).eval()
    x = torch.randn(2, 12, 1000)
    with torch.no_grad():
        out = model(x, output_hidden_states=True)
        enc = model.ecgnat(x)
    assert out.pooler_output.shape == (2, 2 * config.hidden_size)
    valid = enc.token_mask[0]
    torch.testing.assert_close(out.pooler_output[:, config.hidden_size:], enc.last_hidden_state[:, valid].amax(1))
    # an input that is not a multiple of the mask unit: padded tokens never win the max
    short = x[..., :999]
    with torch.no_grad():
        enc = model.ecgnat(short)
        pooled = model(short).pooler_output
    assert not bool(enc.token_mask[0].all())
    torch.testing.assert_close(pooled[:, config.hidden_size:], enc.last_hidden_state[:, enc.token_mask[0]].amax(1))


def test_finetune_lead_masking_only_in_training():
    config = tiny(finetune_lead_mask_prob=0.5, num_labels=2, classifier_dropout=0.0, supcon_weight=0.0)
    model = ECGNATForSequenceClassification(config)
    x = torch.randn(4, 12, 800)
    model.eval()
    with torch.no_grad():
        a, b = model(x).logits, model(x).logits
    assert torch.equal(a, b)  # inference is deterministic: no lead is hidden
    model.train()
    torch.manual_seed(1)
    with torch.no_grad():
        c = model(x).logits
    assert not torch.allclose(a, c)  # training hides random leads


@pytest.mark.parametrize("length", [160, 999, 1000, 2345, 6000])
def test_any_input_length(length):
    config = tiny()
    model = ECGNATModel(config).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 12, length), output_hidden_states=True)
    tokens = math.ceil(length / (config.patch_size * config.mask_unit_size)) * config.mask_unit_size // 4
    assert out.last_hidden_state.shape == (2, tokens, config.hidden_size)
    assert out.pooler_output.shape == (2, config.hidden_size)
    assert len(out.hidden_states) == 1 + config.num_stages
    assert int(out.token_mask[0].sum()) == math.ceil(length / config.total_stride)
    assert torch.isfinite(out.pooler_output).all()


def test_input_errors():
    model = ECGNATModel(tiny())
    with pytest.raises(ValueError, match="expects 12"):
        model(torch.randn(1, 2, 1000))
    with pytest.raises(ValueError, match=r"\(batch, leads, samples\)"):
        model(torch.randn(12, 1000))
    with pytest.raises(ValueError, match="at least one present lead"):
        model(torch.randn(1, 12, 1000), lead_mask=torch.zeros(1, 12))


def test_attn_implementation_selects_backend(monkeypatch, tmp_path):
    import ecgnat_hf.modeling_ecgnat as modeling

    seen = []
    original = modeling.neighborhood_attention_1d

    def spy(*args, backend="auto", **kwargs):
        seen.append(backend)
        return original(*args, backend="torch", **kwargs)

    monkeypatch.setattr(modeling, "neighborhood_attention_1d", spy)
    ECGNATModel(tiny()).save_pretrained(tmp_path)
    for impl, expected in [(None, "auto"), ("na_torch", "torch"), ("natten", "natten")]:
        seen.clear()
        kwargs = {} if impl is None else {"attn_implementation": impl}
        model = AutoModel.from_pretrained(tmp_path, **kwargs)
        model(torch.randn(1, 12, 400))
        assert seen and set(seen) == {expected}, (impl, seen)


def test_gradient_checkpointing_matches():
    torch.manual_seed(0)
    config = tiny(num_labels=3, finetune_lead_mask_prob=0.0)  # no random augmentation: two passes must agree
    model = ECGNATForSequenceClassification(config).train()
    model.config.classifier_dropout = 0.0
    model.dropout.p = 0.0
    x, y = torch.randn(4, 12, 500), torch.tensor([0, 1, 2, 1])
    model(x, labels=y).loss.backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert model.ecgnat.stages[0].layers[0].gradient_checkpointing
    model(x, labels=y).loss.backward()
    for name, grad in ref.items():
        torch.testing.assert_close(model.get_parameter(name).grad, grad, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------- pretraining
def test_reconstruction_loss_ignores_unmasked_patches():
    torch.manual_seed(0)
    model = ECGNATForPreTraining(tiny(norm_target=True)).eval()
    x = torch.randn(2, 12, 1024)
    lead_mask = torch.ones(2, 12, dtype=torch.bool)
    lead_mask[1, 6:] = False  # chest leads absent in the second recording: never in the loss
    out = model(x, lead_mask=lead_mask)
    mask = out.mask.bool()
    assert not mask[1, 6:].any()
    assert 0.5 < mask[0].float().mean() < 1.0
    target = x * lead_mask[:, :, None]
    weights = model.loss_weights(out.time_mask, lead_mask, out.encoder_lead_mask, 1024)
    loss = model.forward_loss(out.reconstruction, target, weights)
    torch.testing.assert_close(loss, out.loss)
    # change the prediction wherever the loss does not apply: identical loss
    perturbed = torch.where(mask, out.reconstruction, out.reconstruction + 100 * torch.randn_like(x))
    torch.testing.assert_close(model.forward_loss(perturbed, target, weights), loss)
    # change it where the loss applies: different loss
    perturbed = torch.where(mask, out.reconstruction + 1.0, out.reconstruction)
    assert model.forward_loss(perturbed, target, weights) > loss + 0.5
    # the loss equals a direct computation over the masked cells
    unit = model.config.mask_unit_size * model.config.patch_size
    t = target.reshape(2, 12, -1, unit)
    t = (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True, unbiased=False) + 1e-6) ** 0.5
    cell = ((out.reconstruction.reshape(2, 12, -1, unit) - t) ** 2).mean(-1)
    cell_mask = mask.reshape(2, 12, -1, unit)[..., 0]
    torch.testing.assert_close(cell[cell_mask].mean(), loss)


def test_augment_signal_gain_noise_and_absent_leads():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 12, 400, generator=g)
    mask = torch.ones(64, 12, dtype=torch.bool)
    mask[:, 6:] = False
    x[:, 6:] = float("nan")  # whatever absent leads hold never comes back
    out = augment_signal(x, mask, amplitude_scale=0.2, generator=g)
    assert (out[:, 6:] == 0).all()
    ratio = out[:, :6] / x[:, :6]
    gain = ratio[:, :1, :1]
    torch.testing.assert_close(ratio, gain.expand_as(ratio))  # one gain per record, the same on every lead
    assert 0.8 <= float(gain.min()) and float(gain.max()) <= 1.2 and float(gain.std()) > 0.05
    noisy = augment_signal(x, mask, noise_std=0.05, generator=g)
    assert (noisy[:, 6:] == 0).all()
    assert abs(float((noisy[:, :6] - x[:, :6]).std()) - 0.05) < 0.002
    assert augment_signal(x, mask) is x  # both off: untouched


def test_augment_signal_time_shift_moves_all_leads_together():
    g = torch.Generator().manual_seed(1)
    t = 300
    ramp = torch.arange(1, t + 1, dtype=torch.float32)
    x = ramp.repeat(32, 12, 1) * torch.arange(1, 13, dtype=torch.float32)[None, :, None]  # lead k holds k * (1..t)
    mask = torch.ones(32, 12, dtype=torch.bool)
    mask[:, 9:] = False
    out = augment_signal(x, mask, generator=g, max_shift=50)
    assert (out[:, 9:] == 0).all()
    shifts = []
    for rec in range(32):
        first = out[rec, 0]
        inside = first != 0
        # every present lead is the same shifted ramp: lead k / k equals lead 0 wherever lead 0 is inside
        torch.testing.assert_close(out[rec, :9] / torch.arange(1, 10)[:, None].float(), first.expand(9, t))
        n_in = int(inside.sum())
        assert n_in >= t - 50
        values = first[inside]
        torch.testing.assert_close(values, values[0] + torch.arange(n_in, dtype=torch.float32))  # contiguous, in order
        shifts.append(int(torch.nonzero(inside)[0]) if values[0] == 1 else -int(values[0] - 1))
    assert max(shifts) > 20 and min(shifts) < -20  # both ways, up to max_shift
    assert all(abs(s) <= 50 for s in shifts)
    with pytest.raises(ValueError, match="finetune_time_shift_s"):  # would blank whole records
        augment_signal(x, mask, max_shift=t)


def test_augment_signal_baseline_wander_is_slow_and_bounded():
    g = torch.Generator().manual_seed(2)
    x = torch.zeros(64, 12, 1000)
    mask = torch.ones(64, 12, dtype=torch.bool)
    mask[:, 0] = False
    out = augment_signal(x, mask, generator=g, baseline_wander=0.2, sampling_rate=100.0)
    assert (out[:, 0] == 0).all()
    assert float(out.abs().max()) <= 0.2 + 1e-6 and float(out.abs().max()) > 0.1
    # slow: a 0.05-0.5 Hz sinusoid at 100 Hz changes by at most 2 pi * 0.5 / 100 * size per sample
    assert float(out.diff(dim=-1).abs().max()) <= 2 * math.pi * 0.5 / 100 * 0.2 + 1e-6
    # one rhythm per record, its size differs per lead: leads are proportional to each other
    rec = out[0, 1:]
    ratio = rec[:, 10:-10] / rec[:1, 10:-10]
    ok = rec[0, 10:-10].abs() > 1e-3
    torch.testing.assert_close(ratio[:, ok], ratio[:, ok][:, :1].expand(-1, int(ok.sum())), rtol=1e-3, atol=1e-3)
    assert float(out[:, 1:, :].abs().amax(-1).std()) > 0.02  # sizes vary


def test_time_shift_and_wander_only_in_training():
    config = tiny(finetune_lead_mask_prob=0.0, finetune_time_shift_s=1.0, finetune_baseline_wander=0.2, num_labels=2,
                  classifier_dropout=0.0, supcon_weight=0.0, drop_path_rate=0.0)
    model = ECGNATForSequenceClassification(config)
    plain = ECGNATForSequenceClassification(tiny(finetune_lead_mask_prob=0.0, num_labels=2, classifier_dropout=0.0,
                                                 supcon_weight=0.0, drop_path_rate=0.0))
    plain.load_state_dict(model.state_dict())
    x = torch.randn(4, 12, 800)
    model.eval(), plain.eval()
    with torch.no_grad():
        assert torch.equal(model(x).logits, plain(x).logits)
    model.train(), plain.train()
    with torch.no_grad():
        assert not torch.allclose(model(x).logits, plain(x).logits)


def test_signal_augmentation_only_in_training():
    config = tiny(finetune_lead_mask_prob=0.0, finetune_amplitude_scale=0.2, finetune_noise_std=0.05, num_labels=2,
                  classifier_dropout=0.0, supcon_weight=0.0)
    model = ECGNATForSequenceClassification(config)
    plain = ECGNATForSequenceClassification(tiny(finetune_lead_mask_prob=0.0, num_labels=2, classifier_dropout=0.0,
                                                 supcon_weight=0.0))
    plain.load_state_dict(model.state_dict())
    x = torch.randn(4, 12, 800)
    model.eval(), plain.eval()
    with torch.no_grad():
        assert torch.equal(model(x).logits, plain(x).logits)  # inference never augments
    model.train(), plain.train()
    with torch.no_grad():
        assert not torch.allclose(model(x).logits, plain(x).logits)


def test_random_lead_mask_keeps_one_lead():
    lead_mask = torch.zeros(500, 12, dtype=torch.bool)
    lead_mask[:, :6] = True
    kept = random_lead_mask(lead_mask, 0.9)
    assert (kept.sum(1) >= 1).all()
    assert not (kept & ~lead_mask).any()
    rate = 1 - kept[:, :6].float().mean()
    assert 0.8 < rate < 0.92


def test_global_term_uses_two_segments():
    model = ECGNATForPreTraining(tiny(global_loss_weight=0.5)).train()
    out = model(torch.randn(3, 12, 1024))
    assert out.global_loss is not None and out.global_loss > 0
    torch.testing.assert_close(out.loss, out.reconstruction_loss + 0.5 * out.global_loss)
    out.loss.backward()
    assert model.global_projection[0].weight.grad is not None


@pytest.mark.slow
def test_pretraining_on_real_recordings_learns(shared_data):
    """A few hundred steps on real PTB-XL recordings bring the masked-reconstruction error of held-out records
    well below that of predicting zeros (the standardised signal's energy). Measured: 0.62 x at this budget;
    the autoencoding error of the same network is 0.09 x, so what remains is the hidden beats' timing."""
    torch.manual_seed(0)
    torch.set_num_threads(2)
    x, _ = load_ptbxl(shared_data / "ptbxl-subset", n=192)
    x = torch.from_numpy(x)
    train, held_out = x[:160], x[160:]
    model = ECGNATForPreTraining(tiny(mask_ratio=0.5, lead_mask_prob=0.0))
    steps = 250
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    for _ in range(steps):
        loss = model(train[torch.randint(0, len(train), (16,))]).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        sched.step()
    model.eval()
    with torch.no_grad():
        out = model(held_out)
        weights = model.loss_weights(out.time_mask, torch.ones(32, 12, dtype=torch.bool), out.encoder_lead_mask, 1000)
        padded = F.pad(held_out, (0, out.time_mask.shape[1] * model.config.patch_size - 1000))
        zeros = model.forward_loss(torch.zeros_like(padded), padded, weights)
    assert 0.9 < zeros.item() < 1.1  # standardised leads
    assert out.loss.item() < 0.75 * zeros.item(), (out.loss.item(), zeros.item())


# ----------------------------------------------------------------------------------------------- classification
def _direct_supcon(z: torch.Tensor, positives: torch.Tensor, tau: float) -> torch.Tensor:
    """Khosla et al. (2020) eq. 2, written out term by term."""
    n = z.shape[0]
    terms = []
    for i in range(n):
        pos = [p for p in range(n) if p != i and positives[i, p]]
        if not pos:
            continue
        denom = sum(math.exp(float(z[i] @ z[a]) / tau) for a in range(n) if a != i)
        terms.append(-sum(math.log(math.exp(float(z[i] @ z[p]) / tau) / denom) for p in pos) / len(pos))
    return torch.tensor(sum(terms) / len(terms), dtype=torch.float64)


def test_supcon_single_label_hand_made_batch():
    z = F.normalize(torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]], dtype=torch.float64), dim=-1)
    labels = torch.tensor([0, 0, 1, 2])  # sample 3 has no positive: left out
    loss = supervised_contrastive_loss(z, labels, temperature=0.1)
    positives = labels[:, None] == labels[None, :]
    torch.testing.assert_close(loss, _direct_supcon(z, positives, 0.1))
    # by hand for anchor 0: positive 1 (cos .8), others cos 0 and -.6
    a0 = -math.log(math.exp(8) / (math.exp(8) + math.exp(0) + math.exp(-6)))
    a1 = -math.log(math.exp(8) / (math.exp(8) + math.exp(6) + math.exp(0)))  # cos(1,2)=.6, cos(1,3)=0
    assert abs(loss.item() - (a0 + a1) / 2) < 1e-9


def test_supcon_multi_label_positives_share_a_label():
    torch.manual_seed(1)
    z = F.normalize(torch.randn(6, 4, dtype=torch.float64), dim=-1)
    labels = torch.tensor(
        [[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0], [0, 0, 1]], dtype=torch.float64
    )
    loss = supervised_contrastive_loss(z, labels, temperature=0.07)
    positives = (labels @ labels.T) > 0
    torch.testing.assert_close(loss, _direct_supcon(z, positives, 0.07))
    # no anchor with a positive: zero, still differentiable
    zero = supervised_contrastive_loss(z.requires_grad_(), torch.tensor([0, 1, 2, 3, 4, 5]), 0.1)
    assert zero.item() == 0.0 and zero.requires_grad


def test_supcon_jaccard_weights_pairs_by_label_overlap():
    """``positives="jaccard"``: anchor i averages log p(i, j) with weights |y_i & y_j| / |y_i | y_j|, computed by
    hand here; one shared statement among many counts for less than a full match; one-hot labels give the
    single-label loss; the model uses the config's choice."""
    torch.manual_seed(2)
    z = F.normalize(torch.randn(5, 4, dtype=torch.float64), dim=-1)
    labels = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [1, 0, 1, 1], [0, 0, 0, 1], [0, 0, 0, 0]], dtype=torch.float64)
    tau = 0.1
    terms = []
    for i in range(5):
        inter = [float((labels[i] * labels[j]).sum()) for j in range(5)]
        union = [float(((labels[i] + labels[j]) > 0).sum()) for j in range(5)]
        w = [inter[j] / union[j] if j != i and union[j] else 0.0 for j in range(5)]
        if sum(w) == 0:
            continue
        denom = sum(math.exp(float(z[i] @ z[a]) / tau) for a in range(5) if a != i)
        logp = [math.log(math.exp(float(z[i] @ z[j]) / tau) / denom) for j in range(5)]
        terms.append(-sum(w[j] * logp[j] for j in range(5) if w[j]) / sum(w))
    expected = sum(terms) / len(terms)
    got = supervised_contrastive_loss(z, labels, tau, positives="jaccard")
    assert abs(got.item() - expected) < 1e-9
    # records 0 and 1 match fully (weight 1); 0 and 2 share one label of four (weight 1/4): "any" weighs both as 1
    assert abs(got.item() - supervised_contrastive_loss(z, labels, tau, positives="any").item()) > 1e-3
    # one-hot multi-label targets: the same as the single-label loss, whichever rule
    one_hot = F.one_hot(torch.tensor([0, 0, 1, 2, 1]), 3).double()
    single = supervised_contrastive_loss(z, torch.tensor([0, 0, 1, 2, 1]), tau)
    for rule in ("any", "jaccard"):
        torch.testing.assert_close(supervised_contrastive_loss(z, one_hot, tau, positives=rule), single)
    with pytest.raises(ValueError, match="positives must be"):
        supervised_contrastive_loss(z, labels, tau, positives="all")
    with pytest.raises(ValueError, match="supcon_positives"):
        tiny(supcon_positives="overlap")
    model = ECGNATForSequenceClassification(tiny(num_labels=4, supcon_positives="jaccard", supcon_weight=1.0)).eval()
    out = model(torch.randn(5, 12, 600), labels=labels.float())
    torch.testing.assert_close(out.supcon_loss, supervised_contrastive_loss(out.projection, labels.float(), 0.1,
                                                                            positives="jaccard"))


@pytest.mark.parametrize(
    "problem_type, labels, reference",
    [
        ("single_label_classification", torch.tensor([0, 2, 1, 2]), lambda lg, y: F.cross_entropy(lg, y)),
        (
            "multi_label_classification",
            torch.tensor([[1.0, 0, 1], [0, 0, 1], [1, 1, 0], [0, 0, 0]]),
            lambda lg, y: F.binary_cross_entropy_with_logits(lg, y),
        ),
        ("regression", torch.randn(4, 3), lambda lg, y: F.mse_loss(lg, y)),
    ],
)
def test_classification_losses(problem_type, labels, reference):
    config = tiny(num_labels=3, problem_type=problem_type, supcon_weight=0.5)
    model = ECGNATForSequenceClassification(config).eval()
    out = model(torch.randn(4, 12, 600), labels=labels)
    torch.testing.assert_close(out.classification_loss, reference(out.logits, labels))
    if problem_type == "regression":
        assert out.supcon_loss is None
        torch.testing.assert_close(out.loss, out.classification_loss)
    else:
        assert out.supcon_loss is not None
        torch.testing.assert_close(out.loss, out.classification_loss + 0.5 * out.supcon_loss)
        y = labels if problem_type != "single_label_classification" else labels
        torch.testing.assert_close(out.supcon_loss, supervised_contrastive_loss(out.projection, y, 0.1))
    assert torch.allclose(out.projection.norm(dim=-1), torch.ones(4))


# ----------------------------------------------------------------------------------------------- save / load
HEADS = [
    (ECGNATModel, AutoModel, "last_hidden_state"),
    (ECGNATForPreTraining, AutoModelForPreTraining, "reconstruction"),
    (ECGNATForSequenceClassification, AutoModelForSequenceClassification, "logits"),
]


@pytest.mark.parametrize("cls, auto, field", HEADS, ids=[h[0].__name__ for h in HEADS])
def test_save_load_exact_round_trip(tmp_path, cls, auto, field):
    model = cls(tiny(num_labels=4)).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert not list(tmp_path.glob("*.bin"))
    loaded = auto.from_pretrained(tmp_path).eval()
    assert type(loaded) is cls
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    x = torch.randn(2, 12, 640)
    kwargs = {"bool_masked_pos": torch.zeros(2, 320, dtype=torch.bool)} if cls is ECGNATForPreTraining else {}
    if cls is ECGNATForPreTraining:
        kwargs["bool_masked_pos"][:, :16] = True
    with torch.no_grad():
        assert torch.equal(getattr(model(x, **kwargs), field), getattr(loaded(x, **kwargs), field))


def test_pretraining_checkpoint_loads_into_classifier(tmp_path, caplog):
    pretrained = ECGNATForPreTraining(tiny())
    pretrained.save_pretrained(tmp_path)
    clf, info = ECGNATForSequenceClassification.from_pretrained(tmp_path, num_labels=5, output_loading_info=True)
    assert info["unexpected_keys"] == set() or not info["unexpected_keys"]
    assert {k.split(".")[0] for k in info["missing_keys"]} == {"classifier", "projection"}
    for name, tensor in pretrained.ecgnat.state_dict().items():
        assert torch.equal(tensor, clf.ecgnat.state_dict()[name]), name
    assert clf.classifier.weight.std() > 0  # initialised, not zeros


# ----------------------------------------------------------------------------------------------- remote code
_BLOCK_PACKAGE = """
import sys
class _NoEcgnat:
    def find_spec(self, name, path=None, target=None):
        if name == "ecgnat_hf" or name.startswith("ecgnat_hf."):
            raise ImportError("ecgnat_hf is deliberately unavailable in this process")
sys.meta_path.insert(0, _NoEcgnat())
"""


def _run_without_package(code: str, env: dict | None = None) -> str:
    script = _BLOCK_PACKAGE + textwrap.dedent(code)
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _hub_cache_layout(checkpoint: Path, cache: Path, repo_id: str) -> None:
    """Lay a checkpoint out as huggingface_hub's cache does for a downloaded repo."""
    import shutil

    repo = cache / ("models--" + repo_id.replace("/", "--"))
    revision = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(checkpoint, repo / "snapshots" / revision)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)


@pytest.mark.slow
def test_remote_code_loads_every_head_without_package(tmp_path):
    config = tiny(num_labels=3, id2label={0: "NORM", 1: "MI", 2: "STTC"}, label2id={"NORM": 0, "MI": 1, "STTC": 2})
    model = ECGNATForPreTraining(config).eval()
    model.save_pretrained(tmp_path / "ckpt")
    ECGNATFeatureExtractor(sampling_rate=100).save_pretrained(tmp_path / "ckpt")
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert set(saved["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForPreTraining", "AutoModelForSequenceClassification"}
    for name in ("configuration_ecgnat.py", "modeling_ecgnat.py", "neighborhood_attention.py", "feature_extraction_ecgnat.py"):
        assert (tmp_path / "ckpt" / name).is_file(), name
    x = torch.randn(1, 12, 1000, generator=torch.Generator().manual_seed(0))
    np.save(tmp_path / "x.npy", x.numpy())
    with torch.no_grad():
        expected = ECGNATModel.from_pretrained(tmp_path / "ckpt").eval()(x).pooler_output.numpy()
    np.save(tmp_path / "expected.npy", expected)
    _hub_cache_layout(tmp_path / "ckpt", tmp_path / "hub", "ecg-org/ecgnat-tiny")
    code = f"""
    import numpy as np, torch
    from transformers import (AutoConfig, AutoModel, AutoModelForPreTraining,
                              AutoModelForSequenceClassification, AutoFeatureExtractor)
    x = torch.from_numpy(np.load({str(tmp_path / 'x.npy')!r}))
    expected = np.load({str(tmp_path / 'expected.npy')!r})
    for source in ({str(tmp_path / 'ckpt')!r}, "ecg-org/ecgnat-tiny"):
        pt = AutoModelForPreTraining.from_pretrained(source, trust_remote_code=True)
        enc = AutoModel.from_pretrained(source, trust_remote_code=True).eval()
        clf = AutoModelForSequenceClassification.from_pretrained(source, trust_remote_code=True, num_labels=3)
        fe = AutoFeatureExtractor.from_pretrained(source, trust_remote_code=True)
        assert type(pt).__name__ == "ECGNATForPreTraining", type(pt)
        assert type(clf).__name__ == "ECGNATForSequenceClassification"
        assert type(fe).__name__ == "ECGNATFeatureExtractor" and fe.sampling_rate == 100
        with torch.no_grad():
            # same weights and code; the lead-fusion matmul may pick another kernel in another process, so
            # the last float32 bits can differ (seen: 1e-8): compare at float32 precision, not bit for bit
            np.testing.assert_allclose(enc(x).pooler_output.numpy(), expected, rtol=1e-5, atol=1e-6)
        assert clf(x).logits.shape == (1, 3)
        batch = fe(np.random.randn(2, 3600), sampling_rate=360, lead_names=["MLII", "V5"], return_tensors="pt")
        assert batch["input_values"].shape[1:] == (12, 1000)
    import sys
    assert not any(m.startswith("ecgnat_hf") for m in sys.modules)
    print("remote-ok")
    """
    out = _run_without_package(code, env={"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HOME": str(tmp_path / "home")})
    assert "remote-ok" in out


# ----------------------------------------------------------------------------------------------- Trainer
class _Losses(TrainerCallback):
    def __init__(self):
        self.losses = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(logs["loss"])


class _Dataset(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"input_values": self.x[i], "lead_mask": torch.ones(12, dtype=torch.bool), "labels": self.y[i]}


@pytest.mark.slow
@pytest.mark.parametrize("accumulation", [1, 2])
def test_trainer_lowers_loss_on_real_recordings(shared_data, tmp_path, accumulation):
    x, y = load_ptbxl(shared_data / "ptbxl-subset", n=64)
    dataset = _Dataset(torch.from_numpy(x), torch.from_numpy(y))
    torch.manual_seed(0)
    model = ECGNATForSequenceClassification(
        tiny(num_labels=5, problem_type="multi_label_classification", classifier_dropout=0.0)
    )
    callback = _Losses()
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=16 // accumulation,
        gradient_accumulation_steps=accumulation,
        learning_rate=3e-3,
        max_steps=24,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    Trainer(model=model, args=args, train_dataset=dataset, callbacks=[callback]).train()
    losses = callback.losses
    assert len(losses) == 24
    # the logged loss is a per-sample mean, whatever the accumulation: BCE of a fresh head is ~0.69,
    # plus 0.1 x supervised contrastive (~log 15 = 2.7)
    assert 0.7 < losses[0] < 1.3, losses[0]
    assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:5]), losses
