using ML.Finetune.Generation;
using ML.Finetune.Models;
using ML.Finetune.Tokenization;
using ML.Finetune.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Samples.Experiment;

/// <summary>A token sequence and which positions count in the loss (position i means "predict token i").</summary>
public sealed record TokenSequence(int[] Ids, bool[] InLoss);

/// <summary>Encodes text for our word-level models and decodes greedy answers.</summary>
public sealed class LmText(CausalLMTokenizer tokenizer)
{
    public CausalLMTokenizer Tokenizer { get; } = tokenizer;
    int Bos => Tokenizer.BosId ?? throw new InvalidOperationException("tokenizer has no BOS token");
    int Eos => Tokenizer.EosId ?? throw new InvalidOperationException("tokenizer has no EOS token");
    public int Pad => Tokenizer.PadId ?? Eos;

    /// <summary>Token ids without BOS (callers add it where the sequence starts).</summary>
    public int[] Encode(string text) => Tokenizer.Tokenizer.EncodeToIds(text).ToArray();

    /// <summary>The library trainer's example: labels = ids where in the loss, −100 elsewhere (the objective shifts them).</summary>
    public static ML.Finetune.Training.EncodedExample ToExample(TokenSequence s) =>
        new(s.Ids.Select(i => (long)i).ToArray(), s.Ids.Select((id, i) => s.InLoss[i] ? id : ML.Finetune.Training.FinetuneObjective.IgnoreIndex).ToArray());

    /// <summary>BOS + sentence + EOS, every token after BOS in the loss (plain language modelling).</summary>
    public TokenSequence Sentence(string text)
    {
        var ids = new[] { Bos }.Concat(Encode(text)).Append(Eos).ToArray();
        return new TokenSequence(ids, ids.Select((_, i) => i > 0).ToArray());
    }

    /// <summary>BOS + prompt + completion + EOS, only completion and EOS in the loss.</summary>
    public TokenSequence PromptCompletion(string prompt, string completion)
    {
        var p = new[] { Bos }.Concat(Encode(prompt)).ToArray();
        var c = Encode(completion).Append(Eos).ToArray();
        return new TokenSequence(p.Concat(c).ToArray(), p.Select(_ => false).Concat(c.Select(_ => true)).ToArray());
    }

    /// <summary>
    /// Greedy continuation of one prompt until EOS or <paramref name="maxNewTokens"/>, never past the model's context;
    /// returns the decoded words. <paramref name="method"/> as in <see cref="GenerateBatch"/>.
    /// </summary>
    public string Generate(CausalLM model, IFinetuneMethod? method, string prompt, int maxNewTokens = 8)
    {
        int room = model.Config.MaxPositionEmbeddings - (1 + Encode(prompt).Length);
        return GenerateBatch(model, method, [prompt], Math.Clamp(room, 0, maxNewTokens))[0];
    }

    /// <summary>
    /// Greedy answers (BOS + prompt, stop at EOS, decoded words trimmed) with the library's KV-cached generator in
    /// left-padded batches. <paramref name="method"/> is needed for prompt/prefix tuning, whose soft prompt or KV prefix
    /// lives outside model.Forward; null for the base model, full finetuning and LoRA.
    /// </summary>
    public IReadOnlyList<string> GenerateBatch(CausalLM model, IFinetuneMethod? method, IReadOnlyList<string> prompts, int maxNewTokens = 8, int batchSize = 64)
    {
        var answers = new List<string>(prompts.Count);
        var options = new GenerationOptions { MaxNewTokens = maxNewTokens, EosTokenIds = [Eos], PadTokenId = Pad };
        for (int i = 0; i < prompts.Count; i += batchSize)
        {
            var ids = prompts.Skip(i).Take(batchSize).Select(p => new[] { (long)Bos }.Concat(Encode(p).Select(x => (long)x)).ToArray()).ToList();
            var r = method is null ? TextGenerator.Generate(model, ids, options) : TextGenerator.Generate(model, method, ids, options);
            foreach (var row in r.NewTokens) answers.Add(Tokenizer.Decode(row.Where(t => t != Eos).Select(t => (int)t)).Trim());
        }
        return answers;
    }

    /// <summary>Right-padded batch: ids [B,T] and next-token labels [B,T-1] (-100 = ignored).</summary>
    public (Tensor ids, Tensor labels) Batch(IReadOnlyList<TokenSequence> seqs)
    {
        int t = seqs.Max(s => s.Ids.Length);
        var ids = new long[seqs.Count * t];
        var labels = new long[seqs.Count * (t - 1)];
        for (int b = 0; b < seqs.Count; b++)
        {
            var s = seqs[b];
            for (int i = 0; i < t; i++) ids[b * t + i] = i < s.Ids.Length ? s.Ids[i] : Pad;
            for (int i = 1; i < t; i++) labels[b * (t - 1) + i - 1] = i < s.Ids.Length && s.InLoss[i] ? s.Ids[i] : -100;
        }
        return (torch.tensor(ids, dtype: ScalarType.Int64).reshape(seqs.Count, t), torch.tensor(labels, dtype: ScalarType.Int64).reshape(seqs.Count, t - 1));
    }
}
