"""`tmd serve --bundle` on an exported bundle (tiny random Llama, fine-tuned analyzer + zero-shot roles),
answered through the `openai` client on 127.0.0.1."""

from __future__ import annotations

import os

import pytest

from exporter.export import ExportOptions, export
from tmd_local.serve.process import ServerProcess


@pytest.mark.slow
def test_serve_answers_the_openai_client_from_an_exported_bundle(tiny_adapters, tiny_base, converter,
                                                                 tmp_path):
    import openai

    out = tmp_path / "tiny-served"
    export(ExportOptions(adapters=tiny_adapters, out=out, quants=["q8_0"], threads=1, base=str(tiny_base),
                         zero_shot=["informant", "reasoner", "drd"], min_agreement=0.9))
    env = {"PYTHONPATH": os.getcwd(), "OMP_WAIT_POLICY": "PASSIVE"}
    with ServerProcess(["--bundle", str(out), "--threads", "1", "--n-ctx", "1024"], log=tmp_path / "serve.log",
                       env=env) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=120)
        assert [m.id for m in client.models.list().data] == ["tmd", "drd", "mc"]
        reply = client.chat.completions.create(
            model="tmd", max_tokens=8,
            messages=[{"role": "user", "content": "Is ice cold?\nA. yes\nB. no"}])
        extra = reply.model_extra["tmd"]
        assert extra["bundle"].startswith("tiny-served (q8_0")
        trace = extra["trace"]
        assert trace["stages"]["analyzer"]["model"] == "tiny-served/analyzer"
        assert trace["stages"]["analyzer"]["file_type"] == "q8_0"
        assert reply.choices[0].message.content.endswith(
            f"Answer: {trace['answer']}. {trace['question']['options'][trace['answer']]}")
