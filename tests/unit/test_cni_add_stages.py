"""The ADD's opt-in stage timing (cni/plugin.py) and its reading by bench/pods.py --stages."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from cni.plugin import STAGES_LOG, _stage_times


def _bench_pods():  # bench/ is scripts, not a package
    spec = importlib.util.spec_from_file_location(
        "bench_pods", Path(__file__).resolve().parents[2] / "bench" / "pods.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_stage_is_the_time_since_the_one_before() -> None:
    marks = [("start", 10.0), ("setup", 10.0002), ("ipam", 10.0102), ("wire", 10.0132)]
    assert _stage_times(marks) == "setup 0.2 ipam 10.0 wire 3.0 total 13.2"


def test_the_bench_takes_the_median_of_each_stage_from_the_log() -> None:
    log = "\n".join([
        f"2026-12-06 21:09:21,469 [DEBUG][1] cni.plugin: ADD e6acc049cbd3 {STAGES_LOG} "
        + _stage_times([("start", 0.0), ("ipam", 0.001 * ms), ("wire", 0.001 * ms + 0.003)])
        for ms in (4, 8, 6)
    ] + ["2026-12-06 21:09:21,470 [INFO][1] cni: ADD e6acc049cbd3 ADD done in 0.053s"])
    assert _bench_pods().stage_medians(log) == {"ipam": 6.0, "wire": 3.0, "total": 9.0}
