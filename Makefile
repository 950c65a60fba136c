# The two set-up commands of the README: `make demo` and `make test` (each installs what it needs).
VENV := .venv
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: demo test bench

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $(STAMP)

demo: $(STAMP)
	styleforge demo

test: $(STAMP)
	python -m pytest -q --durations=15

bench: $(STAMP)
	python bench/faces.py
	python bench/ops.py
	python bench/generator.py
	python bench/train.py
	python bench/portraits.py
	python bench/walk.py
