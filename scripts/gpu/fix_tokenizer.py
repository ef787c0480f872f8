"""The GPU machine's transformers (5.17) read the embedded GGUF's tokenizer differently from this
machine's: its tokenizer.json has no pre-tokenizer llama.cpp's converter recognises (the GGUF came out
with `pre = default` and printed raw byte tokens), and its EOS was <|im_start|> (id 1), so the
adapters trained there end every target with <|im_start|> instead of <|im_end|>. This puts the base's
own tokenizer files back and keeps the EOS the adapter was trained with, so the export writes a
GGUF whose vocabulary is the base's and whose EOS is where the model stops.
usage: fix_tokenizer.py <adapter folder> <base HF folder>"""

import json
import shutil
import sys
from pathlib import Path

adapter, base = Path(sys.argv[1]), Path(sys.argv[2])
trained = json.loads((adapter / "tokenizer_config.json").read_text())
shutil.copy(base / "tokenizer.json", adapter / "tokenizer.json")
config = json.loads((base / "tokenizer_config.json").read_text())
if trained.get("eos_token") != config.get("eos_token"):
    config["eos_token"] = trained["eos_token"]
    print(f"{adapter}: EOS kept as trained: {trained['eos_token']!r} (base: {json.loads((base / 'tokenizer_config.json').read_text()).get('eos_token')!r})")
(adapter / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
