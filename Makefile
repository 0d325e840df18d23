# fernb: the two commands a newcomer needs are `make run` (all notebooks on the embedded default data) and
# `make test` (the whole test suite). Both create the virtual environment first when it is missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.fernb-installed
OUT    ?= outputs
# passive OpenMP waiting: spinning threads slow torch down many-fold when another process shares the cores
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: venv detectors run smoke test lint format typecheck browser bench lab clean-outputs help

help:
	@echo "make run    - set up .venv if needed, run every notebook top to bottom (papermill) -> $(OUT)/notebooks"
	@echo "make smoke  - the same in smoke mode (seconds per notebook, as CI runs them)"
	@echo "make test   - set up .venv and the face detectors if needed, run the test suite (what .ci/run calls)"
	@echo "make lint   - ruff over the package, tests, benchmarks and notebooks"
	@echo "make format - ruff format, ruff's import sorting and fixes, nbstripout on the notebooks"
	@echo "make typecheck - mypy over fernb/, against the baseline in .ci/mypy-baseline"
	@echo "make browser - install Debian's chromium for the JupyterLab browser test (apt-get; root or sudo)"
	@echo "make detectors - install the MTCNN and MediaPipe face detectors into .venv (pip --no-deps; make test runs it)"
	@echo "make bench  - print the benchmark tables"
	@echo "make lab    - open JupyterLab on the notebooks"

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (fernb)" >/dev/null
	touch $(STAMP)

# Face detectors whose weights ship inside PyPI wheels (fernb/data/faces/detectors.py), installed with --no-deps: their
# metadata pins old torch, numpy and OpenCV and asks for opencv-contrib, none of which they need. MTCNN: facenet-pytorch
# 2.6.0 (weights in the wheel). MediaPipe: the runtime of mediapipe 0.10.35 (no protobuf pin, so onnx's protobuf 6
# stays) and the BlazeFace model file from the mediapipe 0.10.14 wheel (the last ones that ship it; that wheel's own
# runtime needs protobuf < 5), unpacked to $(BLAZEFACE); pip fetches both, nothing is fetched at run time.
BLAZEFACE := $(VENV)/share/fernb/face_detection_short_range.tflite

detectors: venv
	$(PY) -m pip install -q --no-deps facenet-pytorch==2.6.0 mediapipe==0.10.35 'absl-py>=2.3' 'flatbuffers>=25.9'
	test -f $(BLAZEFACE) || { rm -rf $(VENV)/.mp-wheel && $(PY) -m pip download -q --no-deps --only-binary=:all: \
		--python-version 3.11 --platform manylinux2014_x86_64 mediapipe==0.10.14 -d $(VENV)/.mp-wheel && \
		mkdir -p $(dir $(BLAZEFACE)) && $(PY) -c "import glob, sys, zipfile; \
		z = zipfile.ZipFile(glob.glob('$(VENV)/.mp-wheel/*.whl')[0]); \
		open(sys.argv[1], 'wb').write(z.read('mediapipe/modules/face_detection/face_detection_short_range.tflite'))" \
		$(BLAZEFACE) && rm -rf $(VENV)/.mp-wheel; }
	$(PY) -c "from fernb.data.faces import available_detectors as a; print('face detectors:', *a())"

run: venv
	$(PY) -m fernb notebooks --out $(OUT)/notebooks

smoke: venv
	$(PY) -m fernb notebooks --smoke --out $(OUT)/notebooks-smoke

# pytest only: the synthetic data and UMAP's numba kernels are warmed by session fixtures (tests/conftest.py)
test: venv detectors
	$(PY) -m pytest

lint: venv
	$(VENV)/bin/ruff check fernb tests benchmarks notebooks
	$(VENV)/bin/ruff format --check fernb tests benchmarks

format: venv
	$(VENV)/bin/ruff check --fix fernb tests benchmarks notebooks
	$(VENV)/bin/ruff format fernb tests benchmarks
	$(VENV)/bin/nbstripout --keep-id notebooks/*.ipynb

typecheck: venv
	PY=$(PY) bash .ci/typecheck

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

browser:
	test -x /usr/bin/chromium || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }
	/usr/bin/chromium --version

bench: venv
	$(PY) benchmarks/bench_synthetic.py
	$(PY) benchmarks/bench_models.py --quick

lab: venv
	$(VENV)/bin/jupyter lab notebooks

clean-outputs:
	rm -rf $(OUT)
