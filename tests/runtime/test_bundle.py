"""Bundle manifests -> module sets, and every way a manifest can be wrong (one line, file + field)."""

import json

import pytest

from runtime_helpers import ROLES, file_entry, write_manifest
from tmd_local.runtime.bundle import QuantChoice, load_bundle, open_source, zero_shot_bundle
from tmd_local.core.errors import TmdError
from tmd_local.runtime.generation import ModuleRef


def test_merged_bundle_gives_a_module_per_role(linked_bundle, embedded_model):
    bundle = load_bundle(linked_bundle)
    assert bundle.name == "linked" and bundle.quants == ["q4_1"] and bundle.default_quant == "q4_1"
    modules = bundle.module_set()
    assert modules.label == "linked (q4_1)"
    for role in ROLES:
        ref = modules.for_stage(role)
        assert isinstance(ref, ModuleRef) and ref.name == f"linked/{role}" and ref.quant == "q4_1"
        assert ref.path == embedded_model.path  # links resolve: the same file, so one load serves all
        assert ref.sha256_expected == embedded_model.sha256() and ref.size == embedded_model.path.stat().st_size
    assert load_bundle(linked_bundle / "manifest.json").roles.keys() == bundle.roles.keys()


def test_quants_default_and_unknown_quant(tmp_path, embedded_model):
    folder = tmp_path / "multi"
    folder.mkdir()
    for quant in ("f16", "q8_0", "q4_k_m"):
        (folder / f"m.{quant}.gguf").symlink_to(embedded_model.path)
    files = {q: file_entry(folder / f"m.{q}.gguf") for q in ("f16", "q8_0", "q4_k_m")}
    modules = {role: {"mode": "merged", "files": files} for role in ROLES}
    modules["drd"] = {"mode": "merged", "files": {"f16": files["f16"], "q8_0": files["q8_0"]}}
    bundle = load_bundle(write_manifest(folder, modules))
    assert bundle.quants == ["f16", "q8_0"] and bundle.default_quant == "q8_0"
    assert bundle.module_set("f16").analyzer.quant == "f16"
    with pytest.raises(TmdError, match=r"no 'q4_k_m' files for every role; available: f16, q8_0"):
        bundle.module_set("q4_k_m")
    # One module at a time: the roles that list q4_k_m may run it while the others stay in f16.
    mix = bundle.module_set("f16,reasoner=q4_k_m")
    assert [m.quant for m in (mix.analyzer, mix.informant, mix.reasoner, mix.drd)] == ["f16", "f16", "q4_k_m", "f16"]
    assert mix.label.endswith("(f16,reasoner=q4_k_m)")
    assert bundle.module_set("analyzer=q4_k_m").analyzer.quant == "q4_k_m"  # others: default_quant
    assert bundle.module_set("analyzer=q4_k_m").informant.quant == "q8_0"
    with pytest.raises(TmdError, match=r"no 'q4_k_m' file for drd; available: f16, q8_0"):
        bundle.module_set("f16,drd=q4_k_m")


@pytest.mark.parametrize("text, message", [
    ("f16,q8_0", "expected one quant and role=quant overrides"),
    ("f16,critic=q8_0", "role=quant with role one of analyzer, informant, reasoner, drd"),
    ("f16,reasoner=", "role=quant"),
])
def test_quant_text_errors_name_what_was_expected(text, message):
    with pytest.raises(TmdError, match=message):
        QuantChoice.parse(text)


def test_quant_choice_text_round_trips():
    choice = QuantChoice.parse(" F16 , Reasoner=Q4_K_M ")
    assert choice == QuantChoice("f16", {"reasoner": "q4_k_m"})
    assert choice.with_default("f16") == "f16,reasoner=q4_k_m"
    assert QuantChoice.parse(choice.with_default("f16")) == choice
    assert QuantChoice.parse("reasoner=f16").with_default("f16") == "f16"  # an override equal to the default
    assert QuantChoice.of({"analyzer": "q4_k_m", "informant": "f16"}).text == "f16,analyzer=q4_k_m"  # tie: precise
    assert QuantChoice.of({"analyzer": "q4_k_m", "informant": "q4_k_m", "reasoner": "f16"}).text == "q4_k_m,reasoner=f16"


def test_base_and_adapter_roles(tmp_path, embedded_model, loras):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "base.q4_1.gguf").symlink_to(embedded_model.path)
    (folder / "analyzer.lora.gguf").symlink_to(loras["a"])
    (folder / "reasoner.lora.gguf").symlink_to(loras["b"])
    modules = {
        "analyzer": {"mode": "adapter", "files": {"q4_1": file_entry(folder / "base.q4_1.gguf")},
                     "adapter": file_entry(folder / "analyzer.lora.gguf")},
        "informant": {"mode": "base"},  # no files: the registry base model, zero-shot
        "reasoner": {"mode": "adapter", "adapter": file_entry(folder / "reasoner.lora.gguf")},
        "drd": {"mode": "base", "files": {"q4_1": file_entry(folder / "base.q4_1.gguf")}},
    }
    modules_set = load_bundle(write_manifest(folder, modules)).module_set("q4_1")
    analyzer, informant, reasoner = modules_set.analyzer, modules_set.informant, modules_set.reasoner
    assert analyzer.adapter == loras["a"].resolve() and analyzer.path == embedded_model.path
    assert analyzer.adapter_sha256_expected == file_entry(loras["a"])["sha256"]
    assert informant.adapter is None and informant.path == embedded_model.path
    assert reasoner.adapter == loras["b"].resolve() and reasoner.path == embedded_model.path
    assert modules_set.drd.adapter is None


def _bad(tmp_path, linked_bundle, mutate):
    path = linked_bundle / "manifest.json"
    data = json.loads(path.read_text())
    mutate(data)
    path.write_text(json.dumps(data))
    with pytest.raises(TmdError) as e:
        load_bundle(linked_bundle).module_set()
    message = str(e.value)
    assert "\n" not in message and message.startswith(str(path.resolve().parent))
    return message


@pytest.mark.parametrize("mutate, fragment", [
    (lambda d: d.update(format="tmd-bundle/9"), "field 'format': expected 'tmd-bundle/1'"),
    (lambda d: d.pop("base"), "field 'base'"),
    (lambda d: d["modules"].pop("reasoner"), "field 'modules.reasoner': missing"),
    (lambda d: d["modules"]["analyzer"].update(mode="lora"), "field 'modules.analyzer.mode': expected one of"),
    (lambda d: d["modules"]["informant"]["files"]["q4_1"].update(sha256="abc"),
     "field 'modules.informant.files.q4_1.sha256': expected 64 hex characters, got 'abc'"),
    (lambda d: d["modules"]["drd"]["files"]["q4_1"].pop("file"), "field 'modules.drd.files.q4_1.file'"),
    (lambda d: d["modules"]["drd"]["files"]["q4_1"].update(size=-3), "field 'modules.drd.files.q4_1.size'"),
    (lambda d: d["modules"]["analyzer"].update(mode="adapter"), "field 'modules.analyzer.adapter': mode 'adapter'"),
    (lambda d: d["modules"]["analyzer"].update(files={}), "field 'modules.analyzer.files': mode 'merged' needs"),
    (lambda d: d["modules"]["analyzer"]["files"]["q4_1"].update(file="gone.gguf"),
     "modules.analyzer.files.q4_1: file .*gone.gguf is missing"),
    (lambda d: d["modules"]["reasoner"]["files"]["q4_1"].update(size=10**9),
     "modules.reasoner.files.q4_1: file .* is truncated"),
])
def test_manifest_errors_name_file_and_field(tmp_path, linked_bundle, mutate, fragment):
    import re

    assert re.search(fragment, _bad(tmp_path, linked_bundle, mutate))


def test_unreadable_manifests(tmp_path):
    with pytest.raises(TmdError, match="no bundle manifest here"):
        load_bundle(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(TmdError, match=r"manifest.json: not valid JSON \(.* at line 1\)"):
        load_bundle(tmp_path)
    (tmp_path / "manifest.json").write_text("[]")
    with pytest.raises(TmdError, match="expected a JSON object, got list"):
        load_bundle(tmp_path)


def test_zero_shot_bundle_from_a_model(embedded_model):
    bundle = zero_shot_bundle("smollm2-135m-instruct")
    assert bundle.quants == ["q4_1"] and bundle.manifest_path is None
    modules = bundle.module_set()
    assert {modules.for_stage(r).path for r in ROLES} == {embedded_model.path}
    assert modules.analyzer.name == "smollm2-135m-instruct"


def test_open_source_picks_bundle_or_model(linked_bundle, embedded_model):
    assert open_source(bundle=linked_bundle).name == "linked"
    assert open_source(model=str(linked_bundle)).name == "linked"  # a folder given as --model
    assert open_source().name == "smollm2-135m-instruct"
    assert open_source(model=str(embedded_model.path)).name == embedded_model.path.stem
    with pytest.raises(TmdError, match="not a known model name"):
        open_source(model="no-such-model")


def test_default_quant_from_the_manifest(tmp_path, embedded_model):
    folder = tmp_path / "dq"
    folder.mkdir()
    for quant in ("q8_0", "q4_k_m"):
        (folder / f"m.{quant}.gguf").symlink_to(embedded_model.path)
    files = {q: file_entry(folder / f"m.{q}.gguf") for q in ("q8_0", "q4_k_m")}
    bundle = load_bundle(write_manifest(folder, {r: {"mode": "merged", "files": files} for r in ROLES},
                                        default_quant="q4_k_m"))
    assert bundle.default_quant == "q4_k_m" and bundle.module_set().analyzer.quant == "q4_k_m"


def test_merged_roles_can_run_as_base_plus_adapter(tmp_path, embedded_model, loras):
    folder = tmp_path / "both"
    folder.mkdir()
    (folder / "base.q8_0.gguf").symlink_to(embedded_model.path)
    modules = {}
    for role, lora in (("analyzer", "a"), ("informant", "b"), ("reasoner", "a"), ("drd", "b")):
        (folder / f"{role}.q8_0.gguf").symlink_to(embedded_model.path)
        (folder / f"{role}.lora.gguf").symlink_to(loras[lora])
        modules[role] = {"mode": "merged", "files": {"q8_0": file_entry(folder / f"{role}.q8_0.gguf")},
                         "adapter": {**file_entry(folder / f"{role}.lora.gguf"),
                                     "base_files": {"q8_0": file_entry(folder / "base.q8_0.gguf")}}}
    bundle = load_bundle(write_manifest(folder, modules))
    assert bundle.choices() == ["q8_0", "q8_0+lora"]
    assert QuantChoice.parse("Q8_0+LoRA") == QuantChoice("q8_0", {}, True)
    merged = bundle.module_set("q8_0")
    assert merged.analyzer.adapter is None
    as_adapters = bundle.module_set("q8_0", prefer_adapter=True)
    assert as_adapters.analyzer.adapter == loras["a"].resolve()
    assert as_adapters.informant.adapter == loras["b"].resolve()
    assert as_adapters.label == "both (q8_0, base + adapters)"


def test_file_names_must_stay_inside_the_bundle(tmp_path, linked_bundle):
    import re

    for name in ("../../etc/passwd", "/abs/model.gguf"):
        message = _bad(tmp_path, linked_bundle,
                       lambda d: d["modules"]["drd"]["files"]["q4_1"].update(file=name))
        assert re.search(r"modules.drd.files.q4_1.file': .* must be a plain name inside the bundle", message)


def test_reads_what_the_exporter_writes(tmp_path, embedded_model, loras):
    """Contract: a manifest written by exporter/bundle.py is read by the app's reader."""
    exporter = pytest.importorskip("exporter.bundle")
    folder = tmp_path / "exported"
    folder.mkdir()
    import shutil

    shutil.copyfile(embedded_model.path, folder / "analyzer.q4_1.gguf")
    shutil.copyfile(loras["a"], folder / "reasoner.lora.gguf")
    modules = {"analyzer": {"mode": "merged", "files": {"q4_1": exporter.file_entry(folder, "analyzer.q4_1.gguf")}},
               "informant": exporter.base_module_entry(),
               "reasoner": {"mode": "adapter", "adapter": exporter.file_entry(folder, "reasoner.lora.gguf")},
               "drd": exporter.base_module_entry()}
    exporter.write_manifest(folder, exporter.new_manifest(modules, base="smollm2-135m-instruct"))
    modules_set = load_bundle(folder).module_set("q4_1")
    assert modules_set.analyzer.path == (folder / "analyzer.q4_1.gguf").resolve()
    assert modules_set.reasoner.adapter == (folder / "reasoner.lora.gguf").resolve()
    assert modules_set.informant.path == embedded_model.path


def test_a_bundle_trained_on_other_prompts_warns_once_and_labels_its_results(tmp_path, embedded_model):
    from tmd_local.evaluation.evaluate import run_config
    from tmd_local.runtime.generation import GenerationSettings
    from tmd_local.core.prompts import PROMPT_VERSION

    folder = tmp_path / "old"
    folder.mkdir()
    link = folder / "m.q4_1.gguf"
    link.symlink_to(embedded_model.path)
    training = {"questions": 9, "examples": 9, "steps": 3, "epochs": 1.0, "lr": 1e-4}
    modules = {role: {"mode": "merged", "files": {"q4_1": file_entry(link)}, "training": training}
               for role in ROLES}
    bundle = load_bundle(write_manifest(folder, modules, prompt_version="paper-appendix-a/v0"))
    assert len(bundle.warnings) == 1 and "'paper-appendix-a/v0' differs from this tmd's" in bundle.warnings[0]
    config = run_config("drd", bundle.module_set(), GenerationSettings(), dataset="strategyqa", split="test",
                        source=bundle, questions={"source": "s", "limit": None, "n": 1})
    assert config["prompt_version"] == "paper-appendix-a/v0" != PROMPT_VERSION  # the bundle's, not the code's
    assert config["teacher"] == "gold" and config["models"]["drd"]["training"] == training
    assert list(config)[-1] == "questions"
    current = load_bundle(write_manifest(tmp_path / "new", {r: {"mode": "base"} for r in ROLES}))
    assert current.warnings == [] and current.prompt_version == PROMPT_VERSION
    zero_shot = run_config("drd", zero_shot_bundle(embedded_model).module_set(), GenerationSettings(),
                           dataset="strategyqa", split="test", source=zero_shot_bundle(embedded_model))
    assert zero_shot["prompt_version"] == PROMPT_VERSION and "questions" not in zero_shot
