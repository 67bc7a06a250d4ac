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
baseline = status_mib("VmRSS:")
t0 = time.perf_counter()
model = AutoModelForCausalLM.from_pretrained(a.model, dtype=dtype)
seconds = time.perf_counter() - t0
params = list(model.parameters())
files = [f for f in os.listdir(a.model) if f.endswith(".safetensors")]
print("RESULT " + json.dumps({
    "Impl": "pytorch", "Shape": os.path.basename(a.model.rstrip("/")), "DType": a.dtype, "Mapped": False, "Cold": False,
    "LoadSeconds": seconds, "PeakRssMiB": status_mib("VmHWM:"), "BaselineRssMiB": baseline,
    "RssAfterMiB": status_mib("VmRSS:"), "RssAnonMiB": status_mib("RssAnon:"), "RssFileMiB": status_mib("RssFile:"),
    "ModelBytes": sum(p.numel() * p.element_size() for p in params), "Parameters": sum(p.numel() for p in params),
    "FileGB": sum(os.path.getsize(os.path.join(a.model, f)) for f in files) / 1e9,
    "Notes": f"torch {torch.__version__}, transformers {transformers.__version__}, threads {a.threads}",
}))
