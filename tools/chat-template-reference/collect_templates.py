"""Collects the chat templates the C# Jinja interpreter is checked against, with where each one comes from.

Writes, under test/ML.Finetune.Tests/Chat/Fixtures/:
  templates/<id>/tokenizer_config.json   the templates to render exactly (Llama 3.x, Qwen2.5, Qwen3, Mistral v0.3,
                                         Phi-3/3.5/4-mini, Gemma 2/3, SmolLM2, DeepSeek-R1-Distill-Qwen), with the
                                         special tokens their tokenizer_config.json declares
  templates/SOURCES.md                   provenance of each
  sweep/templates.json                   every other real template found in the sources (deduplicated), for the
                                         broad interpreter sweep (render_references.py adds the expected output)

Sources (git directories of public repositories, read with `git show`; nothing is downloaded):
  --llama-cpp   ggml-org/llama.cpp (MIT): models/templates/*.jinja, fetched from the Hugging Face hub by its
                scripts/get_chat_template.py
  --openvino    openvinotoolkit/openvino.genai (Apache-2.0): tests/python_tests/data/tokenizer_configs.py, the
                chat_template and special tokens of ~170 hub models' tokenizer_config.json
  --ollama      ollama/ollama (MIT): template/index.json, hub templates it recognises
                (llama.cpp's tests/test-chat-template.cpp adds ~35 more templates as C++ string literals)
  --hfjs        huggingface/huggingface.js (MIT): packages/jinja/test/e2e.test.js, hub templates its Jinja port is
                tested on (JavaScript string literals, decoded here)
  --trl         huggingface/trl (Apache-2.0): trl/chat_templates/*_training.jinja, model templates with
                `{% generation %}` blocks added for assistant-only loss (written to generation-templates/)

Usage: python3 collect_templates.py --llama-cpp DIR --openvino DIR --ollama DIR --hfjs DIR --trl DIR --out test/ML.Finetune.Tests/Chat/Fixtures
"""
import argparse, json, os, subprocess

SMOLLM2 = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\n"
           "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + "
           "message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
           "{{ '<|im_start|>assistant\\n' }}{% endif %}")

# id -> (source kind, locator, special tokens when the source has none, hub model)
REQUIRED = {
    'llama-3.1-instruct': ('openvino', 'meta-llama/Llama-3.1-8B-Instruct', None),
    'llama-3.2-instruct': ('openvino', 'meta-llama/Llama-3.2-3B-Instruct', None),
    'qwen2.5-instruct': ('openvino', 'Qwen/Qwen2.5-3B-Instruct', None),
    'qwen3': ('openvino', 'Qwen/Qwen3-1.7B', None),
    'mistral-7b-instruct-v0.3': ('openvino', 'mistralai/Mistral-7B-Instruct-v0.3', None),
    'phi-3-mini-4k-instruct': ('openvino', 'microsoft/Phi-3-mini-4k-instruct', None),
    'phi-3.5-mini-instruct': ('openvino', 'microsoft/Phi-3.5-mini-instruct', None),
    'phi-4-mini-instruct': ('openvino', 'microsoft/Phi-4-mini-instruct', None),
    'gemma-2-it': ('llama.cpp', 'models/templates/google-gemma-2-2b-it.jinja',
                   {'bos_token': '<bos>', 'eos_token': '<eos>', 'pad_token': '<pad>', 'unk_token': '<unk>', 'hub': 'google/gemma-2-2b-it'}),
    'gemma-3-it': ('openvino', 'google/gemma-3-1b-it', None),
    # llama.cpp later edited this file for its own parser tests; c7f460ab8 holds the hub template.
    'deepseek-r1-distill-qwen': ('llama.cpp@c7f460ab8', 'models/templates/deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja',
                                 {'bos_token': '<｜begin▁of▁sentence｜>', 'eos_token': '<｜end▁of▁sentence｜>',
                                  'pad_token': '<｜end▁of▁sentence｜>', 'hub': 'deepseek-ai/DeepSeek-R1-Distill-Qwen-32B'}),
    'smollm2-instruct': ('inline', SMOLLM2,
                         {'bos_token': '<|im_start|>', 'eos_token': '<|im_end|>', 'pad_token': '<|im_end|>', 'unk_token': '<|endoftext|>',
                          'hub': 'HuggingFaceTB/SmolLM2-1.7B-Instruct'}),
}

GENERATION_TEMPLATES = ['llama3_training', 'qwen2_5_training', 'qwen3_training', 'gemma_training', 'phi3_training']

TOKEN_KEYS = ('bos_token', 'eos_token', 'unk_token', 'pad_token')
GENERIC_TOKENS = {'bos_token': '<s>', 'eos_token': '</s>', 'unk_token': '<unk>'}


def git_show(repo, rev, path):
    return subprocess.run(['git', '-C', repo, 'show', f'{rev}:{path}'], check=True, capture_output=True).stdout.decode('utf-8')


def git_head(repo):
    return subprocess.run(['git', '-C', repo, 'rev-parse', 'HEAD'], check=True, capture_output=True, text=True).stdout.strip()


def git_ls(repo, path):
    out = subprocess.run(['git', '-C', repo, 'ls-tree', '--name-only', 'HEAD', path + '/'], check=True, capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line]


C_ESCAPES = {'n': '\n', 't': '\t', 'r': '\r', '\\': '\\', '"': '"', "'": "'", '`': '`', '0': '\0', 'b': '\b', 'f': '\f', 'v': '\v'}


def read_literal(text, i):
    """Reads a C++/JavaScript string literal starting at text[i] (the quote); returns (value, index after it)."""
    quote = text[i]
    out = []
    i += 1
    while text[i] != quote:
        c = text[i]
        if c == '\\':
            e = text[i + 1]
            if e == 'u' and text[i + 2] == '{':
                end = text.index('}', i)
                out.append(chr(int(text[i + 3:end], 16)))
                i = end + 1
                continue
            if e in 'ux':
                n = 4 if e == 'u' else 2
                out.append(chr(int(text[i + 2:i + 2 + n], 16)))
                i += 2 + n
                continue
            if e == '\n':  # line continuation
                i += 2
                continue
            out.append(C_ESCAPES[e])
            i += 2
            continue
        if quote == '`' and text.startswith('${', i):
            raise ValueError('template literal with interpolation')
        out.append(c)
        i += 1
    return ''.join(out), i + 1


def cpp_templates(source):
    """The template_str literals of llama.cpp's test-chat-template.cpp (skipping commented-out lines)."""
    marker = '/* .template_str= */'
    for line in source.splitlines():
        at = line.find(marker)
        if at < 0 or line.lstrip().startswith('//'):
            continue
        rest = line[at + len(marker):].lstrip()
        for prefix in ('U8C(', 'u8'):
            if rest.startswith(prefix):
                rest = rest[len(prefix):]
        if rest.startswith('"'):
            yield read_literal(rest, 0)[0]


def js_templates(source):
    """The `chat_template:` string literals of huggingface.js's e2e tests."""
    at = 0
    while (at := source.find('chat_template:', at)) >= 0:
        i = at + len('chat_template:')
        while source[i] in ' \t\r\n':
            i += 1
        at = i
        if source[i] not in '"\'`':
            continue
        try:
            value, _ = read_literal(source, i)
        except ValueError:
            continue
        yield value


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--llama-cpp', required=True)
    ap.add_argument('--openvino', required=True)
    ap.add_argument('--ollama', required=True)
    ap.add_argument('--hfjs', required=True)
    ap.add_argument('--trl', required=True)
    ap.add_argument('--out', required=True)
    args = ap.parse_args()

    ov_path = 'tests/python_tests/data/tokenizer_configs.py'
    ns = {}
    exec(git_show(args.openvino, 'HEAD', ov_path), ns)
    openvino = ns['get_tokenizer_configs']()
    heads = {'llama.cpp': git_head(args.llama_cpp), 'openvino': git_head(args.openvino), 'ollama': git_head(args.ollama),
             'trl': git_head(args.trl), 'hfjs': git_head(args.hfjs)}

    os.makedirs(os.path.join(args.out, 'templates'), exist_ok=True)
    sources = ['# Reference chat templates', '',
               'Collected by `tools/chat-template-reference/collect_templates.py`. Each folder holds a minimal',
               '`tokenizer_config.json`: the model\'s `chat_template` and its special tokens, as the model\'s own',
               'tokenizer_config.json on the Hugging Face hub declares them.', '',
               '| id | hub model | taken from |', '|---|---|---|']
    required_texts = set()
    for tid, (kind, locator, extra) in REQUIRED.items():
        if kind == 'openvino':
            cfg = openvino[locator]
            template = cfg['chat_template']
            tokens = {k: cfg.get(k) for k in TOKEN_KEYS}
            hub = locator
            origin = f'openvinotoolkit/openvino.genai@{heads["openvino"][:12]} `{ov_path}` (Apache-2.0)'
        elif kind.startswith('llama.cpp'):
            rev = kind.split('@')[1] if '@' in kind else heads['llama.cpp']
            template = git_show(args.llama_cpp, rev, locator)
            tokens = {k: extra.get(k) for k in TOKEN_KEYS}
            hub = extra['hub']
            origin = f'ggml-org/llama.cpp@{rev[:12]} `{locator}` (MIT)'
        else:
            template = locator
            tokens = {k: extra.get(k) for k in TOKEN_KEYS}
            hub = extra['hub']
            origin = 'hub tokenizer_config.json, quoted identically in several public repositories'
        config = {'tokenizer_class': 'PreTrainedTokenizerFast'}
        config.update({k: v for k, v in tokens.items() if v is not None})
        config['chat_template'] = template
        folder = os.path.join(args.out, 'templates', tid)
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, 'tokenizer_config.json'), 'w', encoding='utf-8') as f:
            json.dump(config, f, ensure_ascii=False, indent=2)
            f.write('\n')
        sources.append(f'| `{tid}` | {hub} | {origin} |')
        required_texts.add(template.rstrip('\n'))
    sources += ['', 'Template texts belong to their model authors; they are reproduced here as the listed repositories',
                'reproduce them, to test that this project renders them exactly as transformers does.']
    with open(os.path.join(args.out, 'templates', 'SOURCES.md'), 'w', encoding='utf-8') as f:
        f.write('\n'.join(sources) + '\n')

    # TRL's training variants with {% generation %} blocks.
    gen_dir = os.path.join(args.out, 'generation-templates')
    os.makedirs(gen_dir, exist_ok=True)
    for name in GENERATION_TEMPLATES:
        with open(os.path.join(gen_dir, name + '.jinja'), 'w', encoding='utf-8') as f:
            f.write(git_show(args.trl, heads['trl'], f'trl/chat_templates/{name}.jinja'))
    with open(os.path.join(gen_dir, 'SOURCES.md'), 'w', encoding='utf-8') as f:
        f.write(f'Copied from huggingface/trl@{heads["trl"][:12]} `trl/chat_templates/` (Apache-2.0): model chat templates\n'
                'with `{% generation %}` blocks around assistant output, which transformers uses for\n'
                '`return_assistant_tokens_mask=True`.\n')

    # The sweep: every other template, deduplicated by text.
    seen = set(required_texts)
    sweep = []

    def add(tid, template, tokens, origin):
        key = template.rstrip('\n')
        if key in seen:
            return
        seen.add(key)
        entry = {'id': tid, 'source': origin, 'chat_template': template}
        entry.update({k: v for k, v in tokens.items() if v is not None})
        sweep.append(entry)

    for path in git_ls(args.llama_cpp, 'models/templates'):
        if path.endswith('.jinja'):
            add('llama.cpp/' + os.path.basename(path), git_show(args.llama_cpp, heads['llama.cpp'], path), GENERIC_TOKENS,
                f'ggml-org/llama.cpp@{heads["llama.cpp"][:12]} {path} (MIT)')
    for model, cfg in openvino.items():
        if isinstance(cfg.get('chat_template'), str):
            add('openvino/' + model, cfg['chat_template'], {k: cfg.get(k) for k in TOKEN_KEYS},
                f'openvinotoolkit/openvino.genai@{heads["openvino"][:12]} {ov_path} (Apache-2.0)')
    index = json.loads(git_show(args.ollama, heads['ollama'], 'template/index.json'))
    for i, entry in enumerate(index):
        add(f'ollama/{i:02d}-{entry["name"]}', entry['template'], GENERIC_TOKENS,
            f'ollama/ollama@{heads["ollama"][:12]} template/index.json (MIT)')

    cpp_path = 'tests/test-chat-template.cpp'
    for i, template in enumerate(cpp_templates(git_show(args.llama_cpp, heads['llama.cpp'], cpp_path))):
        add(f'llama.cpp-test/{i:02d}', template, GENERIC_TOKENS, f'ggml-org/llama.cpp@{heads["llama.cpp"][:12]} {cpp_path} (MIT)')
    js_path = 'packages/jinja/test/e2e.test.js'
    for i, template in enumerate(js_templates(git_show(args.hfjs, heads['hfjs'], js_path))):
        add(f'huggingface.js/{i:02d}', template, GENERIC_TOKENS, f'huggingface/huggingface.js@{heads["hfjs"][:12]} {js_path} (MIT)')

    os.makedirs(os.path.join(args.out, 'sweep'), exist_ok=True)
    with open(os.path.join(args.out, 'sweep', 'templates.json'), 'w', encoding='utf-8') as f:
        f.write('{"templates": [\n')
        f.write(',\n'.join(json.dumps(entry, ensure_ascii=False, separators=(',', ':')) for entry in sweep))
        f.write('\n]}\n')
    print(f'{len(REQUIRED)} reference templates, {len(sweep)} sweep templates')


if __name__ == '__main__':
    main()
