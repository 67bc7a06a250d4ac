#!/usr/bin/env python3
"""Training steps of HF transformers (+ PEFT for LoRA) on a real-shape model folder: the peer of the C# train bench
(`ML.Finetune.Bench --train-bench --peer`, which runs this after each of its own runs with the same settings).
Same workload as ours: random token rows (seed-independent of ours, same shape), labels on every token or on the last
--completion tokens, AdamW (lr 1e-4 LoRA / 1e-5 full), gradient clipping at 1.0, batch x seq, median step time after
warm-up. bf16 (as ours): the base weights bf16; LoRA adapters float32 (PEFT's default autocast_adapter_dtype); full
finetuning keeps float32 master copies in the optimizer and writes them back to the bf16 weights, as ours does.
transformers' default attention (sdpa) and loss (full logits, upcast to float32). Prints one line RESULT {json} with
the fields of the C# TrainResult."""
import argparse, json, os, statistics, sys, threading, time

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--shape", required=True)
ap.add_argument("--mode", choices=["lora", "full"], default="lora")
ap.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
for name, default in [("batch", 1), ("seq", 512), ("completion", 0), ("steps", 3), ("warmup", 1), ("threads", 2),
                      ("lora-rank", 8), ("seed", 1)]:
    ap.add_argument("--" + name, type=int, default=default)
ap.add_argument("--lora-targets", default="q_proj,v_proj")
ap.add_argument("--checkpointing", action="store_true")
a = ap.parse_args()


def status_mib(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024.0
    return -1.0


peaks = {"anon": 0.0, "file": 0.0}
stop = threading.Event()


def sample():  # peak anonymous and file-backed RSS, every 50 ms (like the C# MemorySampler)
    while not stop.wait(0.05):
        peaks["anon"] = max(peaks["anon"], status_mib("RssAnon:"))
        peaks["file"] = max(peaks["file"], status_mib("RssFile:"))


threading.Thread(target=sample, daemon=True).start()
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

torch.set_num_threads(a.threads)
torch.manual_seed(a.seed)
dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
t0 = time.perf_counter()
model = AutoModelForCausalLM.from_pretrained(a.model, dtype=dtype)
load = time.perf_counter() - t0
model.config.use_cache = False
if a.checkpointing:
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
model.train()
mirror = []
if a.mode == "lora":
    import peft
    targets = a.lora_targets.split(",")
    model = peft.get_peft_model(model, peft.LoraConfig(r=a.lora_rank, lora_alpha=2 * a.lora_rank, lora_dropout=0.0,
                                                       target_modules=targets if targets != ["all-linear"] else "all-linear"))
    if a.checkpointing:
        model.enable_input_require_grads()
    params = [p for p in model.parameters() if p.requires_grad]
    lr, notes = 1e-4, f"PEFT {peft.__version__} LoRA r={a.lora_rank} on {a.lora_targets}"
else:
    params = []
    for p in model.parameters():
        if p.dtype == torch.float32:
            params.append(p)
        else:
            mp = torch.nn.Parameter(p.detach().float())
            mirror.append((p, mp))
            params.append(mp)
    lr, notes = 1e-5, "full, AdamW" + (", fp32 masters" if mirror else "")
opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
vocab = model.config.vocab_size if a.mode == "full" else model.base_model.model.config.vocab_size
g = torch.Generator().manual_seed(a.seed)
rows = a.warmup + a.steps
ids = torch.randint(3, vocab, (rows, a.batch, a.seq), generator=g)


def step(i):
    x = ids[i]
    labels = x.clone()
    if a.completion > 0:
        labels[:, : a.seq - a.completion] = -100
    loss = model(input_ids=x, labels=labels).loss
    loss.backward()
    for w, mp in mirror:
        mp.grad = w.grad.float()
        w.grad = None
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    if mirror:
        with torch.no_grad():
            for w, mp in mirror:
                w.copy_(mp)
    return loss.item()


times, last = [], float("nan")
for i in range(rows):
    s = time.perf_counter()
    last = step(i)
    times.append(time.perf_counter() - s)
    print(f"STEP {i + 1}/{rows}: {times[-1]:.2f} s, loss {last:.4f}, RSS {status_mib('VmRSS:'):.0f} MiB", flush=True)
stop.set()
measured = times[a.warmup:]
med = statistics.median(measured)
print("RESULT " + json.dumps({
    "Shape": a.shape, "Mode": a.mode, "DType": a.dtype, "Batch": a.batch, "Seq": a.seq, "Completion": a.completion,
    "Checkpointing": a.checkpointing, "LoadSeconds": load, "FirstStepSeconds": times[0], "MedianStepSeconds": med,
    "StepSeconds": measured, "TokensPerSec": a.batch * a.seq / med, "PeakRssMiB": status_mib("VmHWM:"),
    "PeakAnonMiB": peaks["anon"], "PeakFileMiB": peaks["file"],
    "TrainableParams": sum(p.numel() for p in params), "Parameters": sum(p.numel() for p in model.parameters()),
    "LastLoss": last,
    "Notes": f"{notes}; torch {torch.__version__}, transformers {transformers.__version__}, "
             f"attention {getattr(model.config, '_attn_implementation', '?')}; threads {a.threads}",
}), flush=True)
