#!/usr/bin/env bash
# Fills fuzz/corpus/<target>/ with small real pickles (the committed fixtures) as seeds.
set -euo pipefail
cd "$(dirname "$0")"
for t in pickle checkpoint; do
    mkdir -p "corpus/$t"
    cp ../nodes/tests/data/pickle/*.pkl "corpus/$t/"
done
# A tiny safetensors file for the checkpoint target: one f32 tensor "a" of shape [2].
printf '%s' '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}' > /tmp/odelt-st-header
python3 - <<'PY'
import struct
h = open('/tmp/odelt-st-header', 'rb').read()
open('corpus/checkpoint/tiny.safetensors', 'wb').write(struct.pack('<Q', len(h)) + h + struct.pack('<2f', 1.0, 2.0))
PY
# The workflow target: the example workflows, each also as a POST /prompt body.
mkdir -p corpus/workflow
for f in ../examples/workflows/*.json; do
    b=$(basename "$f" .json)
    cp "$f" "corpus/workflow/$b.json"
    python3 -c 'import json,sys; p=json.load(open(sys.argv[1])); print(json.dumps({"prompt": p, "client_id": "c", "extra_data": {"extra_pnginfo": {"workflow": {}}}, "partial_execution_targets": list(p)[-1:]}))' "$f" > "corpus/workflow/$b.body.json"
done
echo "seeded: $(ls corpus/pickle | wc -l) pickle, $(ls corpus/checkpoint | wc -l) checkpoint, $(ls corpus/workflow | wc -l) workflow"
