using System.Text.Json;
using Microsoft.ML.Tokenizers;
using ML.Finetune.Tokenization;

namespace ML.Finetune.Estimators;

/// <summary>
/// The checks of a tokenizer against its model and the training data, in one place. Fit runs them (warnings go to the
/// ML.NET log and the estimator's warning callback; errors throw before any weight is loaded); the CLI and other hosts
/// can call them for their own paths.
/// <list type="bullet">
/// <item>A special id (bos/eos/pad) of the tokenizer, config.json or generation_config.json that is ≥ the model's
/// vocab_size is an error: it would index past the embedding matrix, or could never be generated.</item>
/// <item>A tokenizer bos/eos/pad id that disagrees with config.json or generation_config.json is a warning: training
/// appends the tokenizer's eos to every completion while the checkpoint was trained (and generation may stop) with the
/// config's, so one of the two is probably wrong.</item>
/// <item>More than <see cref="UnknownShareThreshold"/> of the training tokens mapping to the unknown token is a warning
/// naming the share and a word: the model can neither see nor learn those words.</item>
/// </list>
/// </summary>
public static class TokenizerChecks
{
    /// <summary>Share of training tokens that may map to the unknown token before Fit warns.</summary>
    public const double UnknownShareThreshold = 0.05;

    static readonly string[] ConfigFiles = { "config.json", "generation_config.json" };
    static readonly (string Role, string Field)[] Roles = { ("bos", "bos_token_id"), ("eos", "eos_token_id"), ("pad", "pad_token_id") };

    /// <summary>
    /// Throws <see cref="InvalidDataException"/> when a special id is ≥ <paramref name="vocabSize"/>; returns warnings for
    /// tokenizer ids that disagree with the model folder's config.json / generation_config.json.
    /// </summary>
    public static IReadOnlyList<string> CheckSpecialTokens(CausalLMTokenizer tokenizer, string modelFolder, int vocabSize)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(modelFolder);
        var warnings = new List<string>();
        string tokenizerFile = tokenizer.Source ?? Path.Combine(modelFolder, "tokenizer files");
        foreach (var (role, field) in Roles)
        {
            int? id = TokenizerId(tokenizer, role);
            foreach (var file in ConfigFiles)
            {
                string path = Path.Combine(modelFolder, file);
                var declared = ReadIds(path, field);
                if (declared is null) continue;
                foreach (var d in declared.Where(d => d >= vocabSize))
                    throw new InvalidDataException($"'{path}': {field} = {d} is not a token id of this model (vocab_size {vocabSize} in " +
                        $"'{Path.Combine(modelFolder, "config.json")}'); ids must be below vocab_size.");
                declared.RemoveAll(d => d < 0); // some configs write -1 for "none"
                if (id is { } tid && declared.Count > 0 && !declared.Contains(tid))
                    warnings.Add($"The tokenizer's {role} token{Named(tokenizer, role)} has id {tid}, but '{path}' declares {field} = " +
                        $"{string.Join(", ", declared)}. " + Consequence(role));
            }
            if (id >= vocabSize)
                throw new InvalidDataException($"The tokenizer's {role} token{Named(tokenizer, role)} has id {id}, but the model's vocab_size " +
                    $"(config.json in '{modelFolder}') is {vocabSize}: token ids must be below vocab_size. The tokenizer files ({tokenizerFile}) " +
                    "do not belong to this model, or config.json's vocab_size is wrong.");
        }
        return warnings;
    }

    static string Consequence(string role) => role switch
    {
        "eos" => "Training ends every completion with the tokenizer's eos and generation stops at either; if the checkpoint was " +
                 "trained with the config's, fix whichever file is wrong.",
        "bos" => "Prompts get the tokenizer's bos; if the checkpoint was trained with the config's, fix whichever file is wrong.",
        _ => "Padding is masked out, so this is harmless for training, but one of the files is probably wrong.",
    };

    static int? TokenizerId(CausalLMTokenizer t, string role) => role switch { "bos" => t.BosId, "eos" => t.EosId, _ => t.PadId };

    static string Named(CausalLMTokenizer t, string role) =>
        (role switch { "bos" => t.BosToken, "eos" => t.EosToken, _ => t.PadToken }) is { } name ? $" '{name}'" : "";

    /// <summary>The integer(s) of a field (an id or a list of ids), or null when the file or the field is absent or not integers.</summary>
    static List<long>? ReadIds(string path, string field)
    {
        if (!File.Exists(path)) return null;
        using var doc = JsonFiles.Load(path);
        if (JsonFiles.Get(doc.RootElement, field) is not { } v) return null;
        var items = v.ValueKind == JsonValueKind.Array ? v.EnumerateArray().ToList() : new List<JsonElement> { v };
        var ids = new List<long>();
        foreach (var e in items)
        {
            if (e.ValueKind != JsonValueKind.Number || !e.TryGetInt64(out long id)) return null; // CausalLMConfig reports malformed fields
            ids.Add(id);
        }
        return ids.Count == 0 ? null : ids;
    }

    /// <summary>The tokenizer's unknown token (id and text), or null when it has none (byte-level BPE, tiktoken).</summary>
    public static (int Id, string Token)? UnknownToken(CausalLMTokenizer tokenizer) => tokenizer.Tokenizer switch
    {
        HfTokenizer { UnknownId: int id } h => (id, h.IdToToken(id) ?? "<unk>"),
        SentencePieceTokenizer sp => (sp.UnknownId, sp.UnknownToken),
        BpeTokenizer { UnknownToken: { } unk } => tokenizer.TokenToId(unk) is { } id ? (id, unk) : null,
        _ => null,
    };

    /// <summary>
    /// A warning when more than <see cref="UnknownShareThreshold"/> of the tokens of <paramref name="texts"/> (each with a
    /// description of where it comes from, e.g. "row 3, column Prompt") map to the unknown token; null otherwise.
    /// Special tokens the encoder adds (bos) are not counted.
    /// </summary>
    public static string? UnknownTokenWarning(CausalLMTokenizer tokenizer, IEnumerable<(string Text, string Where)> texts)
    {
        ArgumentNullException.ThrowIfNull(texts);
        if (UnknownToken(tokenizer) is not var (unkId, unkToken)) return null;
        long total = 0, unknown = 0;
        string? example = null;
        foreach (var (text, where) in texts)
        {
            if (string.IsNullOrEmpty(text)) continue;
            var tokens = tokenizer.Tokenizer.EncodeToTokens(text, out string? normalized);
            foreach (var t in tokens)
            {
                total++;
                if (t.Id != unkId) continue;
                unknown++;
                if (example is null)
                {
                    string source = normalized ?? text;
                    var (start, length) = t.Offset.GetOffsetAndLength(source.Length);
                    example = $"'{source.Substring(start, length)}' ({where})";
                }
            }
        }
        if (total == 0 || (double)unknown / total <= UnknownShareThreshold) return null;
        return $"{100.0 * unknown / total:F1}% of the training tokens ({unknown:N0} of {total:N0}) map to the tokenizer's unknown token " +
               $"'{unkToken}', for example {example}: the model can neither read nor learn those words. Use a tokenizer whose " +
               "vocabulary covers the data (a byte-level BPE tokenizer has no unknown token).";
    }
}
