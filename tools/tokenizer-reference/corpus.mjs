// The tokenizer parity corpus: hand-picked strings for every case issue #13 lists, then combinations of them.
// Deterministic: the same list every run. `specials` are the family's special-token strings, embedded in text.

const base = [
  // empty and whitespace
  "", " ", "  ", "\t", "\n", "\r\n", "\n\n\n", " \t \n ", "   leading", "trailing   ", "  both  ",
  "a  b   c    d", "tab\tseparated\tvalues", "line one\nline two\r\nline three\rline four",
  "ends with newline\n", "\n starts with newline", "spaces before newline   \nnext", "\u00a0no-break\u00a0space",
  "ideographic\u3000space", "em\u2003space and thin\u2009space", "line\u2028separator\u2029paragraph", "next\u0085line",
  "vertical\u000btab and form\u000cfeed", "null\u0000char", "bell\u0007 and escape\u001b[0m",
  // English and contractions
  "Hello world", "Hello world, where is Pennsylvania State University?", "The quick brown fox jumps over the lazy dog.",
  "It's a test: don't, can't, we'll, they've, I'm, he'd, she's.", "IT'S LOUD: DON'T WE'LL THEY'VE I'M HE'D",
  "It’s curly: don’t", "rock 'n' roll", "'s 't 're 've 'm 'll 'd", "O'Neil's dog's bone", "can't'nt''s",
  "Mixed CASE Words AND acronyms like NASA, HTTP, and JSON.", "hyphen-ated and under_scored and camelCase and PascalCase",
  "Itſ long s and the Kelvin sign K", "'ſ 'K 'Ｓ",
  // numbers
  "0", "7", "42", "123", "1234", "12345", "123456", "1234567", "12345678901234567890", "3.14159", "-273.15",
  "1,000,000", "1e-10", "0x1F 0b1010 0o777", "2024-01-15T10:30:00Z", "$19.99 and €5,00 and ¥1000", "50% off!!!",
  "version 1.2.3-beta+build.456", "phone: +1 (555) 123-4567", "٠١٢٣٤٥٦٧٨٩ Arabic-Indic digits", "१२३ Devanagari digits",
  "½ ¾ ² ³ Ⅻ ⅷ", "①②③ circled", "１２３ fullwidth", "3rd 21st 100th",
  // code
  "def f(x):\n    return x * 2\n", "for (int i = 0; i < n; i++) {\n\tsum += a[i];\n}",
  "if (a && b || !c) { x = y >> 2; }", "<div class=\"main\">Hello</div>", "SELECT * FROM users WHERE id = 42;",
  "#include <stdio.h>\nint main(void) { printf(\"hi\\n\"); return 0; }", "    indented four\n        indented eight\n",
  "\t\tdouble tab indent", "x=1;y=2;z=x+y", "λx.x+1", "a->b => c :: d", "fn main() { println!(\"{}\", 1); }",
  "{\"key\": [1, 2, {\"nested\": null}], \"ok\": true}", "// comment\n/* block */", "regex: ^[a-z]+\\d{2,3}$",
  // URLs, emails, paths
  "https://www.example.com/path/to/page?query=1&lang=en#section", "http://localhost:8080/api/v1/items",
  "mailto:someone@example.org", "a.b@c.com", "C:\\Users\\name\\file.txt", "/usr/local/bin/dotnet", "ftp://files.example.net/pub",
  // scripts
  "Привет, мир! Как дела?", "Съешь же ещё этих мягких французских булок", "Ελληνικά: γειά σου κόσμε",
  "中文测试：你好，世界！", "日本語のテキスト、ひらがなとカタカナ。", "한국어 텍스트입니다", "ภาษาไทยไม่มีช่องว่าง",
  "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया", "হ্যালো বিশ্ব", "ಕನ್ನಡ ತಮಿಳ் தமிழ்", "ქართული", "Հայերեն", "አማርኛ",
  "Tiếng Việt có dấu: Xin chào các bạn, tôi là người Việt Nam.", "Những người đó đã đến đây",
  "Türkçe: İstanbul'da ığdır şehir", "Polski: zażółć gęślą jaźń", "Čeština: příliš žluťoučký kůň",
  "فارسی: سلام دنیا، من فارسی صحبت می‌کنم", "Русский: здравствуйте, до свидания", "Українська: їжак ґанок",
  "Español: ¿Dónde está la biblioteca? ¡Olé!", "Français : « guillemets » et l’apostrophe", "Deutsch: Straße, Größe, Übung",
  "Ελληνικά ΚΕΦΑΛΑΙΑ", "ΣΊΣΥΦΟΣ σίσυφος", "Mixed 中文 and English and русский",
  // combining marks and normalization
  "e\u0301 vs \u00e9", "Cafe\u0301 cafe\u0301", "n\u0303 a\u0308 o\u0308 u\u0308", "\u1e9b\u0323 long s dot",
  "Vie\u0323\u0302t Nam decomposed", "\u0915\u094d\u0937 conjunct", "A\u030a\u212b angstrom", "\ufb01 ligature \ufb00",
  "\u1100\u1161\u11a8 jamo", "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334 zalgo",
  "\u00c5 \u212b \u0041\u030a", "q\u0307\u0323", "\u0300 leading combining",
  // emoji
  "😀", "Hello 😀 world", "🚀👍🏽", "👨‍👩‍👧‍👦 family", "🏳️‍🌈 flag", "🇺🇸🇫🇷🇯🇵 flags", "🏴󠁧󠁢󠁳󠁣󠁴󠁿 Scotland",
  "❤️ heart with VS16", "✌🏿 skin tone", "🧑‍💻 technologist", "1️⃣ keycap", "😀😃😄😁😆😅😂🤣",
  // supplementary-plane letters and digits
  "𝐀𝐁𝐂 bold", "𝐇𝐞𝐥𝐥𝐨 𝐰𝐨𝐫𝐥𝐝", "𝟎𝟏𝟐𝟑 bold digits", "𝟘𝟙𝟚 double-struck", "a 𝐛 c", " 𝐱", "𝐈'𝐬 𝐈'𝐥𝐥",
  "𝐝𝐨𝐧'𝐭 𝐰𝐞'𝐫𝐞", "𝐈'll be there", "𝐈's 𝐈'm 𝐈'd 𝐈've", "x𝐀's", "1𝟐3", "Hello𝐖orld's", "x 𝟏𝟐𝟑𝟒𝟓", "𠀀𠀁𠀂 CJK extension B", "𪚥 rare ideograph", "a𠀀b 𠀀 c", "𐍈 Gothic hwair",
  "𐐷𐐸 Deseret", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 Fraktur", "𝒜𝒷𝒸 script", " 𝐀 𝐁", "𝐀\t𝐁\n𝐂", "𝟏,𝟐𝟑𝟒", "𞤀𞤁 Adlam", "𑀅 Brahmi",
  // byte fallback candidates (rare characters)
  "☃ snowman", "⛄ ⛅ ⛈", "\ue000 private use", "\u{f0000} plane 15 private", "\ufffd replacement", "ꙮ multiocular O",
  "𓀀 hieroglyph", "🜁 alchemical", "\u2060word joiner\u200bzero width", "soft\u00adhyphen", "\u200d zwj alone", "\ufeffBOM",
  // long words and repetition
  "Pneumonoultramicroscopicsilicovolcanoconiosis", "supercalifragilisticexpialidocious".repeat(3),
  "a".repeat(100), "ab".repeat(60), " ".repeat(40), "\n".repeat(20), "!".repeat(30), "-".repeat(80), "=".repeat(50),
  "1".repeat(50), "ha".repeat(25), "😀".repeat(20), "한".repeat(30), "𝐀".repeat(25),
  "Donaudampfschifffahrtsgesellschaftskapitänsmütze", "Rindfleischetikettierungsüberwachungsaufgabenübertragungsgesetz",
  // punctuation
  "...", "?!", "!!!???", "“quoted” ‘single’", "(parentheses) [brackets] {braces}", "a/b\\c|d", "~`@#$%^&*_+",
  "— em dash – en dash", "…ellipsis", "«»‹›", "§¶†‡•", "•\tbullet", "Hello!!! How are you???",
];

export function corpus(specials) {
  const out = [...base];
  const s = specials;
  // Special-token strings inside text, at the edges, repeated and with whitespace around them.
  for (const t of s) {
    out.push(t, `${t}Hello`, `Hello${t}`, `Hello ${t} world`, `${t}${t}`, ` ${t} `, `a\n${t}\nb`, `x${t}y${t}z`);
    out.push(t.slice(0, -1), t + t.slice(1)); // partial strings
  }
  if (s.length >= 2) out.push(`${s[0]}system\nYou are helpful.${s[1]}\n${s[0]}user\nHi!${s[1]}`);
  // Combinations: each script after each of a few prefixes.
  const prefixes = ["", " ", "\n", "  ", "1", "x", "'s", "𝐀"];
  const pieces = ["Hello", "Привет", "中文", "नमस्ते", "𝐀𝐁", "😀", "123", "it's", "\t", "Tiếng", "مرحبا", "e\u0301"];
  for (let i = 0; i < pieces.length; i++)
    for (let j = 0; j < prefixes.length; j++)
      if ((i + j) % 2 === 0) out.push(prefixes[j] + pieces[i] + prefixes[(j + 3) % prefixes.length]);
  return out;
}
