#!/usr/bin/env bash
# The pipeline on CPU inside the training image, as docker/test_images.sh runs it (--network none): built-in
# synthetic scans, shards on a local Ray, a 2-rank --cpu pretrain under the deepspeed launcher, a timm export,
# a fine-tune from the pretraining export. Tiny sizes: this proves the image works, not the model.
set -euo pipefail
cd "$(mktemp -d /workspace/smoke.XXXXXX)"
export OMP_NUM_THREADS=1  # two ranks on a shared CPU: a second intra-op thread per process only spins

step() { printf '[pipeline] %s\n' "$*"; }

step "sample data: 40 unlabeled scans, 2 x 8 labelled"
python -c "from usfmae.testing.synthetic import write_corpus, write_labeled
write_corpus('corpus', 40, seed=5, size=128)
write_labeled('labeled', n_per_class=8, seed=6, size=64)"

step "usfmae build-shards"
usfmae build-shards --input corpus --output shards --shard-size 20
python -c "import json; n = json.load(open('shards/manifest.json'))['total_samples']; assert n == 40, n"

step "usfmae pretrain --nproc 2 --cpu (deepspeed launcher, gloo)"
usfmae pretrain --nproc 2 --cpu --config pretrain_tiny --shards shards --output pretrain \
  --max-steps 3 --set logging.every_steps=1
python -c "import json; rows = [json.loads(l) for l in open('pretrain/metrics.jsonl')]
steps = [r['step'] for r in rows if 'loss' in r]; assert steps == [1, 2, 3], steps"

step "usfmae export --format timm"
usfmae export --checkpoint pretrain --format timm --out encoder_timm.safetensors
python -c "from safetensors import safe_open; keys = list(safe_open('encoder_timm.safetensors', 'pt').keys())
assert any(k.startswith('blocks.') for k in keys), keys[:5]"

step "usfmae finetune from the pretraining export"
usfmae finetune --checkpoint pretrain/model.safetensors --data labeled --output finetune \
  --set epochs=1 --set batch_size=8 --set num_workers=0
python -c "import json; m = json.load(open('finetune/metrics.json')); assert 'macro' in m, list(m)"

step "all steps passed"
