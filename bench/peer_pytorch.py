#!/usr/bin/env python3
"""PyTorch peer of bench/ML.Finetune.Bench: the same GPT-2-small shapes, threads and modes on CPU, one mode per
process. Prints one line "RESULT {json}" with the harness's field names. Plain PyTorch (>= 1.13), no transformers/peft:
the model below mirrors src/ML.Finetune/Models/Gpt2.cs (eager attention, gelu_new, tied head, fp32 logits).
bf16 path by hand, exactly like ours: frozen base weights cast once to bf16, trained parameters float32 masters
(adapters/prompts cast to bf16 inside the forward; full finetuning keeps bf16 weights plus fp32 masters), fp32 loss."""
import argparse, json, math, os, statistics, sys, time

# --isa avx2: cap ATen, MKL and oneDNN to AVX2 before torch loads (set here because sid-python passes only a few
# variables into its chroot); the harness gives our children the same variables.
if "--isa" in sys.argv and sys.argv[sys.argv.index("--isa") + 1] == "avx2":
    os.environ.update(ATEN_CPU_CAPABILITY="avx2", MKL_ENABLE_INSTRUCTIONS="AVX2", ONEDNN_MAX_CPU_ISA="AVX2", DNNL_MAX_CPU_ISA="AVX2",
                      OPENBLAS_CORETYPE="Haswell")  # Debian's torch uses OpenBLAS (DYNAMIC_ARCH)
import torch
import torch.nn as nn
import torch.nn.functional as F

MODES = ["forward", "full", "lora", "lora-all", "prompt", "prefix", "gen-cache", "gen-nocache"]


def gelu_new(x):
    return x.mul(0.5).mul(x.add(x.pow(3.0).mul(0.044715)).mul(math.sqrt(2.0 / math.pi)).tanh().add(1.0))


class Linear(nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(o, i))
        self.bias = nn.Parameter(torch.zeros(o))
        self.adapter = None

    def forward(self, x):
        y = F.linear(x, self.weight, self.bias)
        return y if self.adapter is None else y.add_(self.adapter(x))


class Lora(nn.Module):
    def __init__(self, i, o, r, alpha, gen):
        super().__init__()
        self.lora_A = nn.Parameter(torch.randn(r, i, generator=gen) / math.sqrt(i))
        self.lora_B = nn.Parameter(torch.zeros(o, r))
        self.scale = alpha / r

    def forward(self, x):
        return F.linear(F.linear(x, self.lora_A.to(x.dtype)), self.lora_B.to(x.dtype)).mul_(self.scale)


class Block(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.h, self.dh = h, d // h
        self.ln_1, self.ln_2 = nn.LayerNorm(d, eps=1e-5), nn.LayerNorm(d, eps=1e-5)
        self.c_attn, self.attn_proj = Linear(d, 3 * d), Linear(d, d)
        self.c_fc, self.mlp_proj = Linear(d, 4 * d), Linear(4 * d, d)

    def forward(self, x, mask, cache, layer):
        b, t, d = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(d, 2)
        q, k, v = [z.view(b, t, self.h, self.dh).transpose(1, 2) for z in (q, k, v)]
        if cache is not None:
            if cache[layer] is not None:
                pk, pv = cache[layer]
                k = torch.cat([pk.to(k.dtype), k], 2)
                v = torch.cat([pv.to(v.dtype), v], 2)
            cache[layer] = (k, v)
        s = q.matmul(k.transpose(-1, -2)).div(math.sqrt(self.dh)).add(mask)
        o = s.softmax(-1).matmul(v).transpose(1, 2).reshape(b, t, d)
        x = x.add(self.attn_proj(o))
        return x.add(self.mlp_proj(gelu_new(self.c_fc(self.ln_2(x)))))


class GPT2(nn.Module):
    def __init__(self, layers, d=768, h=12, vocab=50257, npos=1024):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(npos, d)
        self.blocks = nn.ModuleList([Block(d, h) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(d, eps=1e-5)

    @property
    def dtype(self):
        return self.wte.weight.dtype

    def forward(self, ids=None, embeds=None, cache=None):
        h = embeds if embeds is not None else self.wte(ids)
        h = h.to(self.dtype)
        b, t = h.shape[:2]
        past = 0 if cache is None or cache[0] is None else cache[0][0].shape[2]
        pos = torch.arange(past, past + t).unsqueeze(0).expand(b, -1)
        h = h.add(self.wpe(pos))
        q = torch.arange(past, past + t).unsqueeze(1)
        k = torch.arange(0, past + t).unsqueeze(0)
        mask = torch.where(k.le(q), torch.zeros(1, dtype=h.dtype), torch.full((1,), torch.finfo(h.dtype).min, dtype=h.dtype))
        for i, blk in enumerate(self.blocks):
            h = blk(h, mask, cache, i)
        return F.linear(self.ln_f(h), self.wte.weight).float()


def build(layers, seed, dtype):
    m = GPT2(layers)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n.endswith(".bias"):
                p.zero_()
            elif p.dim() == 1:
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=g).mul_(0.02))
    return m.to(dtype)


class Trainer:
    def __init__(self, m, mode, a):
        self.m, self.mode, self.k, self.completion = m, mode, a.virtual_tokens, a.completion
        g = torch.Generator().manual_seed(a.seed + 1)
        self.mirror, params = [], []
        if mode != "full":
            for p in m.parameters():
                p.requires_grad_(False)
        if mode == "full":
            if m.dtype == torch.float32:
                params = list(m.parameters())
            else:
                for p in m.parameters():
                    mp = nn.Parameter(p.detach().float())
                    self.mirror.append((p, mp))
                    params.append(mp)
        elif mode in ("lora", "lora-all"):
            for blk in m.blocks:
                lins = [blk.c_attn] if mode == "lora" else [blk.c_attn, blk.attn_proj, blk.c_fc, blk.mlp_proj]
                for lin in lins:
                    lin.adapter = Lora(lin.weight.shape[1], lin.weight.shape[0], a.lora_rank, a.lora_alpha, g)
                    params += [lin.adapter.lora_A, lin.adapter.lora_B]
        elif mode == "prompt":
            self.soft = nn.Parameter(torch.randn(self.k, 768, generator=g) * 0.02)
            params = [self.soft]
        elif mode == "prefix":
            self.pk = [nn.Parameter(torch.randn(12, self.k, 64, generator=g) * 0.02) for _ in m.blocks]
            self.pv = [nn.Parameter(torch.randn(12, self.k, 64, generator=g) * 0.02) for _ in m.blocks]
            params = self.pk + self.pv
        self.params = params
        self.opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)

    def step(self, ids):
        self.opt.zero_grad(set_to_none=True)
        b = ids.shape[0]
        if self.mode == "prompt":
            emb = self.m.wte(ids)
            soft = self.soft.to(emb.dtype).unsqueeze(0).expand(b, -1, -1)
            logits = self.m(embeds=torch.cat([soft, emb], 1))[:, self.k:]
        elif self.mode == "prefix":
            cache = [(k.unsqueeze(0).expand(b, -1, -1, -1), v.unsqueeze(0).expand(b, -1, -1, -1)) for k, v in zip(self.pk, self.pv)]
            logits = self.m(ids, cache=cache)
        else:
            logits = self.m(ids)
        v = logits.shape[2]
        targets = ids[:, 1:]
        if 0 < self.completion < ids.shape[1]:  # SFT-shaped: prompt positions ignored (-100), as HF's default path does
            targets = targets.clone()
            targets[:, : ids.shape[1] - self.completion - 1] = -100
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, v), targets.reshape(-1), ignore_index=-100)
        loss.backward()
        for w, mp in self.mirror:
            mp.grad = w.grad.float()
        self.opt.step()
        if self.mirror:
            with torch.no_grad():
                for w, mp in self.mirror:
                    w.copy_(mp)
                    w.grad = None
        return loss.item()


def greedy(m, prompt, new, use_cache):
    with torch.no_grad():
        seq, inp = prompt, prompt
        cache = [None] * len(m.blocks) if use_cache else None
        for _ in range(new):
            logits = m(inp if use_cache else seq, cache=cache)
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], 1)
            inp = nxt
        return float(nxt[0, 0])


def minflt():
    with open("/proc/self/stat") as f:
        s = f.read()
    return int(s[s.rindex(")") + 2:].split()[7])


def peak_rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return -1.0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mode", required=True, choices=MODES)
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    for name, default in [("layers", 12), ("batch", 4), ("seq", 128), ("threads", 2), ("steps", 5), ("warmup", 3),
                          ("gen-steps", 5), ("gen-warmup", 3), ("gen-prompt", 16), ("gen-new", 128), ("gen-batch", 1),
                          ("lora-rank", 8), ("virtual-tokens", 16), ("seed", 1234), ("completion", 0)]:
        p.add_argument("--" + name, type=int, default=default)
    p.add_argument("--lora-alpha", type=float, default=16.0)
    p.add_argument("--isa", choices=["avx2"], default=None)
    p.add_argument("--profile", action="store_true", help="after the timed steps, one more step under torch.profiler: ops by self CPU time")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    dt = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    m = build(a.layers, a.seed, dt)
    g = torch.Generator().manual_seed(a.seed)
    ids = torch.randint(0, 50257, (a.batch, a.seq), generator=g)
    is_gen = a.mode.startswith("gen-")
    warm, steps = (a.gen_warmup, a.gen_steps) if is_gen else (a.warmup, a.steps)
    per_run = a.gen_batch * a.gen_new if is_gen else a.batch * a.seq
    trainable, notes = 0, ""
    if a.mode == "forward":
        m.eval()
        def step():
            with torch.no_grad():
                return float(m(ids)[0, 0, 0])
    elif is_gen:
        m.eval()
        prompt = torch.randint(0, 50257, (a.gen_batch, a.gen_prompt), generator=g)
        step = lambda: greedy(m, prompt, a.gen_new, a.mode == "gen-cache")
        notes = f"batch {a.gen_batch}, prompt {a.gen_prompt}, {a.gen_new} new"
    else:
        t = Trainer(m, a.mode, a)
        trainable = sum(x.numel() for x in t.params)
        step = lambda: t.step(ids)
    for _ in range(warm):
        step()
    times, last = [], 0.0
    f0 = minflt()
    for _ in range(steps):
        t0 = time.perf_counter()
        last = step()
        times.append((time.perf_counter() - t0) * 1000.0)
    f1 = minflt()
    if a.profile:
        from torch.profiler import profile, ProfilerActivity
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))
    med = statistics.median(times)
    print("RESULT " + json.dumps(dict(Impl="pytorch", Mode=a.mode, DType=a.dtype, TokensPerSec=per_run / (med / 1000.0),
                                      MedianMs=med, StepMs=times, PeakRssMiB=peak_rss_mib(), FaultsPerStep=(f1 - f0) / steps,
                                      TrainableParams=trainable, LastLoss=last,
                                      Notes=f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()} {notes}".strip())))


if __name__ == "__main__":
    main()
