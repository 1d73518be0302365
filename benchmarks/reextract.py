"""How long `transferkit extract` takes when its features are already on disk (a cached re-extract), from the
command line, against the first extraction of the same data.

Writes `--n` real texts (VADER tweets and movie snippets) to a CSV, runs `transferkit extract` with the bundled
MiniLM into a fresh folder (first run: builds the model, records its identity, extracts), then the same command
`--repeat` times (each a fresh interpreter: imports, data loading and fingerprinting, the model's identity from
its record, the folder's key check). Also times `python -c "import transferkit.cli"` alone, the floor every
command pays, and one re-extract with the identity record removed (what it cost before records existed: the
model is built and hashed to learn the key).

    python benchmarks/reextract.py [--n 2040] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(cmd: list[str], env: dict) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return seconds, out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2040)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/reextract.json")
    args = ap.parse_args()
    import pandas as pd

    from transferkit import datasets

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        texts = [t for name in ("sentiment-tweets", "sentiment-movies") for t in datasets.load(name).items][:args.n]
        pd.DataFrame({"text": texts}).to_csv(tmp / "texts.csv", index=False)
        env = {**os.environ, "TRANSFERKIT_CACHE": str(tmp / "cache"), "HF_HUB_OFFLINE": "1"}
        cmd = [sys.executable, "-m", "transferkit.cli", "extract", "--data", str(tmp / "texts.csv"), "--model",
               "st:all-MiniLM-L6-v2", "--out", str(tmp / "feats")]
        import_s = min(timed([sys.executable, "-c", "import transferkit.cli"], env)[0] for _ in range(args.repeat))
        first, line = timed(cmd, env)
        print(f"first extract: {first:.2f} s  ({line})", flush=True)
        again = []
        for _ in range(args.repeat):
            s, line = timed(cmd, env)
            again.append(s)
            print(f"cached re-extract: {s:.2f} s  ({line})", flush=True)
        shutil.rmtree(tmp / "cache" / "identities")
        unrecorded, line = timed(cmd, env)
        print(f"cached re-extract without the identity record (the model built and hashed): {unrecorded:.2f} s",
              flush=True)
        print(f"`import transferkit.cli` alone: {import_s:.2f} s", flush=True)
    result = {"benchmark": "reextract", "n": args.n, "first_s": first, "reextract_s": again,
              "reextract_best_s": min(again), "reextract_without_record_s": unrecorded, "import_cli_s": import_s}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
