"""Mask generation against raw AES-256-CTR, side by side in one process.

The physical limit of mask generation here is the AES-256-CTR keystream
itself, for the same number of bytes, measured two ways: `raw_aes_ctr`, one
OpenSSL `update_into` call writing the whole keystream into a preallocated
buffer (no allocation, no numpy), and `raw_aes_ctr_chunked`, the keystream made
256 KiB at a time into one reused buffer that stays in the CPU cache (the floor
for a consumer that uses each chunk at once). Ratios are against the faster of
the two (`ratio_to_raw`). Against it, per vector length m and ring width (32 bits: the benchmark ring of
secagg; 56 and 64 bits: the default rings at 10 and 100 clients):

- `ring_elements`: m fresh uniform elements of Z_(2^bits) (allocation included);
- `add_mask`: acc += PRG(seed) in place, what a client does once per mask and
  the aggregator once per seed it removes;
- `previous`: the implementation before docs/performance.md's change (keystream
  through `bytes`, copied into a `bytearray`), reproduced here for the record.

Functions alternate within each repetition so that load on this shared machine
hits all alike; each figure is the median, each ratio a ratio of medians.

    .venv/bin/python benchmarks/mask_prg.py
    .venv/bin/python benchmarks/mask_prg.py --sizes 100000 --reps 5 --out /tmp/mask.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from protocols.hazmat.prg import add_mask, ring_dtype, ring_elements

SEED = hashlib.sha256(b"benchmark seed").digest()
NONCE_BLOCK = hashlib.sha256(b"securediff/prg/v1/aes-256-ctr\n" + b"pairwise-mask").digest()[:8] + bytes(8)


def previous_add_mask(acc: np.ndarray, seed: bytes, *, bits: int) -> None:
    """The add_mask of commit e92666a: keystream as a fresh `bytes`, then added."""
    dtype = ring_dtype(bits)
    enc = Cipher(algorithms.AES(seed), modes.CTR(NONCE_BLOCK)).encryptor()
    stream = np.frombuffer(enc.update(bytes(acc.size * dtype.itemsize)), dtype=dtype)
    np.add(acc, stream, out=acc)


def measure(count: int, bits: int, reps: int) -> dict:
    dtype = ring_dtype(bits)
    nbytes = count * dtype.itemsize
    src, out = bytes(nbytes), bytearray(nbytes)
    acc = np.zeros(count, dtype=dtype)
    acc_prev = np.zeros(count, dtype=dtype)

    def raw() -> None:
        Cipher(algorithms.AES(SEED), modes.CTR(NONCE_BLOCK)).encryptor().update_into(src, out)

    chunk = min(nbytes, 1 << 18)
    zeros, scratch = bytes(chunk), bytearray(chunk)

    def raw_chunked() -> None:
        enc = Cipher(algorithms.AES(SEED), modes.CTR(NONCE_BLOCK)).encryptor()
        for start in range(0, nbytes, chunk):
            size = min(chunk, nbytes - start)
            enc.update_into(zeros[:size], memoryview(scratch)[:size])

    fns = {
        "raw_aes_ctr": raw,
        "raw_aes_ctr_chunked": raw_chunked,
        "ring_elements": lambda: ring_elements(SEED, count=count, bits=bits, nonce=b"pairwise-mask"),
        "add_mask": lambda: add_mask(acc, SEED, bits=bits, nonce=b"pairwise-mask"),
        "previous_add_mask": lambda: previous_add_mask(acc_prev, SEED, bits=bits),
    }
    times: dict[str, list[float]] = {k: [] for k in fns}
    for rep in range(reps + 1):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            if rep:  # the first repetition warms caches and page tables
                times[name].append(time.perf_counter() - t)
    if not np.array_equal(acc, acc_prev):
        raise SystemExit("add_mask and the previous implementation disagree")
    med = {k: statistics.median(v) for k, v in times.items()}
    base = min(med["raw_aes_ctr"], med["raw_aes_ctr_chunked"])
    return {
        "m": count, "bits": bits, "bytes": nbytes, "reps": reps,
        "seconds": med,
        "gb_per_s": {k: nbytes / v / 1e9 for k, v in med.items()},
        "raw_s": base,
        "ratio_to_raw": {k: v / base for k, v in med.items()},
        "speedup_over_previous": med["previous_add_mask"] / med["add_mask"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10**5, 10**6, 10**7])
    parser.add_argument("--bits", type=int, nargs="+", default=[32, 56, 64])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/mask_prg.json"))
    args = parser.parse_args()
    rows = []
    for count in args.sizes:
        for bits in args.bits:
            reps = args.reps if count < 10**7 else max(3, args.reps // 3)
            row = measure(count, bits, reps)
            rows.append(row)
            r = row["ratio_to_raw"]
            print(f"m={count:>9,} bits={bits}: raw {row['bytes'] / row['raw_s'] / 1e9:.2f} GB/s; "
                  f"ring_elements x{r['ring_elements']:.2f}, add_mask x{r['add_mask']:.2f}, "
                  f"previous x{r['previous_add_mask']:.2f} of raw", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "mask_prg", "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "load_avg_1m": os.getloadavg()[0], "cpus": os.cpu_count(), "rows": rows,
    }, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
