// Random strings for the differential fuzz: seeded (mulberry32), so the same list every run.
// Characters come from weighted pools chosen to stress pre-tokenizers, normalizers, byte fallback and added tokens;
// only code points assigned since Unicode 6 or earlier, so Unicode-version differences between implementations stay out.

function mulberry32(seed) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const range = (a, b) => ({ a, b });
const chars = (s) => ({ list: [...s] });
const pools = [
  [20, chars("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")],
  [10, chars("0123456789")],
  [12, chars("      \t\n\n\r")],
  [6, chars(".,;:!?'\"()[]{}<>-_=+*/\\|@#$%^&~`")],
  [3, { list: ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "\r\n", "http://", "    "] }],
  [3, range(0xc0, 0x17f)],          // Latin-1 and Latin Extended-A
  [3, range(0x1ea0, 0x1ef9)],       // Vietnamese precomposed
  [2, range(0x300, 0x36f)],         // combining marks
  [3, range(0x410, 0x44f)],         // Cyrillic
  [2, range(0x391, 0x3c9)],         // Greek
  [3, range(0x4e00, 0x9fa5)],       // CJK
  [2, range(0x3041, 0x3096)],       // Hiragana
  [2, range(0xac00, 0xd7a3)],       // Hangul syllables
  [2, range(0x627, 0x64a)],         // Arabic
  [2, range(0x905, 0x939)],         // Devanagari
  [1, range(0xe01, 0xe3a)],         // Thai
  [2, range(0x1d400, 0x1d6a5)],     // mathematical alphanumeric letters (supplementary)
  [2, range(0x1d7ce, 0x1d7ff)],     // mathematical digits (supplementary)
  [2, range(0x20000, 0x2a6d6)],     // CJK extension B (supplementary)
  [2, range(0x1f600, 0x1f64f)],     // emoji
  [1, range(0x1f1e6, 0x1f1ff)],     // regional indicators
  [1, { list: ["\u200d", "\ufe0f", "\u{1f3fd}", "\u00a0", "\u3000", "\u2028", "\u0085", "\u200b", "\u00ad", "\ufeff"] }],
  [1, range(0x2600, 0x26ff)],       // symbols
  [1, range(0xe000, 0xe0ff)],       // private use
  [1, range(0x1, 0x1f)],            // control characters
  [1, range(0xff01, 0xff5e)],       // fullwidth forms
];
const total = pools.reduce((s, [w]) => s + w, 0);

function pick(rng) {
  let r = rng() * total;
  for (const [w, p] of pools) {
    if ((r -= w) < 0) {
      if (p.list) return p.list[Math.floor(rng() * p.list.length)];
      return String.fromCodePoint(p.a + Math.floor(rng() * (p.b - p.a + 1)));
    }
  }
  return "a";
}

export function fuzzStrings(count, specials, seed = 20261130) {
  const rng = mulberry32(seed);
  const out = [];
  for (let i = 0; i < count; i++) {
    const len = Math.floor(rng() * rng() * 60);
    let s = "";
    for (let k = 0; k < len; k++) {
      if (specials.length > 0 && rng() < 0.02) s += specials[Math.floor(rng() * specials.length)];
      else s += pick(rng);
    }
    out.push(s);
  }
  return out;
}
