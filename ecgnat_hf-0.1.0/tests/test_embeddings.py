"""Record and window embeddings (ecgnat_hf.embeddings, `ecgnat embed`) on real records: determinism, pooling,
bad records, Parquet / NumPy output."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ecgnat_hf import ECGNATForSequenceClassification, ECGNATModel
from ecgnat_hf.cli import main
from ecgnat_hf.data.builders.common import find_records
from ecgnat_hf.embeddings import embed_records, embedding_columns, load_encoder, write_embeddings
from ecgnat_hf.sample_data import sample_dir

from helpers import make_tiny_checkpoint
from test_inference import corrupted_copy


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def records() -> list[Path]:
    return find_records(sample_dir() / "records100")[:4]


def test_record_embeddings_are_deterministic_and_independent_of_the_batch(checkpoint, records, tmp_path):
    model = ECGNATForSequenceClassification.from_pretrained(checkpoint).train()  # left in training mode
    model.ecgnat.stages[0].layers[0].drop_path.drop_prob = 0.5  # would change outputs if it were active
    model.ecgnat.stages[0].layers[0].mlp.dropout.p = 0.5
    df = embed_records(model, records, progress=False)
    emb = embedding_columns(df)
    assert len(emb) == 128 and df[emb].to_numpy().dtype == np.float32
    assert list(df["n_windows"]) == [1] * 4 and df.attrs["errors"] == []
    again = embed_records(checkpoint, list(reversed(records)), progress=False)  # fresh load, other order
    np.testing.assert_array_equal(again[emb].to_numpy()[::-1], df[emb].to_numpy())
    alone = embed_records(checkpoint, records[2], progress=False)
    np.testing.assert_array_equal(alone[emb].to_numpy()[0], df[emb].to_numpy()[2])
    assert len({tuple(r) for r in df[emb].to_numpy()}) == 4  # different records, different embeddings


@pytest.mark.slow
@pytest.mark.shared_data
def test_window_embeddings_pool_to_the_record_one(checkpoint, shared_data, tmp_path):
    path = shared_data / "mitdb" / "100"  # 30 min, 2 leads: 361 windows of 10 s
    per_window = embed_records(checkpoint, path, per_window=True, progress=False)
    per_record = embed_records(checkpoint, path, progress=False)
    emb = embedding_columns(per_record)
    assert len(per_window) == 361 and per_record["n_windows"].item() == 361
    assert per_window["window_start_s"].iloc[1] == pytest.approx(5.0)
    assert per_window["window_start_s"].iloc[-1] == pytest.approx(1795.56, abs=0.01)  # last window ends the record
    np.testing.assert_allclose(per_window[emb].to_numpy().mean(0), per_record[emb].to_numpy()[0], atol=1e-6)
    # the first window equals the encoder's pooled output computed directly
    encoder, fe = load_encoder(checkpoint)
    assert isinstance(encoder, ECGNATModel) and not encoder.training
    from ecgnat_hf.data import read_record

    rec = read_record(path)
    feats = fe(rec.signal, sampling_rate=rec.sampling_rate, lead_names=rec.lead_names, return_tensors="pt")
    with torch.no_grad():
        first = encoder(input_values=feats["input_values"][:1], lead_mask=feats["lead_mask"][:1]).pooler_output[0]
    np.testing.assert_allclose(per_window[emb].to_numpy()[0], first.numpy(), atol=1e-6)


def test_bad_records_are_reported_and_files_round_trip(checkpoint, records, tmp_path):
    bad = corrupted_copy(records[0], tmp_path / "bad")
    df = embed_records(checkpoint, [*records[:2], bad], progress=False)
    assert len(df) == 2 and [e["error"] for e in df.attrs["errors"]] == ["TruncatedSignalError"]
    pq = write_embeddings(df, tmp_path / "e.parquet")
    back = pd.read_parquet(pq)
    pd.testing.assert_frame_equal(back, df)
    npz = np.load(write_embeddings(df, tmp_path / "e.npz"))
    np.testing.assert_array_equal(npz["embeddings"], df[embedding_columns(df)].to_numpy())
    assert list(npz["record_id"]) == list(df["record_id"])
    with pytest.raises(ValueError, match=".parquet or .npz"):
        write_embeddings(df, tmp_path / "e.csv")


def test_cli_embed(checkpoint, records, tmp_path, capsys):
    bad = corrupted_copy(records[0], tmp_path / "bad")
    out = tmp_path / "emb.npz"
    code = main(["embed", *map(str, records[:2]), str(bad), "-m", str(checkpoint), "-o", str(out), "--no_progress"])
    assert code == 1  # one record failed, the others were written
    captured = capsys.readouterr()
    assert "wrote 2 embedding(s) of size 128" in captured.out and "TruncatedSignalError" in captured.err
    assert np.load(out)["embeddings"].shape == (2, 128)
    errors = pd.read_csv(tmp_path / "emb.errors.csv")
    assert list(errors["error"]) == ["TruncatedSignalError"]
    assert main(["embed", str(records[0]), "-m", str(checkpoint), "-o", str(tmp_path / "x.csv")]) == 2
    assert ".parquet or .npz" in capsys.readouterr().err
