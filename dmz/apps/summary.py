"""``<out>/summary.md``: the three applications' ``scores.json`` (``interpolate/``, ``manipulate/``, ``translate/``
under ``out``) as Markdown tables. Imports only the standard library."""

from __future__ import annotations

import json
from pathlib import Path


def _load(path: Path) -> dict | None:
    f = path / "scores.json"
    return json.loads(f.read_text()) if f.exists() else None


def _f(x, nd=3) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


def interpolate_table(s: dict) -> list[str]:
    lines = [f"Interpolation: {len(s['pairs'])} test pairs (different digits), T={s['T']}, Hamming distance "
             f"{min(s['hamming'])}-{max(s['hamming'])} bits; feature distances in {s['feature_extractor']} "
             "(means over pairs).", "",
             "| method | mean step | max step | max / mean | end-to-end | path / end-to-end |",
             "|---|---:|---:|---:|---:|---:|"]
    order = ["index", "random", "smooth", "relaxed", "xt10", "xt30", "xt50", "xt70", "xt90"]  # scores.json is sorted
    for m, v in sorted(s["methods"].items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99):
        lines.append(f"| `{m}` | {_f(v['mean_step'])} | {_f(v['max_step'])} | {_f(v['max_over_mean'], 2)} | "
                     f"{_f(v['endpoint_dist'])} | {_f(v['path_over_endpoint'], 2)} |")
    return lines


def manipulate_table(s: dict) -> list[str]:
    n = sum(a["n_sources"] for a in s["attributes"].values())
    acc = [a["classifier_test_balanced_accuracy"] for a in s["attributes"].values()]
    lines = [f"Manipulation: attributes {', '.join(s['attributes'])} ({n} source images in all, none showing the "
             f"attribute), decoded from {s['start']}T of T={s['T']}; linear classifiers on the codes: balanced test "
             f"accuracy {min(acc):.2f}-{max(acc):.2f}. Means over attributes.", "",
             "| alpha | P(attribute) | labelled as attribute | code on attribute side | bits changed | "
             "feature dist. to source | to alpha=0 |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for a, v in sorted(s["mean_over_attributes"].items(), key=lambda kv: float(kv[0])):
        lines.append(f"| {float(a):+g} | {_f(v.get('p_attribute'))} | {_f(v.get('labelled_attribute'))} | "
                     f"{_f(v['code_has_attribute'])} | {_f(v['bits_changed'])} | {_f(v['dist_to_source'])} | "
                     f"{_f(v.get('dist_to_alpha0'))} |")
    return lines


def translate_table(s: dict) -> list[str]:
    m = s["mapper"]
    lines = [f"Translation {s['source_dataset']} -> {s['target_dataset']}: {s['n']} test pairs, T={s['T']}; mapping "
             f"MLP best epoch {m['best_epoch']}, held-out bit accuracy {m['val_bit_accuracy']:.3f}. FID against the "
             f"target training split ({next(iter(s['sets'].values()))['feature_extractor']}, N={s['n']}).", "",
             "| codes decoded by the target model | FID | labelled as the source's digit | bit accuracy | "
             "pixel MSE to the paired image |", "|---|---:|---:|---:|---:|"]
    names = {"mapped": "mapped from the source codes (translation)",
             "oracle": "target's own codes of the paired images (oracle)", "prior": "Bernoulli(0.5) (no source)",
             "real": "the paired target images themselves (no decoding)"}
    for k, v in sorted(s["sets"].items(), key=lambda kv: list(names).index(kv[0]) if kv[0] in names else 99):
        lines.append(f"| {names.get(k, k)} | {_f(v['fid'], 2)} | {_f(v.get('labelled_as_source_digit'))} | "
                     f"{_f(v['bit_accuracy'])} | {_f(v['mse_to_paired_target'])} |")
    return lines


def write_summary(out: Path, times: dict | None = None) -> Path:
    out = Path(out)
    parts = ["# Applications of the binary latent on digits", "",
             "Written by `python ablations/run_apps.py` from the `scores.json` files beside this one.", ""]
    for name, fn in (("interpolate", interpolate_table), ("manipulate", manipulate_table),
                     ("translate", translate_table)):
        s = _load(out / name)
        if s is not None:
            parts += [f"## {name}", ""] + fn(s) + [""]
    if times:
        parts += ["Wall times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()), ""]
    path = out / "summary.md"
    path.write_text("\n".join(parts))
    return path
