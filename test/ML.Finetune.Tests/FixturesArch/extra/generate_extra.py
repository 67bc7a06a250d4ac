#!/usr/bin/env python3
"""Supplementary HF/PEFT references for ML.Finetune's family tests, on top of the fixtures-arch set (../README.md).

It covers what that set has no fixture for:
  * sliding windows switched on by the config in families other than Gemma: Mistral `sliding_window` (every layer),
    Qwen2 `use_sliding_window` + `max_window_layers` (some layers), Phi-3 `sliding_window` together with LongRoPE and
    partial rotary (a Phi-3.5 / Phi-4-mini style config);
  * PEFT adapters on the new families: LoRA on Phi-3's fused qkv_proj / gate_up_proj, LoRA all-linear on Gemma 3,
    prefix tuning on Qwen3, Phi-3, Gemma 2 and Gemma 3 (GQA/MQA, head_dim != hidden/heads, sliding layers),
    prompt tuning on Gemma 2 and Gemma 3 (the sqrt(hidden) embedding scale).

Conventions as in ../generate_arch.py: tiny random models (weights overwritten from a seeded generator: matrices
0.1N, biases 0.05N, norms 1+0.1N or 0.1N for Gemma's (1+w) norms), the inputs of ../reference/inputs.safetensors,
eager attention, float32, 1 thread. Only torch, transformers, peft and safetensors are imported.

    OMP_NUM_THREADS=1 python3 generate_extra.py --arch DIR_OF_FIXTURES_ARCH --out DIR

writes DIR/<model or adapter>/ and DIR/reference/<name>.safetensors plus DIR/extra_manifest.json.
"""
import argparse
import json
import os

import torch
import transformers
from safetensors.torch import load_file, save_file

torch.set_num_threads(1)
GEN_NEW = 8

SW_MODELS = {
    "tiny-mistral-sw": ("MistralForCausalLM", "MistralConfig", 5001, "one_plus", dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=128, rms_norm_eps=1e-6, hidden_act="silu", tie_word_embeddings=False,
        attention_dropout=0.0, sliding_window=4, rope_parameters={"rope_type": "default", "rope_theta": 10000.0})),
    "tiny-qwen2-sw": ("Qwen2ForCausalLM", "Qwen2Config", 5002, "one_plus", dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=128, rms_norm_eps=1e-6, hidden_act="silu", tie_word_embeddings=True,
        attention_dropout=0.0, use_sliding_window=True, sliding_window=4, max_window_layers=1,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0})),
    # Phi-3.5/Phi-4-mini style: LongRoPE (short/long factors, switch at original_max_position_embeddings 8 < 12),
    # partial rotary 0.75, and Phi-3-mini's all-layer sliding window (6 here).
    "tiny-phi3-longrope": ("Phi3ForCausalLM", "Phi3Config", 5003, "one_plus", dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=32, original_max_position_embeddings=8, rms_norm_eps=1e-5, hidden_act="silu",
        tie_word_embeddings=False, resid_pdrop=0.0, embd_pdrop=0.0, attention_dropout=0.0, sliding_window=6,
        rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.75,
                         "short_factor": [1.0, 1.1, 1.3, 1.8, 2.5, 3.0],
                         "long_factor": [1.0, 1.5, 2.5, 4.0, 6.0, 8.0]})),
}

LORA = {  # name: (base model dir in the arch set, class, target_modules, r, alpha, seed)
    "tiny-phi3-lora": ("tiny-phi3", "Phi3ForCausalLM", ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"], 4, 8, 5011),
    "tiny-gemma3-lora": ("tiny-gemma3", "Gemma3ForCausalLM", "all-linear", 2, 4, 5012),
}
PREFIX = {  # name: (base, class, num_virtual_tokens, seed)
    "tiny-qwen3-prefix": ("tiny-qwen3", "Qwen3ForCausalLM", 3, 5021),
    "tiny-phi3-prefix": ("tiny-phi3", "Phi3ForCausalLM", 3, 5022),
    "tiny-gemma2-prefix": ("tiny-gemma2", "Gemma2ForCausalLM", 3, 5023),
    "tiny-gemma3-prefix": ("tiny-gemma3", "Gemma3ForCausalLM", 5, 5024),
}
PROMPT = {  # name: (base, class, num_virtual_tokens, seed)
    "tiny-gemma2-prompt": ("tiny-gemma2", "Gemma2ForCausalLM", 4, 5031),
    "tiny-gemma3-prompt": ("tiny-gemma3", "Gemma3ForCausalLM", 4, 5032),
}


def randomize_(model, seed, norm_init):
    norm_ids = {id(p) for _, mod in model.named_modules() if "norm" in type(mod).__name__.lower()
                for p in mod.parameters(recurse=False)}
    base = 1.0 if norm_init == "one_plus" else 0.0
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if id(p) in norm_ids and name.endswith("weight"):
                p.copy_(base + 0.1 * r)
            elif p.dim() >= 2:
                p.copy_(0.1 * r)
            else:
                p.copy_(0.05 * r)


def load(path, cls):
    return getattr(transformers, cls).from_pretrained(path, attn_implementation="eager", dtype=torch.float32).eval()


def forward(model, x, which, labels=True):
    kw = dict(input_ids=x[f"input_ids_{which}"], attention_mask=x[f"attention_mask_{which}"], use_cache=False)
    if which == "left":
        kw["position_ids"] = x["position_ids_left"]
    if labels and which == "right":
        kw["labels"] = x["labels_right"]
    with torch.no_grad():
        return model(**kw)


def logprobs(logits, ids):
    lp = torch.log_softmax(logits.float(), -1)
    return lp[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)


def greedy(model, prompt):
    """generate() with its default KV cache, and an independent no-cache argmax loop (both float32)."""
    with torch.no_grad():
        cached = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=GEN_NEW, do_sample=False)
        ids = prompt.clone()
        for _ in range(GEN_NEW):
            lg = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits[0, -1]
            ids = torch.cat([ids, lg.argmax().view(1, 1)], 1)
    return cached, ids


def save_ref(out, name, ref):
    os.makedirs(os.path.join(out, "reference"), exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in ref.items()}, os.path.join(out, "reference", name + ".safetensors"))


def save_adapter(pm, path, base_name):
    pm.peft_config["default"].base_model_name_or_path = base_name
    pm.save_pretrained(path)
    card = os.path.join(path, "README.md")
    if os.path.exists(card):
        os.remove(card)
    cp = os.path.join(path, "adapter_config.json")
    with open(cp) as f:
        c = json.load(f)
    if isinstance(c.get("target_modules"), list):  # set order depends on the hash seed
        c["target_modules"] = sorted(c["target_modules"])
    with open(cp, "w") as f:
        f.write(json.dumps(c, indent=2, sort_keys=True))


def sliding_models(out, x, man):
    for name, (cls, cfg_cls, seed, norm_init, kw) in SW_MODELS.items():
        cfg = getattr(transformers, cfg_cls)(vocab_size=1000, bos_token_id=1, eos_token_id=2, pad_token_id=0, **kw)
        torch.manual_seed(seed)
        model = getattr(transformers, cls)(cfg)
        randomize_(model, seed, norm_init)
        path = os.path.join(out, name)
        model.save_pretrained(path)
        model = load(path, cls)
        o_r, o_l = forward(model, x, "right"), forward(model, x, "left")
        cached, loop = greedy(model, x["generate_prompt_ids"])
        # the same model without the window (W >= T everywhere) for the discrimination figure
        nowin = load(path, cls)
        nowin.config.sliding_window = 4096
        d_nowin = float((forward(nowin, x, "right").logits - o_r.logits)[x["attention_mask_right"].bool()].abs().max())
        save_ref(out, name, {
            "logits_right": o_r.logits, "next_token_logprobs_right": logprobs(o_r.logits, x["input_ids_right"]),
            "loss_right": o_r.loss.reshape(()), "logits_left": o_l.logits,
            "generate_greedy_ids": cached, "greedy_ids_nocache": loop,
        })
        man[name] = {"config": kw, "loss_right": o_r.loss.item(), "generate_ids": cached[0].tolist(),
                     "nocache_loop_ids": loop[0].tolist(), "cached_equals_nocache": bool(torch.equal(cached, loop)),
                     "logits_right_valid_maxabs_vs_no_window": d_nowin}


def peft_randomize_(pm, seed, std, key):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if key(n):
                p.copy_(std * torch.randn(p.shape, generator=g))


def lora_adapters(arch, out, x, man):
    from peft import LoraConfig, get_peft_model
    for name, (base, cls, targets, r, alpha, seed) in LORA.items():
        pm = get_peft_model(load(os.path.join(arch, base), cls),
                            LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets, bias="none", task_type="CAUSAL_LM"))
        peft_randomize_(pm, seed, 0.1, lambda n: "lora_A" in n or "lora_B" in n)
        pm.eval()
        save_adapter(pm, os.path.join(out, name), base)
        o = forward(pm, x, "right")
        merged = pm.merge_and_unload()
        om = forward(merged, x, "right")
        save_ref(out, name, {"logits_right": o.logits, "loss_right": o.loss.reshape(()), "merged_logits_right": om.logits})
        keys = sorted(load_file(os.path.join(out, name, "adapter_model.safetensors")).keys())
        man[name] = {"base": base, "target_modules": targets, "r": r, "lora_alpha": alpha, "loss_right": o.loss.item(),
                     "adapter_keys": keys}


def prefix_adapters(arch, out, x, man):
    from peft import PrefixTuningConfig, get_peft_model
    for name, (base, cls, p, seed) in PREFIX.items():
        model = load(os.path.join(arch, base), cls)
        with torch.no_grad():
            base_logits = forward(model, x, "right").logits.clone()
        pm = get_peft_model(model, PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=p))
        peft_randomize_(pm, seed, 0.5, lambda n: "prompt_encoder" in n)
        pm.eval()
        save_adapter(pm, os.path.join(out, name), base)
        o_r = forward(pm, x, "right")
        with torch.no_grad():
            gen = pm.generate(input_ids=x["generate_prompt_ids"], attention_mask=torch.ones_like(x["generate_prompt_ids"]),
                              max_new_tokens=GEN_NEW, do_sample=False)
        pc = pm.peft_config["default"]
        save_ref(out, name, {"logits_right": o_r.logits, "loss_right": o_r.loss.reshape(()), "generate_greedy_ids": gen})
        man[name] = {"base": base, "num_virtual_tokens": p, "token_dim": pc.token_dim, "num_attention_heads": pc.num_attention_heads,
                     "num_layers": pc.num_layers, "loss_right": o_r.loss.item(), "generate_ids": gen[0].tolist(),
                     "prefix_vs_base_logits_maxabs": float((o_r.logits - base_logits).abs().max())}


def prompt_adapters(arch, out, x, man):
    from peft import PromptTuningConfig, get_peft_model
    for name, (base, cls, k, seed) in PROMPT.items():
        pm = get_peft_model(load(os.path.join(arch, base), cls),
                            PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=k, prompt_tuning_init="RANDOM"))
        peft_randomize_(pm, seed, 0.5, lambda n: "prompt_encoder" in n)
        pm.eval()
        save_adapter(pm, os.path.join(out, name), base)
        o = forward(pm, x, "right")
        with torch.no_grad():
            gen = pm.generate(input_ids=x["generate_prompt_ids"], attention_mask=torch.ones_like(x["generate_prompt_ids"]),
                              max_new_tokens=GEN_NEW, do_sample=False)
            # what the soft prompt would give if the model scaled it by sqrt(hidden) like the token embeddings
            inner = pm.get_base_model()
            ids, mask = x["input_ids_right"], x["attention_mask_right"]
            soft = pm.prompt_encoder["default"].embedding.weight[None].expand(ids.shape[0], -1, -1)
            scaled = inner(inputs_embeds=torch.cat([soft * inner.config.hidden_size ** 0.5, inner.get_input_embeddings()(ids)], 1),
                           attention_mask=torch.cat([torch.ones(ids.shape[0], k, dtype=mask.dtype), mask], 1), use_cache=False)
        save_ref(out, name, {"logits_right": o.logits, "loss_right": o.loss.reshape(()), "generate_greedy_ids": gen})
        man[name] = {"base": base, "num_virtual_tokens": k, "loss_right": o.loss.item(), "generate_ids": gen[0].tolist(),
                     "logits_maxabs_if_the_soft_prompt_were_scaled": float((scaled.logits - o.logits)[:, k:].abs().max())}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    x = load_file(os.path.join(a.arch, "reference", "inputs.safetensors"))
    man = {"versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                        "peft": __import__("peft").__version__}}
    sliding_models(a.out, x, man)
    lora_adapters(a.arch, a.out, x, man)
    prefix_adapters(a.arch, a.out, x, man)
    prompt_adapters(a.arch, a.out, x, man)
    with open(os.path.join(a.out, "extra_manifest.json"), "w") as f:
        f.write(json.dumps(man, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
