"""Catalog shapes against published parameter counts and hand arithmetic."""

from __future__ import annotations

import json

import pytest

from dcsim.catalog import load_catalog, shapes
from dcsim.catalog.specs import GpuSpec
from dcsim.errors import DcsimError
from dcsim.profiles.table import builtin_dir


def test_parameter_counts_match_published(catalog):
    """Dense models, whose configs give exact counts (MoE models: tests/test_moe.py, against
    their publishers' rounded figures)."""
    for m in catalog.models.values():
        assert m.published_params is not None
        if m.experts:
            continue
        # Qwen's QKV biases are not modelled: within 0.01 %
        assert shapes.total_params(m) == pytest.approx(m.published_params, rel=1e-4), m.id


def test_kv_cache_bytes_per_token_by_hand(catalog):
    # Llama-3.1-8B: 2 (K,V) x 32 layers x 8 KV heads x 128 dims x 2 bytes = 128 KiB
    assert shapes.kv_bytes_per_token(catalog.model("llama-3.1-8b")) == 131072
    # Llama-3.1-70B: 80 layers -> 320 KiB per token
    assert shapes.kv_bytes_per_token(catalog.model("llama-3.1-70b")) == 327680


def test_forward_flops_follow_two_n_rule(catalog):
    m = catalog.model("llama-3.1-70b")
    non_embedding = shapes.total_params(m) - m.vocab * m.hidden  # lookup table does no matmul
    assert shapes.forward_flops_per_token(m) == pytest.approx(2 * non_embedding, rel=1e-3)
    assert shapes.train_flops_per_token(m) == 3 * shapes.forward_flops_per_token(m)


def test_layer_slice_matches_measured_slice_size(catalog):
    # ../profiles/h200/models.csv reports 6,845,235,200 parameters for the 8-layer slice
    s = catalog.model("llama-3.1-70b/8L")
    assert shapes.total_params(s) == 6_845_235_200
    assert s.layers == 8 and s.vocab == 0


def test_h200_entry_agrees_with_measured_machine_file(catalog):
    machine = json.loads((builtin_dir() / "machine.json").read_text())
    h200 = catalog.gpu(machine["gpu"])  # looked up by the driver's name
    assert h200.id == "H200-SXM"
    assert h200.idle_power_w == pytest.approx(machine["idle_power_w"], abs=0.5)
    assert h200.power_limit_min_w == machine["power_limit_min_w"]
    assert h200.power_limit_max_w == machine["power_limit_max_w"]


def test_every_entry_cites_a_source(catalog):
    for table in (catalog.gpus, catalog.servers, catalog.models):
        for e in table.values():
            assert e.source.split(":")[0] in {"published", "measured", "derived"}, e.id


def test_servers_reference_catalog_gpus_and_power_adds_up(catalog):
    for s in catalog.servers.values():
        g = catalog.gpu(s.gpu)
        assert s.non_gpu_power_w + s.gpus_per_server * g.tdp_w == pytest.approx(s.max_power_w)


def test_overrides_replace_and_add():
    base = load_catalog()
    faster = base.gpus["H100-SXM"].model_copy(update={"memory_gb": 96.0})
    new = GpuSpec(id="X1", memory_gb=10, memory_bandwidth_tbps=1, bf16_dense_tflops=100,
                  tdp_w=300, idle_power_w=30, power_limit_min_w=100, power_limit_max_w=300,
                  scaleup_bandwidth_gbyte_s=50)
    cat = base.with_overrides(gpus=(faster, new))
    assert cat.gpu("H100-SXM").memory_gb == 96.0
    assert cat.gpu("X1").tdp_w == 300
    assert base.gpu("H100-SXM").memory_gb == 80  # the built-in stays untouched


def test_unknown_names_are_clear_errors(catalog):
    with pytest.raises(DcsimError, match="a catalog GPU"):
        catalog.gpu("H300")
    with pytest.raises(DcsimError, match="a catalog model"):
        catalog.model("gpt-5")
    with pytest.raises(DcsimError, match="layer slice"):
        catalog.model("llama-3.1-70b/eight")
