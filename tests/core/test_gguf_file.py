"""GGUF headers and summaries read without loading the model; the figures match gguf-py's GGUFReader."""

import pytest

from tmd_local.core.errors import TmdError
from tmd_local.core.gguf_file import read_gguf_header, read_gguf_info
from tmd_local.core.registry import gguf_summary


def test_gguf_header_is_read_without_the_vocabulary(embedded_model):
    header = read_gguf_header(embedded_model.path)
    assert header["general.architecture"] == "llama"
    assert header["llama.block_count"] == 30 and header["llama.attention.head_count_kv"] == 3
    assert header["tokenizer.ggml.tokens"] is None  # 49152 strings skipped, not decoded
    assert "im_start" in header["tokenizer.chat_template"]


def test_gguf_tensor_types_are_listed(embedded_model):
    tensors = read_gguf_header(embedded_model.path, tensors=True)["tensors"]
    assert len(tensors) == 272 and tensors["blk.0.attn_q.weight"] == 3  # q4_1


def test_truncated_header_is_a_clear_error(tmp_path, embedded_model):
    cut = tmp_path / "cut.gguf"
    with open(embedded_model.path, "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(4096))
    with pytest.raises(TmdError, match="truncated or corrupt"):
        read_gguf_header(cut)


def test_info_is_read_from_the_header(embedded_model):
    info = read_gguf_info(embedded_model.path)
    assert (info.general_type, info.architecture, info.file_type) == ("model", "llama", "q4_1")
    assert info.n_tensors == 272 and info.tensor_types == {"F32": 61, "Q4_1": 210, "Q8_0": 1}
    assert info.size_bytes == embedded_model.path.stat().st_size
    assert info.eos_token_ids == [2] and "im_start" in info.chat_template and info.lora_alpha is None
    assert gguf_summary(embedded_model.path) == {"params": info.n_elements, "file_type": "q4_1",
                                                 "bits_per_weight": round(info.bits_per_weight, 3),
                                                 "size_bytes": info.size_bytes}


@pytest.mark.slow
def test_info_figures_are_gguf_readers(embedded_model):
    from gguf import GGUFReader

    reader = GGUFReader(str(embedded_model.path))
    info = read_gguf_info(embedded_model.path)
    assert info.n_elements == sum(int(t.n_elements) for t in reader.tensors)
    assert info.tensor_bytes == sum(int(t.n_bytes) for t in reader.tensors)
    assert info.type_elements == {name: sum(int(t.n_elements) for t in reader.tensors if t.tensor_type.name == name)
                                  for name in info.tensor_types}


def test_truncated_tensor_data_is_a_clear_error(tmp_path, embedded_model):
    cut = tmp_path / "cut.gguf"
    size = embedded_model.path.stat().st_size
    with open(embedded_model.path, "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(size - 1))
    read_gguf_header(cut)  # the header itself is whole
    with pytest.raises(TmdError, match="GGUF is truncated: tensor .* ends past the file") as e:
        read_gguf_info(cut)
    assert "\n" not in str(e.value)
