"""`dcsim profile` on the CPU path: the model code, the measurement loop, the files it
writes, and the read-only NVML meter (faked: no GPU here)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pandas as pd
import pytest
import yaml

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.timing  # real CPU time is measured: alone (tests/cpu_lock.py)

from cpu_lock import cpu  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from dcsim.catalog import shapes  # noqa: E402
from dcsim.catalog.specs import GpuSpec  # noqa: E402
from dcsim.cli import app  # noqa: E402
from dcsim.errors import DcsimError  # noqa: E402
from dcsim.measure import TINY, measure_catalog  # noqa: E402
from dcsim.measure.device_spec import gpu_entry  # noqa: E402
from dcsim.measure.profiler import ProfileRequest, run_profile  # noqa: E402
from dcsim.measure.torch_model import Decoder, KVCache  # noqa: E402
from dcsim.profiles.store import ProfileStore  # noqa: E402
from dcsim.profiles.table import read_profile_csv  # noqa: E402

SMALL = dict(model="tiny-llama", device="cpu", grid="quick", batches=(1, 4), seqs=(64, 256),
             min_time_s=0.02)


@pytest.fixture(scope="module")
def mcat(catalog):
    return measure_catalog(catalog)


@pytest.fixture(scope="module")
def profiled(tmp_path_factory, mcat) -> Path:
    out = tmp_path_factory.mktemp("prof")
    with cpu(alone=True):
        outcome = run_profile(ProfileRequest(**SMALL), out, mcat)
    assert not outcome.failed and not outcome.not_reached
    return out


@pytest.mark.parametrize("model_id", ["llama-3.1-8b", "llama-3.1-70b/8L", "llama-3.2-1b"])
def test_torch_model_has_the_catalog_parameter_count(mcat, model_id):
    # built on the meta device: shapes only, no memory
    spec = mcat.model(model_id)
    with torch.device("meta"):
        m = Decoder(spec)
    n = sum(p.numel() for p in m.parameters())
    expected = shapes.total_params(spec)
    if spec.tied_embeddings:  # the measured model keeps a separate head (same cost per token)
        expected += spec.vocab * spec.hidden
    assert n == expected


def test_cached_decode_reproduces_the_full_forward():
    """Prefill two right-padded prompts, then decode: each step's logits equal a forward
    pass over the whole sequence (the serving loop computes the real model)."""
    torch.manual_seed(0)
    m = Decoder(TINY).double().eval()
    lens, steps = [7, 4], 3
    seqs = [torch.randint(0, TINY.vocab, (n + steps,)) for n in lens]
    cache = KVCache(TINY, TINY.layers, 2, 16, torch.device("cpu"), torch.float64)
    slots = torch.tensor([1, 0])
    padded = torch.zeros(2, max(lens), dtype=torch.long)
    for i, (s, n) in enumerate(zip(seqs, lens, strict=True)):
        padded[i, :n] = s[:n]
    with torch.inference_mode():
        got = [m.prefill(padded, torch.tensor(lens), cache, slots)]
        for k in range(steps):
            pos = torch.tensor([n + k for n in lens])
            x = torch.stack([s[n + k] for s, n in zip(seqs, lens, strict=True)])[:, None]
            got.append(m.decode(x, pos, cache, slots, int(pos.max()) + 1))
        for i, (s, n) in enumerate(zip(seqs, lens, strict=True)):
            full = m(s[None, : n + steps])[0]
            for k in range(steps + 1):
                assert torch.allclose(got[k][i], full[n - 1 + k], atol=1e-9)


def test_cpu_profile_is_a_profile_table_with_energy_marked_empty(profiled):
    table = read_profile_csv(profiled / "points.csv")  # the store's schema check
    inference = table[table["phase"].isin(["prefill", "decode", "train"])]
    expected = {("prefill", b, s) for b in (1, 4) for s in (64, 256)} | {
        ("decode", b, s) for b in (1, 4) for s in (64, 256)} | {
        ("train", b, s) for b in (1, 4) for s in (64, 256)}
    assert set(zip(inference["phase"], inference["batch_size"], inference["seq_len"],
                   strict=True)) == expected
    assert set(table["phase"]) >= {"gemm", "copy"}
    assert table["energy_j"].isna().all() and (table["energy_method"] == "none").all()
    assert (table["latency_ms"] > 0).all() and (table["n_iters"] >= 1).all()
    # 16x the tokens of the same model cannot run faster
    lat = inference.set_index(["phase", "batch_size", "seq_len"])["latency_ms"]
    assert lat[("prefill", 4, 256)] > lat[("prefill", 1, 64)]
    machine = json.loads((profiled / "machine.json").read_text())
    assert machine["gpu"] == "cpu" and machine["idle_power_w"] is None
    models = pd.read_csv(profiled / "models.csv")
    assert models.loc[0, "params_full"] == models.loc[0, "params_measured"] == shapes.total_params(
        TINY)
    # the device is not in the catalog: an entry scenarios can use is written beside
    entry = yaml.safe_load((profiled / "catalog.yaml").read_text())["gpus"][0]
    assert GpuSpec(**entry).id == "cpu"


def test_store_refuses_a_profile_without_energy(profiled, mcat):
    entry = gpu_entry(json.loads((profiled / "machine.json").read_text()),
                      pd.read_csv(profiled / "points.csv"), mcat)
    cat = mcat.with_overrides(gpus=(GpuSpec(**entry),))
    with pytest.raises(DcsimError, match="energy_j"):
        ProfileStore.from_files(cat, [profiled / "points.csv"], builtin=False)


def test_device_entry_takes_ceilings_from_gemm_and_copy(profiled, mcat):
    points = pd.read_csv(profiled / "points.csv")
    entry = gpu_entry(json.loads((profiled / "machine.json").read_text()), points, mcat)
    gemm = points[points["phase"] == "gemm"].iloc[0]
    copy = points[points["phase"] == "copy"].iloc[0]
    assert entry["bf16_dense_tflops"] == pytest.approx(
        2 * gemm["seq_len"] ** 3 / (gemm["latency_ms"] / 1e3) / 1e12)
    assert entry["memory_bandwidth_tbps"] == pytest.approx(
        copy["seq_len"] / (copy["latency_ms"] / 1e3) / 1e12)
    # a GPU the catalog knows keeps its entry, with this machine's measured idle power
    h200 = gpu_entry({"gpu": "NVIDIA H200", "idle_power_w": 77.0, "date": "x"}, points, mcat)
    assert h200["id"] == "H200-SXM" and h200["idle_power_w"] == 77.0


def test_budget_stops_early_and_a_rerun_measures_only_what_is_missing(tmp_path, mcat):
    req = ProfileRequest(**{**SMALL, "phases": ("decode",), "budget_s": 0.0})
    first = run_profile(req, tmp_path, mcat)
    assert first.measured == [] and len(first.not_reached) == 2 + 4  # ceilings + 2x2 grid
    assert not (tmp_path / "points.csv").exists()
    second = run_profile(ProfileRequest(**{**SMALL, "phases": ("decode",)}), tmp_path, mcat)
    assert len(second.measured) == 6
    before = (tmp_path / "points.csv").read_text()
    third = run_profile(ProfileRequest(**{**SMALL, "phases": ("decode",)}), tmp_path, mcat)
    assert third.measured == [] and third.already == 6
    assert (tmp_path / "points.csv").read_text() == before


def test_interrupt_keeps_the_points_measured_so_far(tmp_path, mcat):
    def progress(i, n, what):
        if i == 3:
            raise KeyboardInterrupt

    outcome = run_profile(ProfileRequest(**{**SMALL, "phases": ("decode",)}), tmp_path, mcat,
                          progress=progress)
    assert outcome.interrupted and len(outcome.measured) == 3
    assert len(read_profile_csv(tmp_path / "points.csv")) == 3


class _FakeNvml(types.ModuleType):
    """Records every NVML call; answers like an H200 at its default 700 W limit."""

    NVML_CLOCK_SM, NVML_CLOCK_MEM = 0, 1

    class NVMLError(Exception):
        pass

    def __init__(self) -> None:
        super().__init__("pynvml")
        self.calls: list[str] = []
        self.energy_mj = 1_000_000
        answers = {
            "nvmlInit": None, "nvmlDeviceGetHandleByUUID": "h", "nvmlDeviceGetHandleByIndex": "h",
            "nvmlDeviceGetPowerUsage": 100_000, "nvmlDeviceGetClockInfo": 1980,
            "nvmlDeviceGetPowerManagementLimitConstraints": (200_000, 700_000),
            "nvmlDeviceGetName": "NVIDIA H200", "nvmlSystemGetDriverVersion": "580",
            "nvmlDeviceGetSupportedMemoryClocks": [3201],
            "nvmlDeviceGetSupportedGraphicsClocks": [1980, 345],
            "nvmlDeviceGetMemoryInfo": types.SimpleNamespace(total=141 * 2**30),
            "nvmlDeviceGetPowerManagementLimit": 700_000,
            "nvmlDeviceGetPowerManagementDefaultLimit": 700_000,
            "nvmlDeviceGetMaxClockInfo": 1980,
        }
        for name, value in answers.items():
            setattr(self, name, self._recorder(name, value))

    def _recorder(self, name, value):
        def call(*args):
            self.calls.append(name)
            return value
        return call

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        self.calls.append("nvmlDeviceGetTotalEnergyConsumption")
        self.energy_mj += 5_000  # 5 J between two readings
        return self.energy_mj

    def __getattr__(self, name):  # any other NVML function, a setter included, is recorded
        if name.startswith("nvml"):
            return self._recorder(name, None)
        raise AttributeError(name)


def test_nvml_meter_reads_the_energy_counter_and_never_sets_anything(monkeypatch):
    fake = _FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    from dcsim.measure.meter import NvmlMeter

    meter = NvmlMeter("GPU-1234", 0)
    facts = meter.facts()
    meter.start()
    window = meter.stop()
    idle = meter.idle(0.05)
    assert window.energy_j == pytest.approx(5.0)
    assert facts["power_limit_w"] == 700 and facts["power_limit_min_w"] == 200
    assert facts["supported_sm_clocks_mhz"] == [345, 1980]
    assert idle["idle_power_w"] == 100.0
    assert fake.calls and all(c == "nvmlInit" or c.startswith(("nvmlDeviceGet", "nvmlSystemGet"))
                              for c in fake.calls), sorted(set(fake.calls))


def test_cli_profile_runs_and_bad_input_exits_1_writing_nothing(tmp_path):
    runner = CliRunner()
    out = tmp_path / "p"
    res = runner.invoke(app, ["profile", "--device", "cpu", "--model", "tiny-llama", "--grid",
                              "quick", "--phases", "decode", "--batch", "1", "--seq", "64",
                              "--min-time-s", "0.02", "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    assert "measured 3 points" in res.output
    assert len(read_profile_csv(out / "points.csv")) == 3
    for args, words in ((["--grid", "huge"], "--grid: got 'huge'"),
                        (["--phases", "serve"], "--phases"),
                        (["--batch", "1,x"], "--batch"),
                        (["--model", "gpt-9"], "gpt-9")):
        bad = tmp_path / "bad"
        cmd = ["profile", "--device", "cpu", "--model", "tiny-llama", "--out", str(bad), *args]
        res = runner.invoke(app, cmd)
        assert res.exit_code == 1 and words in res.output and "Traceback" not in res.output
        assert not bad.exists()


def test_simulator_and_cli_do_not_need_torch():
    """Only `dcsim profile` imports torch: running and planning work without the extra."""
    import subprocess

    code = ("import sys, dcsim.cli, dcsim.engine.simulation, dcsim.optimize.run; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
