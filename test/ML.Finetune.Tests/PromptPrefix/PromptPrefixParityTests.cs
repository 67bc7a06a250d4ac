using ML.Finetune.Training;
using System.Text.Json.Nodes;
using ML.Finetune.Adapters;
using ML.Finetune.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Tests.PromptPrefix;

/// <summary>Prompt and prefix tuning against the peft fixtures (README: prompt tuning, extra fixtures).</summary>
public class PromptPrefixParityTests
{
    const double Atol = 1e-5;
    const string PromptRef = "tiny-llama-prompt-tuning", PrefixRef = "tiny-llama-prefix-tuning", ProjRef = "tiny-gpt2-prefix-projection";

    static Tensor Ids => Fixtures.Input("input_ids_right");
    static Tensor Mask => Fixtures.Input("attention_mask_right");
    static Tensor Labels => Fixtures.Input("labels_right");

    static void Close(Tensor a, Tensor b, string what, double tol = Atol)
    {
        var d = Fixtures.MaxAbsDiff(a, b);
        Assert.True(tol == 0 ? d == 0 : d < tol, $"{what}: max abs diff {d}");
    }

    [Fact]
    public void PromptTuning_PeftAdapter_ReproducesFullLogitsAndLoss()
    {
        using var scope = NewDisposeScope();
        using var m = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-llama"));
        using var pt = PeftPromptLearning.LoadPromptTuning(Fixtures.Model(PromptRef), m);
        Assert.Equal(4, pt.NumVirtualTokens);
        Close(pt.SoftPrompt, Fixtures.Ref(PromptRef, "prompt_embeddings"), "prompt_embeddings", 0);

        var full = pt.FullLogits(m, Ids, Mask);
        Assert.Equal(new long[] { 2, 16, 1000 }, full.shape);
        Close(full, Fixtures.Ref(PromptRef, "logits_right"), "logits_right");
        var labels = torch.cat([torch.full(2, 4, -100L, dtype: ScalarType.Int64), Labels], 1);
        Close(ParityTests.HfLoss(full, labels), Fixtures.Ref(PromptRef, "loss_right"), "loss_right");

        // Logits() drops the virtual rows; the loss on them with the plain labels is the same number.
        var real = pt.Logits(m, Ids, Mask);
        Assert.Equal(new long[] { 2, 12, 1000 }, real.shape);
        Close(real, full.narrow(1, 4, 12), "real rows", 0);
        Close(ParityTests.HfLoss(real, Labels), Fixtures.Ref(PromptRef, "loss_right"), "loss via Logits()");
    }

    [Fact]
    public void PrefixTuning_PeftAdapter_ReproducesLogitsLossLeftBatchAndLayerPrefixes()
    {
        using var scope = NewDisposeScope();
        using var m = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-llama"));
        var method = PeftPromptLearning.Load(Fixtures.Model(PrefixRef), m);
        using var px = Assert.IsType<PrefixTuningMethod>(method);
        Assert.Equal((3, 2, 2, 16, 32), (px.NumVirtualTokens, px.NumLayers, px.KeyValueHeads, px.HeadDim, px.TokenDim));
        Close(px.PromptEmbeddings(), Fixtures.Ref(PrefixRef, "prompt_embeddings"), "prompt_embeddings", 0);

        var (keys, values) = px.LayerPrefixes();
        Close(torch.stack(keys), Fixtures.Ref(PrefixRef, "prefix_keys"), "prefix_keys", 0);
        Close(torch.stack(values), Fixtures.Ref(PrefixRef, "prefix_values"), "prefix_values", 0);

        var logits = px.Logits(m, Ids, Mask);
        Assert.Equal(new long[] { 2, 12, 1000 }, logits.shape);
        Close(logits, Fixtures.Ref(PrefixRef, "logits_right"), "logits_right");
        Close(ParityTests.HfLoss(logits, Labels), Fixtures.Ref(PrefixRef, "loss_right"), "loss_right");
        Close(ParityTests.NextTokenLogprobs(logits, Ids), Fixtures.Ref(PrefixRef, "next_token_logprobs_right"), "logprobs");

        var maskL = Fixtures.Input("attention_mask_left");
        var left = px.Forward(m, Fixtures.Input("input_ids_left"), maskL, Fixtures.Input("position_ids_left"));
        var valid = maskL.to_type(ScalarType.Bool);
        Close(left[valid], Fixtures.Ref(PrefixRef, "logits_left")[valid], "logits_left (valid)");

        // The prefix matters (README: up to 4.57), and UsePretrained is the bare base model.
        var baseLogits = m.Forward(new CausalLMInput { InputIds = Ids, AttentionMask = Mask }).Logits;
        Assert.True(Fixtures.MaxAbsDiff(logits, baseLogits) > 1.0);
        using (px.UsePretrained(m)) Close(px.Logits(m, Ids, Mask), baseLogits, "UsePretrained", 0);
        Close(px.Logits(m, Ids, Mask), logits, "prefix back after the scope", 0);
    }

    static PrefixTuningMethod Gpt2Projection(CausalLM m)
    {
        var px = new PrefixTuningMethod(new PrefixTuningOptions { NumVirtualTokens = 3, PrefixProjection = true, EncoderHiddenSize = 32 });
        px.Attach(m, 7);
        var mlp = PrefixTuningMethod.MlpNames.ToDictionary(n => n, n => Fixtures.Ref(ProjRef, n));
        px.LoadState(mlp);
        return px;
    }

    [Fact]
    public void PrefixProjection_Gpt2_MlpReproducesLogitsLoss_AndFoldIsIdentical()
    {
        using var scope = NewDisposeScope();
        using var m = CausalLMFactory.LoadPretrained(Fixtures.Model("tiny-gpt2"));
        using var px = Gpt2Projection(m);
        Assert.True(px.HasProjection);
        Assert.Equal(PrefixTuningMethod.MlpNames, px.TrainableParameters.Select(p => p.Name));
        Close(px.PromptEmbeddings(), Fixtures.Ref(ProjRef, "prompt_embeddings"), "MLP output", 1e-6);
        Close(torch.stack(px.LayerPrefixes().Keys), Fixtures.Ref(ProjRef, "prefix_keys"), "prefix_keys", 1e-6);
        Close(torch.stack(px.LayerPrefixes().Values), Fixtures.Ref(ProjRef, "prefix_values"), "prefix_values", 1e-6);

        var logits = px.Logits(m, Ids, Mask);
        Close(logits, Fixtures.Ref(ProjRef, "logits_right"), "logits_right");
        Close(ParityTests.HfLoss(logits, Labels), Fixtures.Ref(ProjRef, "loss_right"), "loss_right");

        px.FoldProjection();
        Assert.False(px.HasProjection);
        Assert.Equal(["prompt_embeddings"], px.TrainableParameters.Select(p => p.Name));
        Assert.True(px.TrainableParameters[0].Parameter.requires_grad);
        Close(px.Logits(m, Ids, Mask), logits, "folded logits", 0);
        var (tensors, _) = px.SaveState();
        Assert.Equal(["prompt_embeddings"], tensors.Keys);
        Assert.Equal(new long[] { 3, 256 }, tensors["prompt_embeddings"].shape);

        // peft's saved adapter for this model is the projected table only.
        using var loaded = PeftPromptLearning.LoadPrefixTuning(Fixtures.Model(ProjRef), m);
        Close(loaded.Logits(m, Ids, Mask), Fixtures.Ref(ProjRef, "logits_right"), "peft adapter logits");
    }

    static JsonObject Config(string folder) =>
        (JsonObject)JsonNode.Parse(File.ReadAllText(Path.Combine(folder, PeftPromptLearning.ConfigFile)))!;

    [Theory]
    [InlineData("tiny-llama", PromptRef)]
    [InlineData("tiny-llama", PrefixRef)]
    [InlineData("tiny-gpt2", ProjRef)]
    public void PeftExport_SameConfigKeysAndDims_RoundTripsLogits(string model, string adapter)
    {
        using var scope = NewDisposeScope();
        using var m = CausalLMFactory.LoadPretrained(Fixtures.Model(model));
        var dir = Fixtures.TempDir();
        try
        {
            ML.Finetune.Training.IFinetuneMethod method = adapter == ProjRef ? Gpt2Projection(m) : PeftPromptLearning.Load(Fixtures.Model(adapter), m);
            PeftPromptLearning.Save(method, m, dir, model);
            var ours = Config(dir);
            var theirs = Config(Fixtures.Model(adapter));
            Assert.Equal(theirs.Select(p => p.Key).OrderBy(k => k, StringComparer.Ordinal), ours.Select(p => p.Key).OrderBy(k => k, StringComparer.Ordinal));
            foreach (var key in new[] { "peft_type", "task_type", "token_dim", "num_attention_heads", "num_layers", "num_virtual_tokens",
                                        "num_transformer_submodules", "base_model_name_or_path", "inference_mode", "prefix_projection", "encoder_hidden_size", "prompt_tuning_init" })
                if (theirs.ContainsKey(key)) Assert.True(JsonNode.DeepEquals(theirs[key], ours[key]), $"{key}: {theirs[key]} vs {ours[key]}");

            var mine = Checkpoints.SafeTensors.Load(Path.Combine(dir, PeftPromptLearning.WeightsFile));
            var ref0 = Checkpoints.SafeTensors.Load(Path.Combine(Fixtures.Model(adapter), PeftPromptLearning.WeightsFile));
            Assert.Equal(ref0.Keys, mine.Keys);
            Close(mine["prompt_embeddings"], ref0["prompt_embeddings"], "exported prompt_embeddings", 1e-6);

            var again = PeftPromptLearning.Load(dir, m);
            Close(again.Logits(m, Ids, Mask), method.Logits(m, Ids, Mask), "reloaded logits", 1e-6);
            (again as IDisposable)?.Dispose();
            (method as IDisposable)?.Dispose();
        }
        finally { Directory.Delete(dir, true); }
    }
}
