"""Renders the reference outputs with transformers' own apply_chat_template (jinja2 underneath).

For each folder under <fixtures>/templates/ (a tokenizer_config.json with a chat_template and special tokens) it builds
a throwaway tokenizer.json holding just the special tokens, loads the folder with AutoTokenizer.from_pretrained, and
calls apply_chat_template(messages, tools=..., add_generation_prompt=..., tokenize=False, **kwargs) for every
conversation in conversations.json (and every variant's extra template kwargs). No model weights are involved.

Writes <fixtures>/references/<id>.json (full expected strings, or the error the template raised),
<fixtures>/sweep/expected.json (sha256 of each expected string for the broad sweep templates) and
<fixtures>/jinja-snippets.expected.json (small templates of jinja-snippets.json, rendered with transformers' compiled
jinja environment: the semantics the interpreter must reproduce, statement by statement).

strftime_now is pinned to 2025-03-14 09:26:53 so that templates which print today's date are reproducible; the C#
tests render with the same clock.

Usage (as root, inside the Debian sid chroot with transformers 5.x):
  sid-python render_references.py --fixtures <dir> --conversations conversations.json
"""
import argparse, hashlib, json, os, shutil, tempfile
from datetime import datetime

import jinja2
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer
from transformers.utils import chat_template_utils

FIXED_NOW = datetime(2025, 3, 14, 9, 26, 53)


class _FixedClock(datetime):
    @classmethod
    def now(cls, tz=None):
        return FIXED_NOW


chat_template_utils.datetime = _FixedClock



def write_lines(f, header, key, items):
    """Compact JSON with one item per line, so that diffs stay readable."""
    f.write(json.dumps(header, ensure_ascii=False)[:-1] + f', "{key}": [\n')
    f.write(',\n'.join(json.dumps(item, ensure_ascii=False, separators=(',', ':')) for item in items))
    f.write('\n]}\n')


def load_tokenizer(config):
    folder = tempfile.mkdtemp()
    try:
        specials = []
        for key, value in config.items():
            if key.endswith('_token') and isinstance(value, str) and value not in specials:
                specials.append(value)
        vocab = {'[UNK]': 0}
        for s in specials:
            vocab.setdefault(s, len(vocab))
        tok = Tokenizer(models.WordLevel(vocab, unk_token='[UNK]'))
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        tok.add_special_tokens(specials)
        tok.save(os.path.join(folder, 'tokenizer.json'))
        with open(os.path.join(folder, 'tokenizer_config.json'), 'w', encoding='utf-8') as f:
            json.dump(config, f, ensure_ascii=False)
        return AutoTokenizer.from_pretrained(folder)
    finally:
        shutil.rmtree(folder)


def error_info(e):
    return {'type': type(e).__name__, 'message': str(e), 'raised': type(e) is jinja2.exceptions.TemplateError,
            'syntax': isinstance(e, jinja2.exceptions.TemplateSyntaxError)}


def render(tokenizer, conversation, add_generation_prompt, kwargs):
    try:
        text = tokenizer.apply_chat_template(conversation['messages'], tools=conversation.get('tools'),
                                             add_generation_prompt=add_generation_prompt, tokenize=False, **kwargs)
        return {'expected': text}
    except Exception as e:  # the C# side must fail the same way
        return {'error': error_info(e)}


def cases(conversations, variants, only=None):
    by_id = {c['id']: c for c in conversations}
    for c in conversations:
        if only is None or c['id'] in only:
            yield c, None, {}
    if only is None:
        for v in variants:
            for cid in v['conversations']:
                yield by_id[cid], v['id'], v['kwargs']


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--fixtures', required=True)
    ap.add_argument('--conversations', required=True)
    args = ap.parse_args()
    with open(args.conversations, encoding='utf-8') as f:
        spec = json.load(f)
    conversations, variants = spec['conversations'], spec['variants']
    versions = {'transformers': transformers.__version__, 'jinja2': jinja2.__version__}

    out_dir = os.path.join(args.fixtures, 'references')
    os.makedirs(out_dir, exist_ok=True)
    templates_dir = os.path.join(args.fixtures, 'templates')
    for tid in sorted(os.listdir(templates_dir)):
        config_path = os.path.join(templates_dir, tid, 'tokenizer_config.json')
        if not os.path.isfile(config_path):
            continue
        with open(config_path, encoding='utf-8') as f:
            config = json.load(f)
        tokenizer = load_tokenizer(config)
        renders = []
        for conv, variant, kwargs in cases(conversations, variants):
            for agp in (False, True):
                r = {'conversation': conv['id'], 'variant': variant, 'kwargs': kwargs, 'add_generation_prompt': agp}
                r.update(render(tokenizer, conv, agp, kwargs))
                renders.append(r)
        ok = sum(1 for r in renders if 'expected' in r)
        with open(os.path.join(out_dir, f'{tid}.json'), 'w', encoding='utf-8') as f:
            json.dump({'template': tid, 'versions': versions, 'now': FIXED_NOW.isoformat(),
                       'special_tokens_map': tokenizer.special_tokens_map, 'renders': renders},
                      f, ensure_ascii=False, indent=1)
        print(f'{tid}: {ok}/{len(renders)} rendered')

    with open(os.path.join(args.fixtures, 'jinja-snippets.json'), encoding='utf-8') as f:
        snippets = json.load(f)['snippets']
    snippet_results = []
    for snippet in snippets:
        try:
            result = {'expected': chat_template_utils._compile_jinja_template(snippet['template']).render(**snippet['context'])}
        except Exception as e:
            result = {'error': error_info(e)}
        snippet_results.append(dict(id=snippet['id'], **result))
    with open(os.path.join(args.fixtures, 'jinja-snippets.expected.json'), 'w', encoding='utf-8') as f:
        write_lines(f, {'versions': versions, 'now': FIXED_NOW.isoformat()}, 'snippets', snippet_results)
    print(f'snippets: {len(snippet_results)}')

    sweep_path = os.path.join(args.fixtures, 'sweep', 'templates.json')
    with open(sweep_path, encoding='utf-8') as f:
        sweep = json.load(f)['templates']
    expected = []
    for entry in sweep:
        config = {k: v for k, v in entry.items() if k not in ('id', 'source')}
        config['tokenizer_class'] = 'PreTrainedTokenizerFast'
        try:
            tokenizer = load_tokenizer(config)
        except Exception as e:
            expected.append({'id': entry['id'], 'load_error': f'{type(e).__name__}: {e}'})
            continue
        renders = []
        for conv, _, kwargs in cases(conversations, variants, only={c['id'] for c in conversations}):
            for agp in (False, True):
                r = render(tokenizer, conv, agp, kwargs)
                item = {'conversation': conv['id'], 'add_generation_prompt': agp}
                if 'expected' in r:
                    # 64 bits of SHA-256 tell texts apart; the length helps when one differs.
                    item['sha256'] = hashlib.sha256(r['expected'].encode('utf-8')).hexdigest()[:16]
                    item['length'] = len(r['expected'])
                else:
                    item['error'] = r['error']
                renders.append(item)
        expected.append({'id': entry['id'], 'special_tokens_map': tokenizer.special_tokens_map, 'renders': renders})
    with open(os.path.join(args.fixtures, 'sweep', 'expected.json'), 'w', encoding='utf-8') as f:
        write_lines(f, {'versions': versions, 'now': FIXED_NOW.isoformat()}, 'templates', expected)
    print(f'sweep: {len(expected)} templates')


if __name__ == '__main__':
    main()
