using Microsoft.ML;
using ML.Finetune.Chat;
using ML.Finetune.Estimators;
using ML.Finetune.Generation;
using ML.Finetune.Training;
using ML.Finetune.Transformers;

namespace ML.Finetune.Tests.Chat;

/// <summary>
/// Conversations and plain text through the ML.NET estimators, end to end on a tiny chat model (tiny-llama weights, a
/// byte-level tokenizer, Qwen2.5's real template): LoRA learns four replies, GeneratedText of a Messages column is the
/// assistant reply and stops at &lt;|im_end|&gt; (also when only the template names it), the same through a
/// PredictionEngine (JSON text and vector-of-Text messages) and after Save/Load; Score covers the final assistant
/// message; packed training equals unpacked; plain text trains every token.
/// </summary>
public class ChatFinetuningTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("mlft-chatft").FullName;
    public void Dispose() { try { Directory.Delete(_dir, true); } catch (IOException) { } }

    public sealed class Conversation { public string Messages { get; set; } = ""; }
    public sealed class ConversationVector { public string[] Messages { get; set; } = []; }
    public sealed class Reply { public string GeneratedText { get; set; } = ""; public float Score { get; set; } public float ScorePerToken { get; set; } }
    public sealed class Document { public string Text { get; set; } = ""; }

    static IDataView Conversations(MLContext ml) =>
        ml.Data.LoadFromEnumerable(TinyChatModel.Exchanges.Select(x => new Conversation { Messages = TinyChatModel.Json(x.User, x.Assistant) }));

    /// <summary>
    /// Every projection and the LM head: the fixture's random head has tiny weights (std 0.02) behind a fixed-norm final
    /// RMSNorm, so adapting the body alone cannot make any token likely (LoRA on all-linear stalls at a loss of 1.25
    /// where full finetuning reaches 0); a LoRA adapter on lm_head lifts that ceiling.
    /// </summary>
    internal static readonly string[] Targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"];

    static LoraFinetuneOptions Lora(string model, int steps = 40, bool packing = false) => new()
    {
        BaseModelPath = model, Rank = 8, Alpha = 16, TargetModules = Targets, LearningRate = 1e-2, MaxSteps = steps,
        BatchSize = 4, Schedule = LearningRateScheduleKind.Constant, Seed = 1, NumberOfThreads = 1, MaxSequenceLength = 128, Packing = packing,
        Generation = new FinetuneGenerationOptions { MaxNewTokens = 12 },
    };

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Lora_OnConversations_AnswersInTheChatFormat_AndStopsAtEndOfTurn(bool instruct)
    {
        string model = TinyChatModel.Create(Path.Combine(_dir, "model"), instruct: instruct);
        var ml = new MLContext(1);
        using var fitted = ml.Transforms.LoraFinetune(Lora(model)).Fit(Conversations(ml));
        Assert.Equal(FinetuneDataFormat.Conversation, fitted.Settings.DataFormat);
        Assert.True(fitted.TrainingHistory.Records[^1].TrainLoss < 0.05, "losses " + string.Join(" ", fitted.TrainingHistory.Records.Select(r => r.TrainLoss.ToString("F3"))));

        // Transform: the reply to each user message, cut at <|im_end|> (the base-style model's configs only know <|endoftext|>).
        var questions = ml.Data.LoadFromEnumerable(TinyChatModel.Exchanges.Select(x => new Conversation { Messages = TinyChatModel.Json(x.User, null) }));
        var replies = ml.Data.CreateEnumerable<Reply>(fitted.Transform(questions), false).ToList();
        Assert.Equal(TinyChatModel.Exchanges.Select(x => x.Assistant), replies.Select(r => r.GeneratedText));
        Assert.All(replies, r => Assert.True(float.IsNaN(r.Score))); // nothing to score without a final assistant message
        var raw = fitted.GenerateReplies([ChatConversation.Parse(TinyChatModel.Json("Say hello.", null))]).Single();
        Assert.True(raw.StoppedAtEndOfTurn);
        Assert.Equal(TinyChatModel.ImEnd, raw.TokenIds[^1]);
        Assert.Equal(instruct ? new long[] { 1, 2 } : new long[] { 2, 1 }, TextGenerator.ChatStopTokenIds(fitted.Model.Config, fitted.Tokenizer, fitted.ChatTemplate!));

        // Rows ending with the assistant's message: it is the reference (generated from the messages before it) and the scored reply.
        var scored = ml.Data.CreateEnumerable<Reply>(fitted.Transform(Conversations(ml)), false).ToList();
        Assert.Equal(TinyChatModel.Exchanges.Select(x => x.Assistant), scored.Select(r => r.GeneratedText));
        var encoder = new ConversationEncoder(fitted.Tokenizer, fitted.ChatTemplate!, 128);
        for (int i = 0; i < scored.Count; i++)
        {
            var e = encoder.EncodeLastReply(ChatConversation.Parse(TinyChatModel.Json(TinyChatModel.Exchanges[i].User, TinyChatModel.Exchanges[i].Assistant)));
            int n = (int)FinetuneObjective.CountTargets([e]);
            Assert.Equal(scored[i].Score / n, scored[i].ScorePerToken, 5);
            Assert.InRange(scored[i].ScorePerToken, -0.2f, 0f); // learned: high likelihood
        }
        var metrics = ml.Finetune().Evaluate(fitted.Transform(Conversations(ml)));
        Assert.Equal(1.0, metrics.ExactMatchAccuracy);

        // One row at a time, with the messages as JSON text and as a vector of Text; then after Save/Load.
        using (var engine = ml.Model.CreatePredictionEngine<Conversation, Reply>(fitted, new PredictionEngineOptions { OwnsTransformer = false }))
            Assert.Equal("Paris.", engine.Predict(new Conversation { Messages = TinyChatModel.Json("What is the capital of France?", null) }).GeneratedText);
        using (var engine = ml.Model.CreatePredictionEngine<ConversationVector, Reply>(fitted, new PredictionEngineOptions { OwnsTransformer = false }))
            Assert.Equal("4", engine.Predict(new ConversationVector { Messages = ["user", "What is 2+2?"] }).GeneratedText);
        string zip = Path.Combine(_dir, "chat.zip");
        ml.Model.Save(fitted, Conversations(ml).Schema, zip);
        using var loaded = (FinetuneTransformer)ml.Model.Load(zip, out _);
        Assert.Equal(fitted.ChatTemplate!.GetSource(), loaded.ChatTemplate!.GetSource());
        Assert.Equal(replies.Select(r => r.GeneratedText), ml.Data.CreateEnumerable<Reply>(loaded.Transform(questions), false).Select(r => r.GeneratedText));
    }

    [Fact]
    public void PackedFit_EqualsUnpackedFit_OnConversations()
    {
        // One full batch per step (all 8 conversations unpacked, all packed rows), SGD: the same gradient every step, so the same run.
        string model = TinyChatModel.Create(Path.Combine(_dir, "model"));
        var ml = new MLContext(1);
        var rows = TinyChatModel.Exchanges.Concat(TinyChatModel.Exchanges.Select(x => (x.User + " Please answer.", x.Assistant)))
            .Select(x => new Conversation { Messages = TinyChatModel.Json(x.Item1, x.Item2) }).ToList();
        var data = ml.Data.LoadFromEnumerable(rows);
        TrainingHistory Run(bool packing)
        {
            var o = Lora(model, steps: 3, packing: packing);
            o.Optimizer = OptimizerKind.Sgd; o.LearningRate = 0.5; o.BatchSize = 8;
            using var t = ml.Transforms.LoraFinetune(o).Fit(data);
            return t.TrainingHistory;
        }
        var unpacked = Run(false).Records;
        var packed = Run(true).Records;
        Assert.True(unpacked[0].TrainLoss > unpacked[^1].TrainLoss + 0.1, "the run must move");
        for (int i = 0; i < 3; i++)
        {
            Assert.True(Math.Abs(unpacked[i].TrainLoss - packed[i].TrainLoss) < 1e-5, $"step {i}: {unpacked[i].TrainLoss} vs {packed[i].TrainLoss}");
            Assert.True(Math.Abs(unpacked[i].GradNorm - packed[i].GradNorm) < 1e-5, $"step {i}: grad norm {unpacked[i].GradNorm} vs {packed[i].GradNorm}");
        }
    }

    [Fact]
    public void ValidationAndKlReferenceData_AcceptConversations()
    {
        // Validation loss = mean CE over the validation conversations' assistant tokens, which for one-turn conversations is
        // what Transform scores (the final assistant message): −ΣScore / Σtokens at the final weights.
        string model = TinyChatModel.Create(Path.Combine(_dir, "model"));
        var ml = new MLContext(1);
        var validation = ml.Data.LoadFromEnumerable(new[] { ("Capital of France?", "Paris."), ("Say hi.", "Hello there!") }
            .Select(x => new Conversation { Messages = TinyChatModel.Json(x.Item1, x.Item2) }));
        var o = Lora(model, steps: 3);
        o.ValidationData = validation; o.KlPenalty = 0.5; o.ReferenceTextData = Conversations(ml);
        using var fitted = ml.Transforms.LoraFinetune(o).Fit(Conversations(ml));
        var h = fitted.TrainingHistory.Records;
        Assert.Equal(0, h[0].KL, 6); // θ = θ_p before the first update (LoRA's B starts at 0)
        Assert.True(h[^1].KL > 1e-4, $"KL {h[^1].KL}");
        var scored = ml.Data.CreateEnumerable<Reply>(fitted.Transform(validation), false).ToList();
        double tokens = scored.Sum(r => Math.Round(r.Score / r.ScorePerToken));
        Assert.Equal(-scored.Sum(r => (double)r.Score) / tokens, h[^1].ValLoss, 4);
    }

    [Fact]
    public void PlainText_ContinuedPretraining_TrainsEveryToken_AndScoresTheText()
    {
        string model = TinyChatModel.Create(Path.Combine(_dir, "model"));
        var ml = new MLContext(1);
        string[] texts = ["The cat sat on the mat.", "Paris is the capital of France.", "Two and two make four."];
        var data = ml.Data.LoadFromEnumerable(texts.Select(t => new Document { Text = t }));
        var o = Lora(model, steps: 40);
        o.BatchSize = 3;
        using var fitted = ml.Transforms.LoraFinetune(o).Fit(data);
        Assert.Equal(FinetuneDataFormat.Text, fitted.Settings.DataFormat);
        var h = fitted.TrainingHistory.Records;
        Assert.True(h[^1].TrainLoss < h[0].TrainLoss / 4, $"loss {h[0].TrainLoss} → {h[^1].TrainLoss}");
        var scored = ml.Data.CreateEnumerable<Reply>(fitted.Transform(data), false).ToList();
        var encoder = new TextEncoder(fitted.Tokenizer, 128);
        // ScorePerToken is the mean over every token after the first (the tokens trained, the eos included).
        Assert.All(scored.Zip(texts), p => Assert.Equal(p.First.Score / (encoder.Ids(p.Second).Length - 1), p.First.ScorePerToken, 5));
        // The model continues a training text's beginning with its learned ending.
        using var engine = ml.Model.CreatePredictionEngine<Document, Reply>(fitted, new PredictionEngineOptions { OwnsTransformer = false });
        Assert.StartsWith(" capital of France.", engine.Predict(new Document { Text = "Paris is the" }).GeneratedText);
    }
}
