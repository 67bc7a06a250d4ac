#!/usr/bin/env python3
"""The PyTorch peer's fp32 GEMM GFLOP/s at GPT-2-small training shapes (see GemmShapesProbe.cs). --isa avx2 caps
ATen/MKL/oneDNN/OpenBLAS to AVX2 before torch loads."""
import os, sys, time
if "--isa" in sys.argv and sys.argv[sys.argv.index("--isa") + 1] == "avx2":
    os.environ.update(ATEN_CPU_CAPABILITY="avx2", MKL_ENABLE_INSTRUCTIONS="AVX2", ONEDNN_MAX_CPU_ISA="AVX2", OPENBLAS_CORETYPE="Haswell")
import torch
import torch.nn.functional as F

torch.set_num_threads(2)
torch.manual_seed(0)
rows = 512
print(f"peer: torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), 2 threads, rows {rows}")


def t(op):
    for _ in range(2):
        op()
    ts = []
    for _ in range(7):
        s = time.perf_counter()
        op()
        ts.append(time.perf_counter() - s)
    return sorted(ts)[3]


for name, o, i in [("c_attn", 2304, 768), ("attn proj", 768, 768), ("c_fc", 3072, 768), ("mlp proj", 768, 3072), ("lm head", 50257, 768)]:
    x, w, dy = torch.randn(rows, i), torch.randn(o, i), torch.randn(rows, o)
    gf = 2.0 * rows * o * i / 1e9
    print(f"{name:<10} [{rows},{i}]x[{o},{i}]^T | fwd {gf / t(lambda: F.linear(x, w)):6.1f}  dX {gf / t(lambda: dy.matmul(w)):6.1f}  "
          f"dW {gf / t(lambda: dy.t().matmul(x)):6.1f} GFLOP/s")
