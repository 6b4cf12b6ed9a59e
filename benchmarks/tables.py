"""Turn every benchmarks/results/*.json into one Markdown file, benchmarks/results/RESULTS.md.

One section per benchmark, one table per kind of row. Every figure that
compares is a ratio against its baseline measured in the same run (the machine
is shared and noisy: absolute times move, ratios much less); absolute seconds
and peak memory follow in the same row. Known formats get their columns in a
chosen order (ratios first); any key a benchmark adds later (a new mode, a
memory figure) is appended as a column rather than dropped, and a file of an
unknown format with a "rows" list still gets a table.

    .venv/bin/python benchmarks/tables.py                       # benchmarks/results -> RESULTS.md
    .venv/bin/python benchmarks/tables.py --results DIR --out FILE
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
META_KEYS = ("when", "load_avg_1m", "cpus", "complete", "seconds", "device", "torch")


def flatten(obj: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts become dotted keys: {"ckks": {"seconds": 1}} -> {"ckks.seconds": 1}."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def fmt(key: str, value: Any) -> str:
    """One cell: ratios as 1.23x, seconds with 3 significant digits, lists shortened."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        shown = ", ".join(fmt(key, v) for v in value[:6])
        return f"[{shown}{', ...' if len(value) > 6 else ''}]"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if "ratio" in key or "speedup" in key or "_over_" in key:
            return f"{value:.2f}x"
        if abs(value) >= 1e5:
            return f"{value:,.0f}"
        return f"{value:.3g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def columns_for(rows: Sequence[Mapping[str, Any]], preferred: Sequence[str],
                skip: Iterable[str] = (), only: bool = False) -> list[str]:
    """`preferred` keys present in some row, then (unless `only`) every other key in
    first-seen order, so that a key a benchmark adds later shows up as a column."""
    seen: list[str] = []
    for row in rows:
        for key in row:
            if key not in seen:
                seen.append(key)
    skip = set(skip)
    head = [k for k in preferred if k in seen and k not in skip]
    return head if only else head + [k for k in seen if k not in head and k not in skip]


def table(rows: Sequence[Mapping[str, Any]], preferred: Sequence[str] = (),
          headers: Mapping[str, str] | None = None, skip: Iterable[str] = (),
          only: bool = False) -> list[str]:
    flat = [flatten(r) for r in rows]
    cols = columns_for(flat, preferred, skip, only)
    if not cols:
        return ["(no rows)"]
    headers = headers or {}
    lines = ["| " + " | ".join(headers.get(c, c) for c in cols) + " |",
             "|" + "---|" * len(cols)]
    for row in flat:
        lines.append("| " + " | ".join(fmt(c, row.get(c)) for c in cols) + " |")
    return lines


def meta_line(obj: Mapping[str, Any]) -> list[str]:
    parts = [f"{k}: {fmt(k, obj[k])}" for k in META_KEYS if k in obj]
    return [f"_{'; '.join(parts)}_", ""] if parts else []


# -- known formats ------------------------------------------------------------------------------
def dpsgd_step(data: Mapping[str, Any]) -> list[str]:
    rows = data.get("rows", [])
    mode = data.get("mode")
    if mode is not None:  # one mode for the file: shown per row unless rows say their own
        rows = [{"mode": mode, **r} for r in rows]
    return [
        "DP-SGD step against a plain step on the same batch (ratio = dpsgd_s / plain_s).", "",
        *meta_line(data),
        *table(rows, ["mode", "batch", "noise_multiplicity", "ratio", "plain_s", "dpsgd_s"],
               skip=("params",)),
        "", *(f"Model parameters: {rows[0]['params']:,}." for _ in [0] if rows and "params" in rows[0]),
    ]


def ckks_tee(data: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    protos = ("plain", "ckks", "tee")
    if "rounds" in data:
        part = data["rounds"]
        out += ["### Protocol rounds (run_round with a signed transcript), against plain", "",
                *meta_line(part),
                *table(part.get("rows", []),
                       ["length", "clients", "reps",
                        *(f"{p}.ratio_to_plain" for p in protos[1:]),
                        *(f"{p}.seconds" for p in protos),
                        *(f"{p}.bytes_ratio_to_plain" for p in protos[1:]),
                        *(f"{p}.max_abs_error" for p in protos[1:])], only=True), ""]
    if "aggregation_only" in data:
        part = data["aggregation_only"]
        out += ["### Aggregation alone: CKKS encrypt + add + decrypt against a numpy sum", "",
                *meta_line(part),
                *table(part.get("rows", []), ["length", "clients", "ratio", "plain_sum_s",
                                              "ckks_s", "ckks_parts_s.encrypt", "ckks_parts_s.add",
                                              "ckks_parts_s.decrypt",
                                              "ciphertext_bytes_per_client"], only=True), ""]
    if "end_to_end" in data:
        part = data["end_to_end"]
        rows = [{"protocol": p, **part[p]} for p in protos if isinstance(part.get(p), Mapping)]
        out += [f"### End to end: `securediff train`, {part.get('rounds', '?')} round(s), "
                "seconds per round against plain", "", *meta_line(part),
                *table(rows, ["protocol", "ratio_to_plain", "mean_round_seconds"],
                       skip=("round_seconds",)), ""]
    return out


def secagg_vs_flower(data: Mapping[str, Any]) -> list[str]:
    rows = data.get("rows", [])
    return [
        "Flower 1.42 SecAgg+ against secagg on the same inputs; ratios are Flower / secagg "
        "(above 1: secagg is faster), bytes against a plaintext int32 vector.", "",
        *meta_line(data),
        *table(rows, ["n", "m", "dropout", "setting", "degree", "threshold", "dropped",
                      "ratio_end_to_end", "ratio_end_to_end_without_release_check", "ratio_wall",
                      "secagg.wall_s", "flower.wall_s", "secagg.client_s", "secagg.server_s",
                      "flower.client_s", "flower.server_s", "bytes_vs_int32.secagg",
                      "bytes_vs_int32.flower", "skipped"], only=True),
    ]


def mask_prg(data: Mapping[str, Any]) -> list[str]:
    return [
        "Mask generation against raw AES-256-CTR keystream of the same bytes (ratio = time / "
        "raw time; 1.00x is the physical limit, the goal is <= 3x).", "",
        *meta_line(data),
        *table(data.get("rows", []),
               ["m", "bits", "ratio_to_raw.add_mask", "ratio_to_raw.ring_elements",
                "ratio_to_raw.previous_add_mask", "speedup_over_previous", "raw_s",
                "seconds.add_mask", "seconds.ring_elements", "seconds.raw_aes_ctr",
                "seconds.raw_aes_ctr_chunked", "seconds.previous_add_mask"], only=True),
    ]


def secagg_scaling(data: Mapping[str, Any]) -> list[str]:
    ratios = data.get("ratios", {})
    rows = data.get("rows", [])
    lines = [
        "secagg rounds at n clients, secure default degree k and threshold t for each n, "
        "bound to the roster, signed transcript; the goal is t(1000)/t(100) at most 1.2 times "
        "the growth of n k, wall and CPU.", "",
        *meta_line(data),
        *table(rows,
               ["n", "m", "degree", "threshold", "dropped", "ring_bits", "wall_s", "cpu_s", "client_s",
                "client_cpu_s", "server_s", "server_cpu_s", "driver_transcript_s",
                "driver_transcript_cpu_s", "peak_rss_mib", "rss_before_mib", "messages",
                "transcript_bytes", "max_abs_error"], only=True),
        "",
    ]
    kinds = ("lists", "signatures", "keys", "vector", "headers")
    split = [{"n": r["n"], "direction": d, **{k: round(r["bytes_per_client"][d][k]) for k in kinds}}
             for r in rows if "bytes_per_client" in r for d in ("down", "up")]
    if split:
        lines += ["Bytes per client (mean over clients), by kind:", "",
                  *table(split, ["n", "direction", *kinds], only=True), ""]
    lines += [f"- {k.replace('_over_', ' / ')}: {fmt(k, v)}" for k, v in ratios.items()]
    return lines


def flower_loopback(data: Mapping[str, Any]) -> list[str]:
    lines = [
        f"Flower {data.get('flwr', '')} on loopback: one SuperLink and {data.get('nodes', '?')} "
        f"SuperNodes, {data.get('rounds', '?')} rounds of {data.get('length', '?')} values, "
        f"degree {data.get('degree', '?')} and threshold {data.get('threshold', '?')} "
        f"(Flower: num_shares {data.get('flower_num_shares', '?')}); {data.get('repeats', 1)} "
        "interleaved passes, every other one reversed; seconds per round leave out each run's "
        "first round; exchanges: messages one SuperNode received per round.", "",
        *meta_line(data),
        *table(data.get("rows", []),
               ["protocol", "seconds_per_round", "exchanges_per_round", "seconds_per_exchange",
                "timed_seconds_per_exchange", "clientapp_cpu_per_message_s", "rounds_pooled"],
               only=True),
        "",
    ]
    runs = [{"protocol": row["protocol"], **run} for row in data.get("rows", [])
            for run in row.get("runs", [])]
    if runs:
        lines += ["Each run:", "",
                  *table(sorted(runs, key=lambda r: r["pass"]),
                         ["pass", "protocol", "seconds_per_exchange",
                          "clientapp_cpu_per_message_s", "round_seconds",
                          "exchanges_per_round_each", "outcomes", "loadavg_before",
                          "loadavg_after"], only=True), ""]
    stages = [{"protocol": row["protocol"], "stage": stage, "seconds": t}
              for row in data.get("rows", [])
              for stage, t in (row.get("timed_seconds_by_stage") or {}).items()]
    if stages:
        lines += ["Seconds per exchange by stage (sending to the last reply, the ServerApp's "
                  "clock):", "", *table(stages, ["protocol", "stage", "seconds"], only=True), ""]
    lines += [f"- {k.replace('_over_', ' / ')}: {fmt(k, v)}"
              for k, v in data.get("ratios", {}).items()]
    lines += [f"- {k.replace('_over_', ' / ')}, by pass: {', '.join(fmt(k, x) for x in v)}"
              for k, v in data.get("ratios_by_pass", {}).items()]
    return lines


def gpu_check(data: Mapping[str, Any]) -> list[str]:
    return [
        "Training steps and DDIM sampling on the GPU (ratio = DP-SGD step / plain step).", "",
        *meta_line(data),
        *table(data.get("rows", []), ["what", "device", "batch", "noise_multiplicity", "ratio",
                                      "plain_s", "dpsgd_s", "seconds", "peak_mib"]),
    ]


RENDERERS: dict[str, Callable[[Mapping[str, Any]], list[str]]] = {
    "dpsgd_step": dpsgd_step, "ckks_tee": ckks_tee, "secagg_vs_flower": secagg_vs_flower,
    "mask_prg": mask_prg, "secagg_scaling": secagg_scaling, "secagg_scaling_5000": secagg_scaling,
    "gpu_check": gpu_check,
    "flower_loopback": flower_loopback,
}


def section(name: str, data: Any) -> list[str]:
    lines = [f"## {name}", "", f"From `benchmarks/results/{name}.json`.", ""]
    render = RENDERERS.get(name)
    if render is not None and isinstance(data, Mapping):
        return lines + render(data) + [""]
    if isinstance(data, Mapping) and isinstance(data.get("rows"), list):
        return lines + [*meta_line(data), *table(data["rows"]), ""]
    return lines + ["(no table writer knows this format)", ""]


def write_results(results: Path, out: Path) -> Path:
    files = sorted(p for p in results.glob("*.json"))
    lines = ["# Benchmark results", "",
             "Written by `benchmarks/tables.py` from the JSON files beside it (`make bench` "
             "runs every benchmark, then this). Ratios are measured in one run against their "
             "baseline; see docs/performance.md for what each figure means and how to "
             "reproduce it.", ""]
    for path in files:
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            lines += [f"## {path.stem}", "", f"(unreadable JSON: {exc})", ""]
            continue
        lines += section(path.stem, data)
    out.write_text("\n".join(lines).rstrip() + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = write_results(args.results, args.out or args.results / "RESULTS.md")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
