"""Training speed of the project's Caffe and the PyTorch engine, side by side, in one run.

    python bench/bench_train.py [--nets DSOD300 quickstart] [--seconds 20] [--peak GFLOPS]
                                [--device cpu|cuda] [--gpu-batch 32] [--json OUT]

Each net is the official train net (DSOD300 at 300x300, batch 4; the quickstart's own design
from ``examples/dsod/quickstart.py`` at 128x128, batch 8) with its AnnotatedData layer
replaced by an Input layer holding one fixed batch with ground-truth boxes: the timing is of
whole solver iterations - forward, MultiBoxLoss, backward and the SGD update - in pycaffe's
``solver.step`` and in the torch trainer's ``step``, not of data reading. Each engine runs one
warm-up iteration, then timed ones until ``--seconds`` have passed (at least 2); rates use
the median. FLOPs of an iteration = 3 x the forward FLOPs of the deploy net
(``model_libs.summary``; backward ~ 2 x forward), per image; % of peak against the CPU's FP32
peak (``bench_deploy.cpu_peak``: cores x GHz x FLOPs/cycle) or ``--peak``.

``--device cuda`` adds DSOD300 on the GPU with the torch engine: images/s in fp32 and with
bf16 autocast (``--amp bf16``), batch ``--gpu-batch``. It needs torch with CUDA and the
package (installed, or ``PYTHONPATH=.`` in a checkout); Caffe is not needed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from bench_deploy import cpu_peak

from model_libs.cli import make_parser, run
from model_libs.dsod import deploy_net, recipe
from model_libs.dsod.nets import solver as solver_param
from model_libs.dsod.nets import train_net
from model_libs.proto import caffe_pb2
from model_libs.summary import summarize

ROOT = Path(__file__).resolve().parents[1]


def quickstart_recipe(size: int = 128, batch: int = 8):
    """The quickstart's design (``examples/dsod/quickstart.py``) with placeholder data paths."""
    spec = importlib.util.spec_from_file_location("quickstart_example", ROOT / "examples/dsod/quickstart.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    data = SimpleNamespace(train_lmdb="train", test_lmdb="test", labelmap="labelmap", name_size="sizes")
    return mod.design_net(data, Path("bench_out"), iters=1000, batch=batch, n_test=10, size=size)


def fixed_batch(r, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """One batch of smooth random images with two ground-truth boxes each."""
    rng = np.random.default_rng(seed)
    h, w = r.resize
    small = rng.uniform(-60, 60, (batch, 3, h // 8 + 1, w // 8 + 1)).astype(np.float32)
    data = np.repeat(np.repeat(small, 8, axis=2), 8, axis=3)[:, :, :h, :w].copy()
    rows = []
    for i in range(batch):
        for k in range(2):
            x0, y0 = rng.uniform(0.05, 0.5, 2)
            bw, bh = rng.uniform(0.15, 0.45, 2)
            label = int(rng.integers(1, r.num_classes))
            rows.append([i, label, k, x0, y0, x0 + bw, y0 + bh, 0])
    label = np.asarray(rows, np.float32).reshape(1, 1, -1, 8)
    return {"data": data, "label": label}


def bench_net(r, batch: int) -> tuple[caffe_pb2.NetParameter, caffe_pb2.SolverParameter, dict]:
    """The train net fed by an Input layer, its solver (iter_size 1, no tests/snapshots)."""
    arrays = fixed_batch(r, batch)
    net = train_net(r, [])
    data_layer = net.layer[0]
    assert data_layer.type == "AnnotatedData"
    inp = caffe_pb2.LayerParameter(name="data", type="Input", top=list(data_layer.top))
    for top in data_layer.top:
        inp.input_param.shape.add().dim.extend(arrays[top].shape)
    del net.layer[0]
    net.layer.insert(0, inp)
    p = solver_param(r, "train.prototxt", "test.prototxt", "snap", [])
    p.iter_size = 1
    p.display = 0
    p.snapshot = 0
    p.snapshot_after_train = False
    p.test_interval = 0
    del p.test_net[:]
    del p.test_iter[:]
    p.ClearField("snapshot_prefix")
    return net, p, arrays


def _timed(step, seconds: float) -> list[float]:
    step()  # warm-up
    times: list[float] = []
    t_end = time.perf_counter() + seconds
    while len(times) < 2 or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def time_caffe(net, param, arrays, seconds: float, tmp: Path) -> list[float] | None:
    from model_libs.caffe_env import find_caffe, import_caffe

    if find_caffe(required=False) is None:
        return None
    caffe = import_caffe()
    caffe.set_mode_cpu()
    (tmp / "train.prototxt").write_text(str(net))
    copy = type(param)()
    copy.CopyFrom(param)
    param = copy
    param.train_net = str(tmp / "train.prototxt")
    (tmp / "solver.prototxt").write_text(str(param))
    s = caffe.get_solver(str(tmp / "solver.prototxt"))
    for k, v in arrays.items():
        s.net.blobs[k].data[...] = v
    return _timed(lambda: s.step(1), seconds)


def time_torch(
    net, param, arrays, seconds: float, device: str = "cpu", amp: str | None = None
) -> list[float]:
    import torch

    from model_libs.pytorch.trainer import Trainer, TrainOptions
    from model_libs.recipes.solver_job import SolverJob

    job = SolverJob(Path("solver.prototxt"), param, None, net)
    batch = {k: torch.from_numpy(v) for k, v in arrays.items()}

    def forever():
        while True:
            yield batch

    trainer = Trainer(job, TrainOptions(device=device, amp=amp), train_batches=forever())
    return _timed(lambda: trainer.step(1), seconds)


def sgemm_gflops(seconds: float = 3.0, n: int = 4096) -> float:
    """What this machine's FP32 matrix product reaches with torch's threads: a measured peak.

    The cpuinfo estimate assumes one vector FMA unit per core; CPUs with two (many Xeons)
    reach twice that, so a matrix product is the honest ceiling to compare against.
    """
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    times = []
    t_end = time.perf_counter() + seconds
    while len(times) < 3 or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / min(times) / 1e9


def build_parser():
    ap = make_parser("bench_train.py", __doc__.split("\n\n")[0])
    ap.add_argument(
        "--nets",
        nargs="*",
        default=["DSOD300", "quickstart"],
        choices=["DSOD300", "quickstart"],
        help="CPU nets (none: only the --device cuda section)",
    )
    ap.add_argument("--dsod-batch", type=int, default=4, help="DSOD300 batch on the CPU (default 4)")
    ap.add_argument("--seconds", type=float, default=20.0, help="timed seconds per engine and net")
    ap.add_argument("--peak", type=float, default=None, help="FP32 peak GFLOP/s (default: cpuinfo)")
    ap.add_argument("--engines", nargs="+", default=["caffe", "torch"], choices=["caffe", "torch"])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cuda: add the GPU section")
    ap.add_argument("--gpu-batch", type=int, default=32, help="DSOD300 batch on the GPU (default 32)")
    ap.add_argument("--json", help="also write the results as JSON")
    return ap


def main(argv: list[str] | None = None) -> int:
    return run(argv, build_parser, _bench)


def _row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))


def _table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print(_row(rows[0], widths))
    print("  ".join("-" * w for w in widths))
    for r in rows[1:]:
        print(_row(r, widths))


def _bench(args) -> int:
    import torch

    peak = cpu_peak()
    peak_gflops = args.peak or peak["peak_gflops"]
    print(
        f"CPU: {peak['cpu']}, {peak['cores']} cores x {peak['ghz']:.3f} GHz x {peak['flops_per_cycle']} "
        f"FP32 FLOPs/cycle ({peak['isa']}) = {peak['peak_gflops']:.1f} GFLOP/s"
        + (f"; using --peak {args.peak:.1f}" if args.peak else "")
    )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads; load average {load:.1f}")
    sgemm = sgemm_gflops() if args.nets else None
    if sgemm:
        print(f"measured FP32 matrix product (4096x4096, torch): {sgemm:.1f} GFLOP/s")
    results: list[dict] = []
    configs = {
        "DSOD300": lambda: (recipe("DSOD300"), args.dsod_batch),
        "quickstart": lambda: (quickstart_recipe(), 8),
    }
    with tempfile.TemporaryDirectory() as tmpdir:
        for name in args.nets:
            r, batch = configs[name]()
            net, param, arrays = bench_net(r, batch)
            fwd = summarize(deploy_net(r)).flops  # per image
            iter_flops = 3 * fwd * batch
            h, w = r.resize
            print(f"\n{name} {h}x{w}, batch {batch}: {fwd / 1e9:.2f} GFLOPs/image forward, x3 per iteration")
            row = {"net": name, "size": f"{h}x{w}", "batch": batch, "gflops_per_image": fwd / 1e9}
            for engine in args.engines:
                if engine == "caffe":
                    tmp = Path(tmpdir, name)
                    tmp.mkdir(exist_ok=True)
                    times = time_caffe(net, param, arrays, args.seconds, tmp)
                    if times is None:
                        print("  caffe: not built here; skipped")
                        continue
                else:
                    times = time_torch(net, param, arrays, args.seconds)
                med = statistics.median(times)
                gflops = iter_flops / med / 1e9
                row[engine] = {
                    "iterations": len(times),
                    "seconds_per_iteration": med,
                    "images_per_s": batch / med,
                    "gflops": gflops,
                    "peak_ratio": gflops / peak_gflops,
                    "sgemm_ratio": gflops / sgemm if sgemm else None,
                }
                print(
                    f"  {engine}: {len(times)} iterations, median {med:.3f} s/iter, {batch / med:.2f} "
                    f"images/s, {gflops:.1f} GFLOP/s ({100 * gflops / peak_gflops:.1f}% of peak, "
                    f"{100 * gflops / sgemm:.1f}% of the measured matrix product)"
                )
            results.append(row)

    print()
    rows = [
        [
            "net, batch",
            "Caffe images/s",
            "torch images/s",
            "torch/Caffe",
            "Caffe % peak",
            "torch % peak",
            "torch % SGEMM",
        ]
    ]
    if not results:
        rows = []
    for row in results:
        c, t = row.get("caffe"), row.get("torch")
        rows.append(
            [
                f"{row['net']} {row['size']}, batch {row['batch']}",
                f"{c['images_per_s']:.2f}" if c else "-",
                f"{t['images_per_s']:.2f}" if t else "-",
                f"{t['images_per_s'] / c['images_per_s']:.2f}x" if c and t else "-",
                f"{100 * c['peak_ratio']:.1f}%" if c else "-",
                f"{100 * t['peak_ratio']:.1f}%" if t else "-",
                f"{100 * t['sgemm_ratio']:.1f}%" if t else "-",
            ]
        )
    if rows:
        _table(rows)

    gpu = None
    if args.device == "cuda":
        gpu = bench_cuda(args)
    if args.json:
        doc = {
            "cpu": peak,
            "peak_gflops": peak_gflops,
            "sgemm_gflops": sgemm,
            "load": load,
            "results": results,
            "cuda": gpu,
        }
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
    return 0


def bench_cuda(args) -> dict:
    """DSOD300 with the torch engine on the GPU: fp32 and bf16 autocast."""
    import torch

    from model_libs.errors import ModelLibsError

    if not torch.cuda.is_available():
        raise ModelLibsError(f"--device cuda: PyTorch {torch.__version__} sees no CUDA device")
    r = recipe("DSOD300")
    net, param, arrays = bench_net(r, args.gpu_batch)
    fwd = summarize(deploy_net(r)).flops
    name = torch.cuda.get_device_name(0)
    print(f"\nGPU: {name}, DSOD300 300x300, batch {args.gpu_batch}, torch engine")
    out = {"gpu": name, "batch": args.gpu_batch, "runs": {}}
    rows = [["precision", "iterations", "s/iter", "images/s", "TFLOP/s"]]
    for amp in (None, "bf16"):
        times = time_torch(net, param, arrays, args.seconds, device="cuda", amp=amp)
        med = statistics.median(times)
        tflops = 3 * fwd * args.gpu_batch / med / 1e12
        label = amp or "fp32"
        out["runs"][label] = {
            "iterations": len(times),
            "seconds_per_iteration": med,
            "images_per_s": args.gpu_batch / med,
        }
        rows.append([label, str(len(times)), f"{med:.4f}", f"{args.gpu_batch / med:.1f}", f"{tflops:.1f}"])
    _table(rows)
    f, b = out["runs"]["fp32"]["images_per_s"], out["runs"]["bf16"]["images_per_s"]
    print(f"bf16 / fp32 = {b / f:.2f}x")
    return out


if __name__ == "__main__":
    sys.exit(main())
