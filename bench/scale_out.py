"""Scale-out figures: a teacher fleet with no load balancer, and a Ray cluster losing
machines.

Fleet (``testing/fleet.py``): `distill generate` with an openai teacher over loopback
servers that each think ``--latency`` per request and run at most ``--slots`` requests at
once (a GPU's batch). Throughput with one server and with three, side by side in one run
(the ratio is the figure), then three servers with one killed mid-request and restarted on
its port: requests lost, written twice, asked again, and the rate against the healthy run.

Cluster (``testing/ray_cluster.py``): a head and two worker nodes of
``ray.cluster_utils.Cluster``; a node removed mid-generate (a replacement joins) and one
mid-filter; the same commands again. Figures per repeat: records lost and duplicated,
same traces and dataset version id as the uninterrupted run, engine loads per actor.

    python bench/scale_out.py             # fleet x3 repeats, cluster x2
    python bench/scale_out.py --quick     # fleet x1, cluster x1
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from distill.generate.engines.builtin import BuiltinDigitsEngine, BuiltinOptions  # noqa: E402
from testing.fleet import run_fleet  # noqa: E402
from testing.generate import make_ingest  # noqa: E402


def fleet(root: Path, repeats: int, samples: int, latency: float, slots: int) -> None:
    samples_dir = make_ingest(root / "ingest", {"val": samples}, shard_size=100)
    reader = BuiltinDigitsEngine("knn", BuiltinOptions())
    concurrency = 3 * slots
    print(f"\nfleet: {samples} items x k=2, client concurrency {concurrency}, each server "
          f"{latency * 1000:.0f} ms a request, {slots} at a time")
    print(f"{'run':38} {'req/s':>7} {'x one':>6} {'lost':>5} {'dup':>4} {'re-asked':>9} "
          f"{'answers per server':>24}")
    for repeat in range(repeats):
        rates = {}
        for label, servers, chaos in (("1 server", 1, False), ("3 servers", 3, False),
                                      ("3 servers, one killed + restarted", 3, True)):
            folder = root / f"{repeat}-{label.replace(' ', '_').replace(',', '')}"
            folder.mkdir()
            run = run_fleet(samples_dir, folder, reader, servers=servers, samples=samples,
                            concurrency=concurrency, latency_s=latency, slots=slots,
                            chaos=chaos)
            rates[label] = run.rate
            lost = run.requests - len(set(run.keys)) - run.rejects
            dup = len(run.keys) - len(set(run.keys))
            per_server = "/".join(map(str, run.answered)) + (
                f" +{run.after_restart}" if run.after_restart is not None else "")
            print(f"{label:38} {run.rate:7.1f} {run.rate / rates['1 server']:6.2f} "
                  f"{lost:5d} {dup:4d} {run.reasked:9d} {per_server:>24}")
            shutil.rmtree(folder)


def cluster(root: Path, repeats: int) -> None:
    from testing.ray_cluster import lose_nodes

    print("\nray cluster (head + 2 worker nodes in this machine's processes)")
    print(f"{'repeat':>6} {'nodes lost':>10} {'first runs':>22} {'traces':>6} {'lost':>5} "
          f"{'dup':>4} {'same traces':>11} {'same version':>12} {'loads/actor':>11} "
          f"{'actors':>6} {'s':>5}")
    for repeat in range(repeats):
        folder = root / f"cluster-{repeat}"
        folder.mkdir()
        run = lose_nodes(folder)
        first = "/".join("failed" if failed else "finished" for failed in
                         (run.first_generate_failed, run.first_filter_failed))
        expected = 6 * 8 * 2
        print(f"{repeat:6d} {len(run.removed):10d} {first:>22} {len(run.keys):6d} "
              f"{expected - len(set(run.keys)):5d} {len(run.keys) - len(set(run.keys)):4d} "
              f"{run.same_traces!s:>11} {(run.version == run.local_version)!s:>12} "
              f"{max(run.engine_loads.values()):11d} {run.actors:6d} {run.seconds:5.0f}")
        shutil.rmtree(folder)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--no-cluster", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="scale-out-"))
    try:
        fleet(root, 1 if args.quick else 3, 100 if args.quick else 300, args.latency,
              args.slots)
        if not args.no_cluster:
            cluster(root, 1 if args.quick else 2)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
