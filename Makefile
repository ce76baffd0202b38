# `make demo` and `make test` each work as the very first command on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test fuzz install clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev,dicom,onnx,bundle,ray]'
	touch $(STAMP)

install: $(STAMP)

ANATOMIX := $(VENV)/bin/anatomix
DEMO := out/demo

# the main job on the bundled example images: segment (with QC columns), QC report, anomaly scores;
# then the DICOM path: a full-size DICOM in, a DICOM-SEG referencing it out, QC read from that SEG
demo: $(STAMP)
	$(ANATOMIX) info
	$(ANATOMIX) segment examples/images -o $(DEMO) --overlays
	$(ANATOMIX) qc $(DEMO)/segmentations.csv --images examples/images -o $(DEMO)/qc
	$(ANATOMIX) anomaly score examples/images -o $(DEMO)/anomaly/scores.csv \
		--maps $(DEMO)/anomaly/maps --masks $(DEMO)/masks
	$(ANATOMIX) anomaly score examples/images/nih_00000001_000.png --detector anomaly-adult \
		-o $(DEMO)/anomaly/adult_scores.csv --maps $(DEMO)/anomaly/adult_maps --masks $(DEMO)/masks
	$(ANATOMIX) segment examples/dicom -o $(DEMO)/dicom --format png --format dicom-seg --overlays
	$(ANATOMIX) qc $(DEMO)/dicom/dicom-seg --images examples/dicom -o $(DEMO)/dicom/qc --no-report
	$(PY) examples/quickstart.py
	@echo "open $(DEMO)/qc/report/index.html and $(DEMO)/overlays/ to look at the results"

test: $(STAMP)
	$(PY) -m pytest -q

# coverage-guided fuzzing (atheris) of every reader of strangers' files, FUZZ_SECONDS per target;
# new corpus entries and crash-* inputs land in tests/fuzz_corpus/<target>/ (replayed by `make test`)
FUZZ_SECONDS ?= 30
FUZZ_TARGETS := png jpeg tiff dicom nifti nifti_gz npy mask chexmask dicom_seg
fuzz: $(STAMP)
	$(PY) -m pip install -q -e '.[fuzz]'
	for t in $(FUZZ_TARGETS); do OMP_NUM_THREADS=1 $(PY) tests/fuzz/fuzz.py $$t $(FUZZ_SECONDS) || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
