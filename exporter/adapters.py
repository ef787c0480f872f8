"""The trainer's adapter folders (docs/FORMATS.md section 3): finding them and checking them against
the base model before any heavy work starts. Pure Python (json + the safetensors header); no torch."""

from __future__ import annotations

import hashlib
import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

from tmd_local.core.errors import TmdError
from tmd_local.core.formats import AdapterMeta
from tmd_local.core.jsonl import parse_json, read_json
from tmd_local.core.roles import ROLES

WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
_LAYER_RE = re.compile(r"\.layers\.(\d+)\.(?:[a-z_]+\.)*?([a-z_]+)\.lora_([AB])\.weight$")


@dataclass
class AdapterInfo:
    module: str
    path: Path
    config: dict
    tmd: AdapterMeta
    weights: Path
    weights_sha256: str
    tensors: dict[str, list[int]] = field(default_factory=dict)  # name -> shape (safetensors only)

    @property
    def rank(self) -> int:
        return int(self.config.get("r", 0))

    @property
    def alpha(self) -> float:
        return float(self.config.get("lora_alpha", 0))

    @property
    def base_claims(self) -> list[str]:
        """What the adapter says its base is: tmd.json's base, then peft's base_model_name_or_path."""
        return [str(x) for x in (self.tmd.base, self.config.get("base_model_name_or_path")) if x]

    def fingerprint(self) -> str:
        """Identifies the adapter's content: weights plus config."""
        h = hashlib.sha256(self.weights_sha256.encode())
        h.update(json.dumps(self.config, sort_keys=True).encode())
        return h.hexdigest()


def discover(adapters_dir: Path, modules: list[str] | None = None) -> list[AdapterInfo]:
    """Adapters under `adapters_dir` (one subfolder per module), or the one adapter folder it is."""
    adapters_dir = Path(adapters_dir)
    if not adapters_dir.is_dir():
        raise TmdError(f"--adapters {adapters_dir}: no such folder")
    if (adapters_dir / "adapter_config.json").is_file():  # a single module's folder
        info = load_adapter(adapters_dir, None)
        if modules and info.module not in modules:
            raise TmdError(f"{adapters_dir}: is the {info.module} adapter, not {', '.join(modules)}")
        return [info]
    wanted = modules or list(ROLES)
    found = []
    for module in wanted:
        sub = adapters_dir / module
        if sub.is_dir():
            found.append(load_adapter(sub, module))
        elif modules:
            raise TmdError(f"--adapters {adapters_dir}: no {module}/ adapter folder")
    if not found:
        raise TmdError(f"--adapters {adapters_dir}: no adapter folders (expected subfolders named "
                       f"{', '.join(ROLES)}, each a peft adapter)")
    return found


def load_adapter(path: Path, module: str | None) -> AdapterInfo:
    config_path = path / "adapter_config.json"
    training = (path / "checkpoints").is_dir()
    hint = " (checkpoints/ is there: training is still running or was interrupted; export the " \
           "finished modules with --modules)" if training else ""
    if not config_path.is_file():
        raise TmdError(f"{path}: not a finished peft adapter folder (no adapter_config.json){hint}")
    config = _read_json(config_path)
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise TmdError(f"{path}: a {config.get('peft_type')} adapter; only LoRA adapters can be exported")
    tmd_path = path / "tmd.json"
    if not tmd_path.is_file():
        raise TmdError(f"{path}: no tmd.json, so training did not finish{hint}; "
                       "the trainer writes tmd.json last")
    tmd = AdapterMeta.from_json(_read_json(tmd_path), str(tmd_path))
    claimed = tmd.module
    if module and claimed and claimed != module:
        raise TmdError(f"{path}: tmd.json says module '{claimed}' but the folder is {module}/")
    module = module or claimed
    if module not in ROLES:
        raise TmdError(f"{path}: unknown module '{module}' (expected one of {', '.join(ROLES)})")
    weights = next((path / w for w in WEIGHT_FILES if (path / w).is_file()), None)
    if weights is None:
        raise TmdError(f"{path}: no adapter_model.safetensors (the adapter weights are missing)")
    tensors = _safetensors_shapes(weights) if weights.suffix == ".safetensors" else {}
    return AdapterInfo(module=module, path=path, config=config, tmd=tmd, weights=weights,
                       weights_sha256=_sha256(weights), tensors=tensors)


def check_against_base(info: AdapterInfo, base_name: str, base_dir: Path) -> None:
    """The adapter must have been trained on this base: by name, and by every LoRA matrix's shape."""
    names = {_norm(base_name), _norm(base_dir.name)}
    for claim in info.base_claims:
        if _norm(claim) not in names and not _same_dir(claim, base_dir):
            raise TmdError(f"{info.path}: adapter was trained on base '{claim}', not '{base_name}' "
                           f"(pass --base {claim} if that is the right base)")
    config = _read_json(base_dir / "config.json")
    expected = _expected_shapes(config)
    n_layers = int(config.get("num_hidden_layers", 0))
    for name, shape in info.tensors.items():
        m = _LAYER_RE.search(name)
        if not m:
            continue
        layer, proj, ab = int(m.group(1)), m.group(2), m.group(3)
        if layer >= n_layers:
            raise TmdError(f"{info.path}: adapter has layer {layer} but base '{base_name}' has "
                           f"{n_layers} layers; it was trained on another base")
        if proj not in expected or len(shape) != 2:
            continue
        d_in, d_out = expected[proj]
        want = [shape[0], d_in] if ab == "A" else [d_out, shape[1]]
        if list(shape) != want:
            raise TmdError(f"{info.path}: {name} has shape {list(shape)}, base '{base_name}' needs "
                           f"{want}; the adapter was trained on another base")


def check_adapter_mode(info: AdapterInfo) -> None:
    """llama.cpp applies plain LoRA only (scale alpha/r on every matrix); refuse what it would misread."""
    c = info.config
    problems = []
    if c.get("use_dora"):
        problems.append("DoRA")
    if c.get("use_rslora"):
        problems.append("rsLoRA scaling")
    if c.get("rank_pattern") or c.get("alpha_pattern"):
        problems.append("per-module rank/alpha patterns")
    if c.get("modules_to_save"):
        problems.append(f"fully trained modules ({', '.join(c['modules_to_save'])})")
    if any("embed" in n or "lm_head" in n for n in info.tensors):
        problems.append("LoRA on the embeddings or lm_head")
    if info.weights.suffix != ".safetensors":
        problems.append("weights in .bin format")
    if problems:
        raise TmdError(f"{info.path}: adapter mode cannot carry {', '.join(problems)}; "
                       "export it with --mode merged")


def _expected_shapes(config: dict) -> dict[str, tuple[int, int]]:
    h = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    kv = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or h // heads)
    inter = int(config.get("intermediate_size", 0))
    return {"q_proj": (h, heads * head_dim), "k_proj": (h, kv * head_dim), "v_proj": (h, kv * head_dim),
            "o_proj": (heads * head_dim, h), "gate_proj": (h, inter), "up_proj": (h, inter),
            "down_proj": (inter, h)}


def _norm(name: str) -> str:
    name = str(name).rstrip("/\\")
    last = re.split(r"[/\\]", name)[-1].lower()
    return last[:-5] if last.endswith(".gguf") else last


def _same_dir(claim: str, base_dir: Path) -> bool:
    try:
        return Path(claim).expanduser().resolve() == base_dir.resolve()
    except OSError:
        return False


def _safetensors_shapes(path: Path) -> dict[str, list[int]]:
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > 100_000_000:
                raise ValueError("header too large")
            header = parse_json(f.read(n), f"{path} (safetensors header)")
    except (OSError, ValueError, struct.error) as e:
        raise TmdError(f"{path}: not a readable safetensors file ({e})") from None
    if not isinstance(header, dict) or not all(isinstance(v, dict) and isinstance(v.get("shape"), list)
                                               for k, v in header.items() if k != "__metadata__"):
        raise TmdError(f"{path}: not a readable safetensors file (a header entry without a shape)")
    return {k: v["shape"] for k, v in header.items() if k != "__metadata__"}


def _read_json(path: Path) -> dict:
    data = read_json(path)
    if not isinstance(data, dict):
        raise TmdError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _sha256(path: Path) -> str:
    from tmd_local.core.registry import file_sha256

    return file_sha256(path)
