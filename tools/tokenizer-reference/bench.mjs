// HF's Rust tokenizers (Node binding) on the bench's mixed text: tokens/s, for bench/README.md.
//   dotnet <bench dll> --tokenizer --write-text /tmp/mixed.txt ...   then   node bench.mjs /tmp/mixed.txt <tokenizer.json>...
// `encode` one line at a time (one thread, like our 1-thread column) and `encodeBatch` (Rust threads over all lines).
import fs from "node:fs";
import tk from "tokenizers";

const [textFile, ...files] = process.argv.slice(2);
const lines = fs.readFileSync(textFile, "utf8").split("\n").filter((l, i, a) => i < a.length - 1 || l.length > 0);
for (const file of files) {
  const t = tk.Tokenizer.fromFile(file);
  for (const pass of ["1st", "2nd"]) {
    let tokens = 0;
    const start = process.hrtime.bigint();
    for (const l of lines) tokens += (await t.encode(l, null, { addSpecialTokens: false })).getLength();
    const s = Number(process.hrtime.bigint() - start) / 1e9;
    console.log(`${file}: encode ${pass} pass ${Math.round(tokens / s).toLocaleString("en-US")} tok/s (${tokens} tokens, ${s.toFixed(1)} s)`);
  }
  let tokens = 0;
  const start = process.hrtime.bigint();
  for (let i = 0; i < lines.length; i += 1000)
    for (const e of await t.encodeBatch(lines.slice(i, i + 1000), { addSpecialTokens: false })) tokens += e.getLength();
  const s = Number(process.hrtime.bigint() - start) / 1e9;
  console.log(`${file}: encodeBatch ${Math.round(tokens / s).toLocaleString("en-US")} tok/s (${tokens} tokens, ${s.toFixed(1)} s)`);
}
