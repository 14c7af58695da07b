"""Mixture-of-experts models, attention variants, precision and expert parallelism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dcsim.catalog import shapes
from dcsim.catalog.specs import ModelSpec
from dcsim.errors import DcsimError
from dcsim.hardware.collectives import alltoall_s
from dcsim.profiles.work import layout_of, weight_bytes_per_gpu, work_features

ROOT = Path(__file__).resolve().parents[1]
MOE = ["mixtral-8x7b", "mixtral-8x22b", "qwen3-30b-a3b", "qwen3-235b-a22b", "deepseek-v3",
       "gpt-oss-120b", "gpt-oss-20b", "llama-4-scout", "llama-4-maverick"]
# Meta's totals count the vision encoder the catalog does not model; its size from the
# published vision_config (hidden 1408, 34 layers, MLP 5632, biased projections and norms,
# 14 x 14 patches of 336 px images) and the adapter / projector shapes of the checkpoint.
LLAMA4_VISION = (34 * (4 * (1408 * 1408 + 1408) + 2 * 1408 * 5632 + 5632 + 1408 + 4 * 1408)
                 + 1408 * 3 * 14 * 14 + (336 // 14) ** 2 * 1408 + 1408 * 5
                 + 5632 * 4096 + 4096 * 4096 + 4096 * 5120)
EXTRA_TOTAL = {"llama-4-scout": LLAMA4_VISION, "llama-4-maverick": LLAMA4_VISION}
# OpenAI counts active parameters without the embedding table; the others with it.
NO_INPUT_EMBEDDING = {"gpt-oss-120b", "gpt-oss-20b"}
# DeepSeek, Qwen and Meta state active counts as truncated whole figures ("37B" for
# 37.5B): such a figure means [p, p + one unit of its last digit).
TRUNCATED_UNIT = {"qwen3-30b-a3b": 1e8, "qwen3-235b-a22b": 1e9, "deepseek-v3": 1e9,
                  "llama-4-scout": 1e9, "llama-4-maverick": 1e9}


@pytest.mark.parametrize("name", MOE)
def test_parameter_counts_reproduce_the_published_totals(catalog, name):
    m = catalog.model(name)
    total = shapes.total_params(m) + EXTRA_TOTAL.get(name, 0)
    assert total == pytest.approx(m.published_params, rel=0.01)


@pytest.mark.parametrize("name", MOE)
def test_active_counts_reproduce_the_published_figures(catalog, name):
    m = catalog.model(name)
    active = shapes.active_params(m, input_embedding=name not in NO_INPUT_EMBEDDING)
    p = m.published_active_params
    unit = TRUNCATED_UNIT.get(name)
    if unit is None:
        assert active == pytest.approx(p, rel=0.01)
    else:
        assert p <= active < p + unit
    assert active < shapes.total_params(m) / 2  # sparse: most parameters idle per token


def test_dense_models_keep_their_published_counts(catalog):
    for m in catalog.models.values():
        if m.experts == 0:
            assert shapes.active_params(m) == shapes.total_params(m)
            assert shapes.total_params(m) == pytest.approx(m.published_params, rel=0.01)


@pytest.mark.parametrize(("experts", "k"), [(8, 2), (128, 8), (256, 8), (32, 4)])
def test_expected_distinct_experts_matches_a_monte_carlo_draw(experts, k):
    m = ModelSpec(id="x", layers=2, hidden=64, heads=4, kv_heads=4, head_dim=16, ffn=128,
                  vocab=100, experts=experts, experts_per_token=k)
    rng = np.random.default_rng(7)
    trials = 400
    for batch in (1, 3, 16, 64, 512):
        touched = np.empty(trials)
        for t in range(trials):
            picks = np.argsort(rng.random((batch, experts)), axis=1)[:, :k]  # k distinct each
            touched[t] = np.unique(picks).size
        mean, se = touched.mean(), touched.std(ddof=1) / np.sqrt(trials)
        expected = float(shapes.expected_experts(m, batch))
        assert abs(mean - expected) <= 4 * se + 1e-4 * expected, (batch, mean, expected)
    assert float(shapes.expected_experts(m, 1)) == pytest.approx(k)


def test_decode_reads_the_experts_a_batch_touches(catalog):
    m = catalog.model("qwen3-30b-a3b")
    expert_bytes = shapes.expert_params(m) * shapes.moe_layers(m) * 2
    dense_part = shapes.weight_bytes(m) - m.experts * expert_bytes
    one = work_features(m, "decode", 1, 1)[0, 4] - shapes.kv_bytes(m, 1)
    assert one == pytest.approx(dense_part + m.experts_per_token * expert_bytes)
    big = work_features(m, "decode", 4096, 1)[0, 4] - 4096 * shapes.kv_bytes(m, 1)
    assert big == pytest.approx(shapes.weight_bytes(m), rel=1e-6)  # every expert read


def test_one_expert_of_the_dense_width_is_the_dense_model(catalog, store):
    dense = catalog.model("llama-3.1-8b")
    moe = dense.model_copy(update={"id": "llama-3.1-8b", "experts": 1, "experts_per_token": 1})
    moe = ModelSpec.model_validate(moe.model_dump())
    router = dense.layers * dense.hidden  # the only parameters E = k = 1 adds
    assert shapes.total_params(moe) - shapes.total_params(dense) == router
    b, s = np.array([1.0, 32.0, 256.0]), np.array([512.0, 2048.0, 8192.0])
    for phase in ("prefill", "decode"):
        f_d, f_m = work_features(dense, phase, b, s), work_features(moe, phase, b, s)
        np.testing.assert_allclose(f_m, f_d, rtol=1e-3)


def test_mla_caches_the_latent_and_windowed_layers_their_window(catalog):
    ds = catalog.model("deepseek-v3")
    assert shapes.kv_bytes_per_token(ds) == 61 * (512 + 64) * 2  # latent + shared rope key
    gpt = catalog.model("gpt-oss-120b")
    per = 8 * (64 + 64) * 2
    assert float(shapes.kv_bytes(gpt, 100)) == 36 * 100 * per
    assert float(shapes.kv_bytes(gpt, 10_000)) == (18 * 10_000 + 18 * 128) * per
    # causal pairs of a windowed layer: the closed form against the sum it stands for
    w, n = 128, 5000
    exact = sum(min(i, w) for i in range(1, n + 1))
    approx = (w * n - w * w / 2)
    assert approx == pytest.approx(exact, rel=0.01)


def test_precision_sets_bytes_and_matmul_rate(catalog):
    h100, b200 = catalog.gpu("H100-SXM"), catalog.gpu("B200")
    fp8 = layout_of(h100, "fp8", "fp8")
    assert (fp8.weight_bytes, fp8.kv_bytes) == (1.0, 1.0)
    assert fp8.matmul_scale == pytest.approx(989 / 1979)
    assert layout_of(b200, "fp4").matmul_scale == pytest.approx(2250 / 9000)
    m = catalog.model("llama-3.1-70b")
    assert weight_bytes_per_gpu(m, 4, fp8) == pytest.approx(weight_bytes_per_gpu(m, 4) / 2)
    f16, f8 = work_features(m, "decode", 8, 4096), work_features(m, "decode", 8, 4096, 1, fp8)
    assert f8[0, 2] == pytest.approx(f16[0, 2] * 989 / 1979)  # BF16-equivalent FLOPs
    assert f8[0, 4] == pytest.approx(f16[0, 4] / 2)  # weights and cache both halved


@pytest.mark.parametrize(("gpu", "dtype"), [("H100-SXM", "fp4"), ("A100-SXM4-80GB", "fp8"),
                                            ("H200-SXM", "fp4")])
def test_a_type_without_tensor_cores_is_refused(catalog, gpu, dtype):
    with pytest.raises(DcsimError, match=r"deployment\.weights_dtype.*tensor cores for"):
        layout_of(catalog.gpu(gpu), dtype)


def test_fp8_decode_is_faster_where_weights_dominate(store, catalog):
    lay = layout_of(catalog.gpu("H100-SXM"), "fp8")
    a = store.query("H100-SXM", "llama-3.1-70b", "decode", 1, 1024, 4)
    b = store.query("H100-SXM", "llama-3.1-70b", "decode", 1, 1024, 4, layout=lay)
    assert 0.5 < b.latency_ms / a.latency_ms < 0.8  # weight reads halve, overheads stay
    assert "1 B/parameter" in b.basis and b.provenance == "derived"


def test_expert_parallel_memory_and_all_to_all(catalog, store):
    g, m = catalog.gpu("H200-SXM"), catalog.model("qwen3-235b-a22b")
    lay = layout_of(g, "fp8", ep=4)
    experts = shapes.moe_layers(m) * m.experts * shapes.expert_params(m) * 1.0
    rest = shapes.total_params(m) * 1.0 - experts
    assert weight_bytes_per_gpu(m, 2, lay) == pytest.approx(rest / 2 + experts / 8)
    cost = store.resolve("H200-SXM", m.id, "decode", 2, None, lay)
    b, s = np.array([64.0]), np.array([2048.0])
    comm = cost._collective_s(b, s)[0]
    bw, alpha = g.scaleup_bandwidth_gbyte_s * 1e9, g.link_latency_us * 1e-6
    per_gpu = 64 * m.experts_per_token * m.hidden * 2 / 8
    a2a = 2 * shapes.moe_layers(m) * alltoall_s(per_gpu, 8, bw, alpha)
    ar_bytes = 64 / 4 * m.hidden * 2
    ar = 2 * m.layers * (2 * alpha + ar_bytes / bw)  # ring of 2: 2 (p-1) alpha + 2 (p-1)/p n/B
    assert comm == pytest.approx(a2a + ar, rel=1e-9)
    assert alltoall_s(1e6, 8, 1e11, 1e-6) == pytest.approx(7e-6 + 7 / 8 * 1e-5)
    # without expert parallelism: only the all-reduces, over the whole batch
    one = store.resolve("H200-SXM", m.id, "decode", 2, None, layout_of(g, "fp8"))
    ar_all = 2 * m.layers * (2 * alpha + 64 * m.hidden * 2 / bw)
    assert one._collective_s(b, s)[0] == pytest.approx(ar_all, rel=1e-9)


def test_moe_answers_are_derived_and_say_from_what(store):
    a = store.query("H200-SXM", "mixtral-8x7b", "decode", 16, 1024)
    assert a.provenance == "derived"
    assert "measured H200-SXM" in a.basis and "mixture of experts" in a.basis
    assert "2 of 8 routed experts" in a.basis


@pytest.mark.parametrize(("fields", "message"), [
    ({"experts": 8, "experts_per_token": 9}, "experts_per_token"),
    ({"experts": 8, "experts_per_token": 2, "dense_layers": 4}, "dense_layers"),
    ({"experts_per_token": 2}, "need experts > 0"),
    ({"attention": "mla"}, "kv_lora_rank"),
    ({"kv_lora_rank": 512}, "MLA fields"),
    ({"sliding_window": 128}, "go together"),
])
def test_inconsistent_model_fields_are_refused(fields, message):
    base = {"id": "x", "layers": 4, "hidden": 64, "heads": 4, "kv_heads": 4, "head_dim": 16,
            "ffn": 128, "vocab": 100}
    with pytest.raises(ValueError, match=message):
        ModelSpec.model_validate(base | fields)


# -- deployments: validation, rack-scale systems, facility ------------------------------

def _nvl72(**deployment: object) -> dict:
    from engine_helpers import load_yaml

    d = load_yaml(ROOT / "scenarios" / "nvl72_moe.yaml")
    d["simulation"] = {"duration_s": 60, "warmup_s": 10, "seed": 3, "time_bucket_s": 10}
    d["workloads"][0]["deployment"].update(deployment)
    return d


def _problems(d: dict) -> list:
    from dcsim.references import check_references
    from dcsim.scenario import scenario_from_data

    return check_references(scenario_from_data(d), ROOT / "scenarios")


@pytest.mark.parametrize(("change", "field", "expected"), [
    ({"tp": 8, "ep": 16, "replicas": 1}, "deployment.ep", "at most 72"),
    ({"ep": 3}, "deployment.ep", "divisor of deepseek-v3's 256"),
    ({"gpu": "H200-SXM", "weights_dtype": "fp4"}, "deployment.weights_dtype",
     "tensor cores for: bf16, fp8"),
    ({"weights_dtype": "bf16", "ep": 1, "tp": 4}, "deployment.tp", "weights need"),
])
def test_bad_moe_deployments_name_the_field(change, field, expected):
    problems = _problems(_nvl72(**change))
    hits = [p for p in problems if p.path == f"workloads[0].{field}"]
    assert hits and expected in hits[0].expected, problems


def test_expert_parallelism_on_a_dense_model_is_refused():
    d = _nvl72()
    d["workloads"][1]["deployment"].update(ep=2)
    problems = _problems(d)
    assert any(p.path == "workloads[1].deployment.ep" and "dense" in p.expected
               for p in problems)


def test_nvl72_scenario_runs_replicas_across_the_rack_domain():
    from dcsim.runner import run_tables
    from dcsim.scenario import scenario_from_data

    s = scenario_from_data(_nvl72())
    assert _problems(_nvl72()) == []
    tables, summary = run_tables(s, ROOT / "scenarios")
    reps = tables["replicas"]
    ds = reps[reps["service"] == "deepseek"]
    assert (ds["gpus"] == 32).all() and (ds["ep"] == 4).all() and len(ds) == 8
    assert ds.groupby("server").size().max() == 2  # two 32-GPU replicas per 72-GPU domain
    assert summary.total.gpus_serving == 8 * 32 + 8
    svc = summary.services["deepseek"]
    assert svc.requests_finished > 0
    assert "mixture of experts" in svc.profile_basis["decode"]
    assert "measured H200-SXM" in svc.profile_basis["decode"]
    steps = svc.profile_provenance["decode_steps"]
    assert steps["measured"] == steps["interpolated"] == 0  # nothing of it is measured
    # no GPU above its limit: rack power within its budget at every bucket
    power = tables["power"]
    racks = power[(power["domain"] == "rack") & power["name"].str.startswith("nvl72")]
    assert (racks["power_w"] <= racks["cap_w"] * (1 + 1e-9)).all()


def test_cold_plates_cut_cooling_power():
    """The same hall with its NVL72 heat to warm water costs less cooling than all to air
    (a cooler supply needs the chiller more), and a hall of air-cooled servers under
    by_server cooling costs exactly what air cooling costs."""
    from dcsim.engine.site import plant_of
    from dcsim.hardware.facility import hybrid_overhead, overhead
    from dcsim.scenario import Cooling

    c = Cooling(medium="by_server", supply_water_c=12, liquid_supply_water_c=32)
    t = np.array([5.0, 20.0, 30.0, 38.0])
    air, liq = plant_of(c, "air"), plant_of(c, "liquid")
    none = hybrid_overhead(air, liq, t, 1e6, 0.0)
    ref = overhead(air, t, 1e6)
    for a, b in zip((none.cool_a, none.cool_b, none.loss_a), (ref.cool_a, ref.cool_b,
                                                              ref.loss_a), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    mostly = hybrid_overhead(air, liq, t, 1e6, 0.85)
    assert (mostly.cool_a < none.cool_a).all()
    # the liquid share is exactly the warm loop's share of heat: linear in it
    half = hybrid_overhead(air, liq, t, 1e6, 0.5)
    np.testing.assert_allclose(half.cool_a, (none.cool_a + hybrid_overhead(
        air, liq, t, 1e6, 1.0).cool_a) / 2, rtol=1e-12)


def test_liquid_share_weights_server_types_by_nameplate(catalog):
    from dcsim.engine.site import liquid_share

    nvl, dgx = catalog.server("gb200-nvl72"), catalog.server("dgx-h200")
    share = liquid_share([(nvl, 4), (dgx, 1)])
    assert share == pytest.approx(0.85 * 4 * 120_000 / (4 * 120_000 + 10_200))


def test_kv_capacity_of_an_expert_parallel_replica(catalog):
    from dcsim.engine.build import kv_capacity_tokens
    from dcsim.scenario import scenario_from_data

    s = scenario_from_data(_nvl72())
    svc = s.workloads[0]
    g, m = catalog.gpu("GB200"), catalog.model("deepseek-v3")
    lay = layout_of(g, "fp8", "fp8", 4)
    free = 32 * (186e9 * 0.9 - weight_bytes_per_gpu(m, 8, lay))
    assert kv_capacity_tokens(svc, g, m) == int(free // (61 * 576 * 1.0))


def test_a_measured_fp8_gemm_sets_the_fp8_matmul_rate(tmp_path, catalog):
    import pandas as pd

    from dcsim.profiles.store import ProfileStore

    rows = pd.DataFrame([
        {"gpu": "H100-SXM", "model": ph, "phase": ph, "batch_size": 1, "seq_len": 8192,
         "latency_ms": ms, "energy_j": ms * 0.6}
        for ph, ms in (("gemm", 1.60), ("gemm_fp8", 0.92))])
    path = tmp_path / "h100_ceilings.csv"
    rows.to_csv(path, index=False)
    store = ProfileStore.from_files(catalog, [path])
    lay = layout_of(catalog.gpu("H100-SXM"), "fp8")
    cost = store.resolve("H100-SXM", "llama-3.1-70b", "decode", 4, None, lay)
    assert cost.layout.matmul_scale == pytest.approx(0.92 / 1.60)
    assert cost.layout.scale_basis == "measured" and "measured gemm ratio" in cost.basis
    # without the fp8 point the datasheet ratio stands
    plain = ProfileStore.from_files(catalog).resolve("H100-SXM", "llama-3.1-70b", "decode", 4,
                                                     None, lay)
    assert plain.layout.matmul_scale == pytest.approx(989 / 1979)


def test_the_cpu_profile_takes_no_fp8_gemm():
    from dcsim.measure.points import ceiling_points, fp8_gemm_supported
    from dcsim.measure.timing import open_target

    target = open_target("cpu")
    assert not fp8_gemm_supported(target)
    assert [p.phase for p in ceiling_points(target)] == ["gemm", "copy"]
