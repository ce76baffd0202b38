"""The Ray engine gives the local engine's outputs byte for byte (needs anatomix[ray]).

A local Ray instance (2 CPUs) is started once for the module and shut down after it; every test
is bounded by an alarm, so nothing hangs.
"""

from __future__ import annotations

import os
import signal
import sys

import numpy as np
import pytest
from hostile import hostile_corpus, noise, png
from test_batch import read_rows, snapshot

from anatomix.batch import segment_batch
from anatomix.errors import UsageError

SECONDS = 300


class Killed(BaseException):
    """Stands for the driver being killed (not an Exception: nothing catches it)."""


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray", reason="the Ray engine is the extra anatomix[ray]")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(autouse=True)
def bounded():
    def timeout(*_):
        raise TimeoutError(f"a Ray test ran over {SECONDS} s")

    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(SECONDS)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    hostile_corpus(root / "hostile")
    rng = np.random.default_rng(1)
    for i in range(9):
        png(root / f"img{i}.png", noise(rng, 90 + i, 80))
    return root


@pytest.fixture(scope="module")
def graph():
    from anatomix.models import load_segmenter

    return load_segmenter("graph")


@pytest.fixture(scope="module")
def local_run(corpus, graph, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "out"
    summary = segment_batch([corpus], out, graph, batch_size=4, qc=True, overlays=True, formats=("png", "nifti"))
    return out, summary


def test_ray_outputs_equal_the_local_run_byte_for_byte(ray_instance, corpus, graph, local_run, tmp_path):
    from anatomix.batch.ray_engine import RayEngine

    local, expected = local_run
    s = segment_batch([corpus], tmp_path / "out", graph, batch_size=4, qc=True, overlays=True,
                      formats=("png", "nifti"), engine=RayEngine(num_workers=2))
    assert (s.segmented, s.failed, s.exit_code) == (expected.segmented, expected.failed, 1)
    assert s.segmented == 19 and s.failed == 6  # 9 images + the hostile corpus: 10 good files, 6 bad
    assert snapshot(tmp_path / "out") == snapshot(local)  # CSV (QC columns too), errors.csv, masks, overlays
    assert all(r["qc_pass"] in ("True", "False") for r in read_rows(tmp_path / "out"))


def test_a_killed_ray_driver_resumes_to_the_same_outputs(ray_instance, corpus, graph, local_run, tmp_path):
    from anatomix.batch.ray_engine import RayEngine

    out = tmp_path / "out"
    for kill_after in (2, 5, 9):  # killed three times, at different points
        seen = []

        def on_image(item, seen=seen, kill_after=kill_after):
            seen.append(item)
            if len(seen) == kill_after:
                raise Killed()

        with pytest.raises(Killed):
            segment_batch([corpus], out, graph, batch_size=4, qc=True, overlays=True, formats=("png", "nifti"),
                          engine=RayEngine(num_workers=2), on_image=on_image)
    s = segment_batch([corpus], out, graph, batch_size=4, qc=True, overlays=True, formats=("png", "nifti"),
                      engine=RayEngine(num_workers=2))
    assert s.skipped > 0 and s.segmented + s.skipped == 19
    assert snapshot(out) == snapshot(local_run[0])


def test_without_ray_the_engine_is_refused_with_the_install_line(monkeypatch):
    from anatomix.batch.engines import engine_from_name

    monkeypatch.setitem(sys.modules, "ray", None)  # import raises ImportError
    with pytest.raises(UsageError, match=r"pip install 'anatomix\[ray\]'"):
        engine_from_name("ray")
    with pytest.raises(UsageError, match="choose from: local, ray"):
        engine_from_name("spark")


def test_cli_without_ray_exits_2(monkeypatch, tmp_path, corpus):
    from click.testing import CliRunner

    from anatomix.cli.segment import segment

    monkeypatch.setitem(sys.modules, "ray", None)
    result = CliRunner().invoke(segment, [str(corpus), "-o", str(tmp_path / "o"), "--engine", "ray"])
    assert result.exit_code == 2 and "pip install 'anatomix[ray]'" in result.output
    assert not (tmp_path / "o").exists()


class DiesOnce:
    """A segmenter whose worker process dies (``os._exit``) the first time any copy of it
    predicts: ``marker`` is claimed by an atomic rename, so exactly one worker dies, once."""

    def __init__(self, segmenter, marker):
        self._segmenter, self.marker = segmenter, marker

    def predict(self, *args, **kwargs):
        try:
            os.rename(self.marker, f"{self.marker}.claimed")
        except FileNotFoundError:
            return self._segmenter.predict(*args, **kwargs)
        os._exit(1)

    def __getattr__(self, name):
        if name.startswith("_"):  # unpickling: _segmenter not set yet
            raise AttributeError(name)
        return getattr(self._segmenter, name)


def test_a_killed_worker_is_replaced_and_the_outputs_are_identical(ray_instance, corpus, graph, local_run,
                                                                 tmp_path):
    from ray import cloudpickle

    from anatomix.batch.ray_engine import RayEngine

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test file
    marker = tmp_path / "die"
    marker.touch()
    s = segment_batch([corpus], tmp_path / "out", DiesOnce(graph, marker), batch_size=4, qc=True, overlays=True,
                      formats=("png", "nifti"), engine=RayEngine(num_workers=2))
    assert not marker.exists() and (tmp_path / "die.claimed").exists()  # a worker did die
    assert (s.segmented, s.failed) == (19, 6)
    assert snapshot(tmp_path / "out") == snapshot(local_run[0])


def test_qc_on_ray_equals_the_local_qc(ray_instance, corpus, local_run, tmp_path):
    """QC of the local run's CheXmask CSV (its images beside): qc.csv and the report, byte for byte."""
    from anatomix.batch.ray_engine import RayEngine
    from anatomix.qc.run import run_qc

    csv = local_run[0] / "segmentations.csv"
    local = run_qc(csv, tmp_path / "local", images=corpus / "hostile", k=2)
    ray_run = run_qc(csv, tmp_path / "ray", images=corpus / "hostile", k=2, engine=RayEngine(num_workers=2))
    assert (ray_run.images, ray_run.passed) == (local.images, local.passed) and local.images == 19
    assert snapshot(tmp_path / "ray") == snapshot(tmp_path / "local")
    assert any(name.startswith("report/thumbs/") for name in snapshot(tmp_path / "local"))


def test_anomaly_scores_on_ray_equal_the_local_scores(ray_instance, corpus, tmp_path):
    """The bundled detector on images + the hostile corpus: scores.csv, errors.csv and heat maps."""
    from anatomix.anomaly import run
    from anatomix.batch.ray_engine import RayEngine

    reports = {}
    for name, engine in (("local", None), ("ray", RayEngine(num_workers=2))):
        out = tmp_path / name
        reports[name] = run.score([corpus], out / "scores.csv", maps_dir=out / "maps", batch_size=4,
                                  engine=engine, progress=False)
    assert len(reports["local"].results) == 19 and len(reports["local"].errors) == 6
    assert snapshot(tmp_path / "ray") == snapshot(tmp_path / "local")
    assert len(list((tmp_path / "local" / "maps").glob("*.png"))) == 19
