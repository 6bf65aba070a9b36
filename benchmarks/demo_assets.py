"""Write the demo's shipped assets (``sw/data/demo/``) from the study's GRU and the eSpeak corpus.

``deltarnn demo`` runs on a fresh clone with no data: it needs a trained
speech model, a few utterances to score and calibrate on, and the phone
decoder, all small enough to keep in the repository. This script makes them:

- ``gru.pt``: the study's 2 x 128 GRU (``benchmarks/results/study/models/gru.pt``, trained by
  ``deltarnn study --config full``; its log is ``train_gru.log`` there), copied;
- ``speech.npz``: the shortest test utterances (scored) and train utterances (calibration) of the
  eSpeak corpus, features in float16, frame labels, the study's phone decoder (its bigram and
  durations from the train labels, its insertion penalty tuned on dev) and the study's choice for
  the GRU (``chosen``: weight bits, activation bits, theta x, theta h, chosen on dev).

    python benchmarks/demo_assets.py [--test N] [--calib N]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "sw" / "data" / "demo"
STUDY = ROOT / "benchmarks" / "results" / "study"


def pack(utts) -> dict:
    return {"features": np.concatenate([u.features for u in utts]).astype(np.float16),
            "labels": np.concatenate([u.labels for u in utts]).astype(np.int8),
            "lengths": np.array([len(u.labels) for u in utts], dtype=np.int32)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--test", type=int, default=12, help="test utterances to ship (the shortest)")
    ap.add_argument("--calib", type=int, default=8, help="train utterances for calibration")
    args = ap.parse_args()
    from deltarnn.speech.datasets import load_dataset
    from deltarnn.speech.decode import PhoneDecoder

    study = json.loads((STUDY / "study.json").read_text())
    train, test = load_dataset("espeak", "train"), load_dataset("espeak", "test")
    decoder = PhoneDecoder.from_labels([u.labels for u in train], train.num_classes)
    shortest = sorted(test, key=lambda u: (len(u.labels), u.id))[:args.test]
    rng = np.random.default_rng(0)
    calib = [train[int(i)] for i in rng.choice(len(train), size=args.calib, replace=False)]
    OUT.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(STUDY / "models" / "gru.pt", OUT / "gru.pt")
    test_arrays, calib_arrays = pack(shortest), pack(calib)
    np.savez_compressed(
        OUT / "speech.npz", **{f"test_{k}": v for k, v in test_arrays.items()},
        **{f"calib_{k}": v for k, v in calib_arrays.items()},
        log_stay=decoder.log_stay, log_bigram=decoder.log_bigram,
        insertion_penalty=np.float64(study["cells"]["gru"]["insertion_penalty"]),
        chosen=np.array([study["cells"]["gru"]["chosen"]["wbits"], study["cells"]["gru"]["chosen"]["abits"],
                         *study["summary"]["gru"]["chosen_theta"]]),
        phones=np.array(test.phones), test_ids=np.array([u.id for u in shortest]))
    print(f"wrote {OUT}: gru.pt, speech.npz ({len(shortest)} test utterances, {test_arrays['labels'].size} frames; "
          f"{len(calib)} calibration utterances)")


if __name__ == "__main__":
    main()
