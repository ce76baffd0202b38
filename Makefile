# `make demo` and `make test` each work as the very first command on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

ANATOMIX := $(VENV)/bin/anatomix
DEMO := out/demo

# the main job on the bundled example images: segment (with QC columns), QC report, anomaly scores
demo: $(STAMP)
	$(ANATOMIX) info
	$(ANATOMIX) segment examples/images -o $(DEMO) --overlays
	$(ANATOMIX) qc $(DEMO)/segmentations.csv --images examples/images -o $(DEMO)/qc
	$(ANATOMIX) anomaly score examples/images -o $(DEMO)/anomaly/scores.csv \
		--maps $(DEMO)/anomaly/maps --masks $(DEMO)/masks
	$(PY) examples/quickstart.py
	@echo "open $(DEMO)/qc/report/index.html and $(DEMO)/overlays/ to look at the results"

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
