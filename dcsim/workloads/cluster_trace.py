"""GPU cluster traces in the Alibaba 2023 format: nodes and pods.

Nodes: sn, cpu_milli, memory_mib, gpu, model. Pods: name, cpu_milli, memory_mib,
num_gpu, gpu_milli (the share of one GPU when num_gpu is 1), qos, creation_time,
deletion_time, scheduled_time (seconds). A pod's run time is deletion - scheduled
(deletion - creation when it never got scheduled).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from dcsim.csvfiles import read_csv_with
from dcsim.errors import DcsimError, Problem

BUILTIN = {"alibaba-gpu-2023": ("openb_node_list_gpu_node.csv", "openb_pod_list_default.csv")}
NODE_COLUMNS = ("sn", "cpu_milli", "memory_mib", "gpu")
POD_COLUMNS = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli", "creation_time",
               "deletion_time")


def resolve(spec: str, base_dir: Path | None) -> tuple[Path, Path]:
    """Node and pod CSV paths of `builtin:NAME` or of `NODES.csv,PODS.csv`."""
    if spec.startswith("builtin:"):
        name = spec.removeprefix("builtin:")
        if name not in BUILTIN:
            raise DcsimError(Problem("trace", spec, f"one of builtin:{', builtin:'.join(BUILTIN)}"))
        root = Path(str(resources.files("dcsim").joinpath("data", "traces", "alibaba_gpu_v2023")))
        return root / BUILTIN[name][0], root / BUILTIN[name][1]
    parts = [Path(p.strip()) for p in spec.split(",")]
    if len(parts) != 2:
        raise DcsimError(Problem("trace", spec, "builtin:NAME or 'nodes.csv,pods.csv'"))
    paths = [p if p.is_absolute() or base_dir is None else base_dir / p for p in parts]
    for p in paths:
        if not p.is_file():
            raise DcsimError(Problem("trace", str(p), "an existing CSV file"))
    return paths[0], paths[1]


def _read(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    df = read_csv_with(path, columns, "cluster trace CSV file")
    for c in columns[1:]:
        v = pd.to_numeric(df[c], errors="coerce")
        bad = df.index[~(v >= 0)]
        if len(bad):
            i = int(bad[0])
            raise DcsimError(Problem(f"row {i + 2}.{c}", df.at[i, c], "a number >= 0", str(path)))
    return df


def load_cluster_trace(nodes_path: Path, pods_path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Nodes with GPUs, and pods sorted by creation with their run time (s)."""
    nodes = _read(nodes_path, NODE_COLUMNS)
    nodes = nodes[nodes["gpu"] > 0].reset_index(drop=True)
    pods = _read(pods_path, POD_COLUMNS)
    sched = pods["scheduled_time"] if "scheduled_time" in pods else pods["creation_time"]
    start = np.where(sched > 0, sched, pods["creation_time"])
    pods = pods.assign(run_s=np.maximum(pods["deletion_time"] - start, 0.0))
    bad = pods.index[pods["deletion_time"] < pods["creation_time"]]
    if len(bad):
        i = int(bad[0])
        raise DcsimError(Problem(f"row {i + 2}.deletion_time", pods.at[i, "deletion_time"],
                                 "a time at or after creation_time", str(pods_path)))
    return nodes, pods.sort_values("creation_time", kind="stable").reset_index(drop=True)
