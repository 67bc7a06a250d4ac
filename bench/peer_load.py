#!/usr/bin/env python3
"""Load time and peak RSS of transformers' from_pretrained on a model folder: the peer of the C# load benchmark
(`ML.Finetune.Bench --load-bench`, which runs this once per shape and dtype). Prints one line:
RESULT {json} with the fields of the C# LoadResult."""
import argparse, json, os, time

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
ap.add_argument("--threads", type=int, default=2)
a = ap.parse_args()


def status_mib(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024.0
    return -1.0


import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

torch.set_num_threads(a.threads)
torch.zeros(1)
dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
baseline, baseline_anon = status_mib("VmRSS:"), status_mib("RssAnon:")
t0, c0 = time.perf_counter(), time.process_time()
model = AutoModelForCausalLM.from_pretrained(a.model, dtype=dtype)
seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
peak, after, anon, file_ = status_mib("VmHWM:"), status_mib("VmRSS:"), status_mib("RssAnon:"), status_mib("RssFile:")
params = list(model.parameters())
model_bytes = sum(p.numel() * p.element_size() for p in params)
# Read every weight once (what a mapped load defers to the first forward), as the C# side does.
t1 = time.perf_counter()
with torch.no_grad():
    for p in params:
        p.max().float().item()
touch = time.perf_counter() - t1
files = [f for f in os.listdir(a.model) if f.endswith(".safetensors")]
print("RESULT " + json.dumps({
    "Impl": "pytorch", "Shape": os.path.basename(a.model.rstrip("/")), "DType": a.dtype, "Cold": False,
    # transformers keeps safetensors' mapping when nothing is converted: the weights are then not anonymous memory
    "Mapped": (anon - baseline_anon) * 2**20 < 0.5 * model_bytes,
    "LoadSeconds": seconds, "LoadCpuSeconds": cpu_seconds, "TouchSeconds": touch, "PeakRssMiB": peak, "BaselineRssMiB": baseline,
    "RssAfterMiB": after, "RssAnonMiB": anon, "RssFileMiB": file_,
    "ModelBytes": model_bytes, "Parameters": sum(p.numel() for p in params),
    "FileGB": sum(os.path.getsize(os.path.join(a.model, f)) for f in files) / 1e9,
    "Notes": f"torch {torch.__version__}, transformers {transformers.__version__}, threads {a.threads}",
}))
