# furpe: `make demo` sets up and runs the bundled example; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# the Khronos glTF validator (npm package gltf-validator, pinned in package.json), for the
# export tests
NODE_STAMP := node_modules/.installed
TORCH_VERSION ?= 2.13.0

.PHONY: install demo test bench bench-attribution results bench-real bench-label bench-network bench-training bench-training-distill bench-video bench-real-network clean

install: $(STAMP) $(NODE_STAMP)

# torch goes first and pinned (a plain `torch` requirement would pull a CUDA build).
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==$(TORCH_VERSION)
	$(PIP) install -q -e ".[test]"
	@touch $(STAMP)

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $(NODE_STAMP)

demo: install
	$(VENV)/bin/furpe reconstruct examples/astronaut.jpg -o out/demo
	@echo "Results are in out/demo/ (astronaut.json, astronaut_overlay.png, astronaut_person0.ply)"

test: install
	$(PY) -m pytest -q

# each writes its own section of docs/results.md (the rest of the file is kept)
bench: install
	$(PY) benchmarks/bench_reconstruct.py --n 50 --seed 0

# where the expert path's error comes from: the fit again with each expert output replaced by
# the truth (2D or 3D landmarks of body, hands, face) on 40 renders
bench-attribution: install
	$(PY) benchmarks/bench_attribution.py --n 40 --seed 100

# the results page: the standard synthetic set (200 images, seed 0) evaluated per part
results: install
	$(PY) benchmarks/results_page.py --n 200 --seed 0

# real annotated photos (../shared/data/real, not in the repository): people, body, hands and
# faces found and their 2D/3D errors, per expert configuration (--config FILE, repeatable)
# furpe label: images/s with 1 and 2 workers, and the cost of writing shards
bench-label: install
	$(PY) benchmarks/bench_label.py --n 16 --seed 0

# the trained network (shipped checkpoint) against the expert path: accuracy and speed
bench-network: install
	$(PY) benchmarks/bench_network.py --n 50

# learning from pseudo labels and the recipes' ablation: 960 renders of the evaluation set's
# scenes (another seed), their exact truth and their expert labels, one network per variant
# (about 80 minutes on 2 CPU cores: 12 renders and labels, 55 features and training, 10 scoring)
out/train-eval-6/manifest.json: | install
	$(PY) -m furpe make-synthetic out/train-eval-6 --n 960 --seed 6000 --size 640 \
		--format webdataset --shard-size 240 -q
out/train-labels-6/index.json: out/train-eval-6/manifest.json
	$(PY) -m furpe label out/train-eval-6/images -o out/train-labels-6 --shard-size 240 \
		--workers 2 -q
bench-training: out/train-labels-6/index.json
	$(PY) benchmarks/bench_training.py --steps 500 --batch-size 64 --passes 25 \
		--truth out/train-eval-6/shards --labels out/train-labels-6 \
		--runs runs/bench-training-eval6 --n 100

# the distillation ablation per part: the body (BlazePose Full) or hand encoder trains, so
# every step runs the encoders on fresh views (no feature pool); same renders and held-out
# set as above (about 2 h on 2 CPU cores: 19, 27, 31 and 38 minutes of training, 7 scoring)
bench-training-distill: out/train-labels-6/index.json
	$(PY) benchmarks/bench_training.py --steps 500 --batch-size 16 --passes 1 \
		--only 'expert labels, body encoder trained' \
		'expert labels, body encoder trained + distillation' \
		'expert labels, hand encoder trained' \
		'expert labels, hand encoder trained + distillation' \
		--truth out/train-eval-6/shards --labels out/train-labels-6 \
		--runs runs/bench-training-distill-eval6 --section bench_training_distill --n 100

# videos: identity switches, jitter (acceleration error) and MPJPE on a generated two-person
# clip with exact truth, per frame cold vs a video session without and with smoothing; tracks
# and warm-start throughput on the real street video ../shared/data/real/opencv/vtest.avi
bench-video: install
	$(PY) benchmarks/bench_video.py --frames 40 --seed 0 --real-frames 60 --cold-frames 10

bench-real: install
	$(PY) benchmarks/real_photos.py --config configs/default.yaml --config configs/fast.yaml \
		--config configs/no-person-detector.yaml

# the shipped network, alone, with --flip-test, --refine and --fit-landmarks, against the expert path on the same photos
bench-real-network: install
	$(PY) benchmarks/real_photos.py --config configs/default.yaml --config configs/network.yaml \
		--config configs/network-flip.yaml --config configs/network-refine.yaml \
		--config configs/network-fit.yaml \
		--sets crowdpose,ochuman,aic,mpii,mhp,exlpose,jhmdb,posetrack18,panoptic \
		--section real_photos_network

clean:
	rm -rf out .pytest_cache
