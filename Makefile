# mvaccel: `make demo` (the main job) and `make test` (the full suite) each set up first.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
TORCH_VERSION ?= 2.13.0
DEB_PACKAGES := ffmpeg libavformat-dev libavcodec-dev libavutil-dev libswscale-dev pkg-config clang-format
PY_DEPS := numpy pillow tqdm matplotlib lightning 'jsonargparse[signatures]' tensorboard av pytest pytest-benchmark ruff expecttest ninja setuptools wheel opencv-contrib-python-headless cupy-cuda12x nvidia-cuda-nvrtc-cu12
STAMP := .make
CSRC := $(shell find csrc -name '*.cpp' -o -name '*.cu' -o -name '*.h' -o -name '*.cuh' 2>/dev/null)
CLANG_FORMAT ?= clang-format
OUT ?= out

.PHONY: setup deps test lint format bench demo clean

setup: $(STAMP)/built

$(STAMP)/debs:
	@mkdir -p $(STAMP)
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	@touch $@

$(STAMP)/pydeps: $(STAMP)/debs pyproject.toml
	@$(PYTHON) -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$(TORCH_VERSION)')" 2>/dev/null \
		|| $(PIP) install -q torch==$(TORCH_VERSION)
	$(PIP) install -q $(PY_DEPS)
	@touch $@

$(STAMP)/built: $(STAMP)/pydeps setup.py $(CSRC)
	$(PIP) install -q --no-build-isolation --no-deps -e .
	@touch $@

deps: $(STAMP)/pydeps

lint: $(STAMP)/pydeps
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(CLANG_FORMAT) --dry-run -Werror $(CSRC)

format: $(STAMP)/pydeps
	$(PYTHON) -m ruff check --fix .
	$(PYTHON) -m ruff format .
	$(CLANG_FORMAT) -i $(CSRC)

test: setup lint
	$(PYTHON) -m pytest python_tests -q
	$(PYTHON) -m pytest bench -q --benchmark-disable

bench: setup
	@mkdir -p $(OUT)
	$(PYTHON) -m pytest bench -q --benchmark-only --benchmark-json=$(OUT)/bench_cpu.json
	$(PYTHON) bench/report.py $(OUT)/bench_cpu.json

demo: setup
	$(PYTHON) -m mvaccel demo --out $(OUT)/demo

clean:
	rm -rf build $(STAMP) mvaccel/*.so mvaccel/_build_info.py *.egg-info
