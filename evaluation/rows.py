"""The result-row schema: where a run's rows live, what identifies one, and which of several copies counts.

``evaluation.run`` writes rows (one JSON line each) to ``<run>/results.jsonl``; ``ablations`` reads them into tables.
Both take the file name, the key and the latest-row rule from here. No torch import: the table tools load fast.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

#: a run folder's result rows, one JSON object per line (appended, never rewritten)
RESULTS_FILE = "results.jsonl"

#: what identifies a row within a run folder: re-evaluating skips a key already present, and of two rows with the
#: same key (``--force`` appends) readers keep the later one
KEY_FIELDS = ("metric", "T", "sampler", "solver", "N", "seeds", "feature_extractor", "feature_extractor_weights_sha256",
              "reference", "repr", "checkpoint_step", "weights", "noise_t", "mi_estimator")
#: key fields only some metrics carry (``mi_bits``: the noise level t and the estimator spec); a row without them
#: reads them as None, so older rows keep their keys and other metrics' rows do not grow these columns
OPTIONAL_KEY_FIELDS = ("noise_t", "mi_estimator")


def _hashable(v: Any) -> Any:
    return json.dumps(v, sort_keys=True) if isinstance(v, (list, dict)) else v


def row_key(row: dict) -> tuple:
    """The row's :data:`KEY_FIELDS` values (lists and dicts as JSON text, so the key is hashable)."""
    return tuple(_hashable(row.get(k)) for k in KEY_FIELDS)


def latest_rows(rows: Iterable[dict], *, per_run: bool = True) -> list[dict]:
    """One row per key (per run folder and key when ``per_run``): the last one written, in first-seen order."""
    out: dict[tuple, dict] = {}
    for r in rows:
        out[((r.get("run_dir"),) if per_run else ()) + row_key(r)] = r
    return list(out.values())
