"""``ase-so3 benchmark stability``: batched Langevin replicas, collapse detection, h(r) against the
reference structures, exact resume, and the report."""

import json

import numpy as np
import pytest

from ase_so3.benchmark import stability_study as st



@pytest.fixture(scope="module")
def data(ethanol_h5):
    return ethanol_h5


def _args(data, out, **kw):
    argv = ["--potential", "escn-rmd17-ethanol", "--data", str(data), "--output", str(out),
            "--replicas", "2", "--ps", "0.02", "--checkpoint-ps", "0.005"]
    for k, v in kw.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    return st.build_parser().parse_args(argv)


def test_histogram_mae_is_zero_for_itself_and_positive_otherwise():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(9, 3)), rng.normal(size=(9, 3)) * 2
    ha, hb = st.distance_histogram(a), st.distance_histogram(b)
    assert ha.sum() == 36 and st.hr_mae(ha, ha) == 0.0
    assert 0 < st.hr_mae(ha, hb) <= 2.0


def test_replicas_run_and_resume_exactly(data, tmp_path):
    full = st.run(_args(data, tmp_path / "full"), log=lambda *_: None)
    assert full["collapsed"] == [False, False] and full["stable_ps"] == [0.02, 0.02]
    assert full["hr_mae_all"] < 0.5  # the shipped potential stays near the rMD17 distances
    part = st.run(_args(data, tmp_path / "part", ps=0.01), log=lambda *_: None)
    assert part["stable_ps"] == [0.01, 0.01]
    args = _args(data, tmp_path / "part")
    args.resume = True
    resumed = st.run(args, log=lambda *_: None)
    a = np.load(tmp_path / "full" / "state.npz")
    b = np.load(tmp_path / "part" / "state.npz")
    assert np.array_equal(a["positions"], b["positions"]) and np.array_equal(a["v"], b["v"])
    assert resumed["h"] == full["h"]
    import ase_so3
    assert resumed["ase_so3_version"] == ase_so3.__version__
    assert resumed["potential_checksum"] == st.potential_identity("escn-rmd17-ethanol")["potential_checksum"]
    # other weights under the same name do not continue this run
    state = dict(np.load(tmp_path / "part" / "state.npz"))
    meta = json.loads(str(state["meta"]))
    meta["potential_checksum"] = "not-these-weights"
    state["meta"] = json.dumps(meta)
    with open(tmp_path / "part" / "state.npz", "wb") as f:
        np.savez(f, **state)
    with pytest.raises(SystemExit, match="checksum not-these-weights"):
        st.run(args, log=lambda *_: None)


def test_a_bond_breaking_run_is_caught_and_frozen(data, tmp_path):
    r = st.run(_args(data, tmp_path / "tight", bond_tolerance=0.005), log=lambda *_: None)
    assert all(r["collapsed"]) and all(t < 0.02 for t in r["stable_ps"])
    assert all("deviated" in reason for reason in r["reasons"])


def test_report_table_and_plot(data, tmp_path):
    st.run(_args(data, tmp_path / "runs" / "escn"), log=lambda *_: None)
    md = st.write_report(tmp_path / "report", [tmp_path / "runs" / "escn"]).read_text()
    import ase_so3
    assert (f"| escn | `escn-rmd17-ethanol` | {ase_so3.__version__} | 500 | 2 | 0.02 | 0.02, 0.02 | 0 |"
            in md)
    assert (tmp_path / "report" / "stability_hr.png").stat().st_size > 1000
    assert (tmp_path / "report" / "stability_time.png").stat().st_size > 1000
    json.loads((tmp_path / "runs" / "escn" / "stability.json").read_text())
    # the same run of another release beside it: two rows, told apart by the release
    old = json.loads((tmp_path / "runs" / "escn" / "stability.json").read_text())
    old["ase_so3_version"] = "0.0.1"
    (tmp_path / "old" / "escn").mkdir(parents=True)
    (tmp_path / "old" / "escn" / "stability.json").write_text(json.dumps(old))
    md = st.write_report(tmp_path / "report", [tmp_path / "runs" / "escn",
                                               tmp_path / "old" / "escn"]).read_text()
    assert "| escn | `escn-rmd17-ethanol` |" in md
    assert "| escn (0.0.1) | `escn-rmd17-ethanol` | 0.0.1 |" in md
