"""References for assistant-only masks and chat tokenization, from transformers.

1. Trains a tiny byte-level BPE tokenizer (tokenizers library) on the reference conversations, with every chat
   control token of the reference templates as a special token, and writes it to <fixtures>/tiny-chat-tokenizer/.
2. For each reference template (templates/<id>/) and each conversation that renders: the ids transformers'
   apply_chat_template(tokenize=True) produces with that tokenizer (the C# tokenization must give the same ids).
3. For TRL's `{% generation %}` training templates (generation-templates/*.jinja): the character spans transformers
   records for the generation blocks and the token-level `assistant_masks` of
   apply_chat_template(return_assistant_tokens_mask=True).

Writes <fixtures>/masks/references.json. Run after render_references.py (it reads references/ for the corpus).
Usage (inside the sid chroot): sid-python render_mask_references.py --fixtures <dir> --conversations conversations.json
"""
import argparse, json, os

import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer
from transformers.utils import chat_template_utils
from transformers.utils.chat_template_utils import render_jinja_template

from render_references import _FixedClock

chat_template_utils.datetime = _FixedClock  # the same strftime_now clock as the other references

CONTROL_TOKENS = [
    '<|im_start|>', '<|im_end|>', '<|endoftext|>', '<|begin_of_text|>', '<|start_header_id|>', '<|end_header_id|>',
    '<|eot_id|>', '<start_of_turn>', '<end_of_turn>', '<bos>', '<eos>', '<pad>', '<unk>', '<|system|>', '<|user|>',
    '<|assistant|>', '<|end|>', '<s>', '</s>', '[INST]', '[/INST]', '<｜User｜>', '<｜Assistant｜>',
    '<｜begin▁of▁sentence｜>', '<｜end▁of▁sentence｜>',
]
# TRL training template -> the reference template whose special tokens it is rendered with
GENERATION_TEMPLATES = {
    'llama3_training': 'llama-3.1-instruct',
    'qwen2_5_training': 'qwen2.5-instruct',
    'qwen3_training': 'qwen3',
    'gemma_training': 'gemma-2-it',
    'phi3_training': 'phi-3-mini-4k-instruct',
}
TOKEN_KEYS = ('bos_token', 'eos_token', 'unk_token', 'pad_token')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--fixtures', required=True)
    ap.add_argument('--conversations', required=True)
    args = ap.parse_args()
    with open(args.conversations, encoding='utf-8') as f:
        conversations = json.load(f)['conversations']

    corpus = []
    refs = {}
    for name in sorted(os.listdir(os.path.join(args.fixtures, 'references'))):
        with open(os.path.join(args.fixtures, 'references', name), encoding='utf-8') as f:
            ref = json.load(f)
        refs[ref['template']] = ref
        corpus += [r['expected'] for r in ref['renders'] if 'expected' in r]

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=CONTROL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    out = os.path.join(args.fixtures, 'tiny-chat-tokenizer')
    os.makedirs(out, exist_ok=True)
    tok.save(os.path.join(out, 'tokenizer.json'))
    with open(os.path.join(out, 'tokenizer_config.json'), 'w', encoding='utf-8') as f:
        json.dump({'tokenizer_class': 'PreTrainedTokenizerFast', 'unk_token': '<unk>', 'add_bos_token': False}, f, indent=2)
    tokenizer = AutoTokenizer.from_pretrained(out)

    def tokens_of(template_id):
        with open(os.path.join(args.fixtures, 'templates', template_id, 'tokenizer_config.json'), encoding='utf-8') as f:
            cfg = json.load(f)
        return cfg['chat_template'], {k: cfg[k] for k in TOKEN_KEYS if k in cfg}

    tokenized = []
    for tid in sorted(refs):
        template, specials = tokens_of(tid)
        for conv in conversations:
            for agp in (False, True):
                try:
                    text = tokenizer.apply_chat_template(conv['messages'], tools=conv.get('tools'), chat_template=template,
                                                         add_generation_prompt=agp, tokenize=False, **specials)
                except Exception:
                    continue
                ids = tokenizer(text, add_special_tokens=False)['input_ids']
                tokenized.append({'template': tid, 'conversation': conv['id'], 'add_generation_prompt': agp, 'text': text, 'input_ids': ids})

    generation = []
    gen_dir = os.path.join(args.fixtures, 'generation-templates')
    for name, family in GENERATION_TEMPLATES.items():
        with open(os.path.join(gen_dir, name + '.jinja'), encoding='utf-8') as f:
            template = f.read()
        _, specials = tokens_of(family)
        for conv in conversations:
            try:
                rendered, indices = render_jinja_template(conversations=[conv['messages']], tools=conv.get('tools'),
                                                          chat_template=template, return_assistant_tokens_mask=True,
                                                          add_generation_prompt=False, **specials)
                enc = tokenizer.apply_chat_template(conv['messages'], tools=conv.get('tools'), chat_template=template,
                                                    tokenize=True, return_dict=True, return_assistant_tokens_mask=True, **specials)
            except Exception:
                continue
            generation.append({'template': name, 'special_tokens': specials, 'conversation': conv['id'], 'text': rendered[0],
                               'generation_spans': [list(s) for s in indices[0]], 'input_ids': enc['input_ids'],
                               'assistant_masks': enc['assistant_masks']})

    os.makedirs(os.path.join(args.fixtures, 'masks'), exist_ok=True)
    with open(os.path.join(args.fixtures, 'masks', 'references.json'), 'w', encoding='utf-8') as f:
        json.dump({'versions': {'transformers': transformers.__version__}, 'tokenized': tokenized, 'generation': generation},
                  f, ensure_ascii=False, separators=(',', ':'))
    print(f'{len(tokenized)} tokenized renders, {len(generation)} generation renders, vocab {tokenizer.vocab_size}')


if __name__ == '__main__':
    main()
