using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using ML.Finetune.Models;
using ML.Finetune.Runtime;
using ML.Finetune.Persistence;
using ML.Finetune.Tokenization;
using ML.Finetune.Training;
using ML.Finetune.Transformers;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Estimators;

/// <summary>
/// The shared estimator: validates columns, loads the base model and tokenizer, builds the method
/// (<see cref="CreateMethod"/>), runs the one <see cref="FinetuneTrainer"/> and returns a <see cref="FinetuneTransformer"/>.
/// Subclasses only say which method trains (full, LoRA, prompt, prefix).
/// </summary>
public abstract class FinetuneEstimatorBase : IEstimator<FinetuneTransformer>
{
    protected FinetuneEstimatorBase(IHostEnvironment env, FinetuneOptions options)
    {
        Env = env ?? throw new ArgumentNullException(nameof(env));
        Options = options ?? throw new ArgumentNullException(nameof(options));
        Host = HostAccess.Register(env, GetType().Name);
    }

    protected IHostEnvironment Env { get; }
    protected IHost Host { get; }
    public FinetuneOptions Options { get; }

    /// <summary>A new, unattached method instance.</summary>
    protected abstract IFinetuneMethod CreateMethod();

    /// <summary>Throws ArgumentOutOfRangeException when the column is missing and ArgumentException when it is not text.</summary>
    public static void CheckTextColumn(DataViewSchema schema, string name, string role)
    {
        var col = schema.GetColumnOrNull(name);
        if (col is null)
            throw new ArgumentOutOfRangeException(name, $"The {role} column '{name}' was not found in the input data; expected a column of type Text (string). " +
                $"Columns present: {string.Join(", ", schema.Select(c => c.Name))}.");
        if (col.Value.Type is not TextDataViewType)
            throw new ArgumentException($"The {role} column '{name}' has type {col.Value.Type}; expected Text (string).", name);
    }

    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        void Check(string name, string role)
        {
            if (!inputSchema.TryFindColumn(name, out var c))
                throw new ArgumentOutOfRangeException(name, $"The {role} column '{name}' was not found in the input schema; expected a column of type Text (string).");
            if (c.Kind != SchemaShape.Column.VectorKind.Scalar || c.ItemType is not TextDataViewType)
                throw new ArgumentException($"The {role} column '{name}' has type {c.ItemType}{(c.Kind == SchemaShape.Column.VectorKind.Scalar ? "" : " vector")}; expected Text (string).", name);
        }
        Check(Options.PromptColumnName, "prompt");
        Check(Options.CompletionColumnName, "completion");
        var cols = inputSchema.ToDictionary(c => c.Name);
        cols[Options.OutputColumnName] = MakeColumn(Options.OutputColumnName, TextDataViewType.Instance);
        cols[Options.ScoreColumnName] = MakeColumn(Options.ScoreColumnName, NumberDataViewType.Single);
        cols[Options.ScorePerTokenColumnName] = MakeColumn(Options.ScorePerTokenColumnName, NumberDataViewType.Single);
        return new SchemaShape(cols.Values);
    }

    static SchemaShape.Column MakeColumn(string name, DataViewType type) => HostAccess.ScalarColumn(name, type);

    public FinetuneTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        var o = Options;
        CheckTextColumn(input.Schema, o.PromptColumnName, "prompt");
        CheckTextColumn(input.Schema, o.CompletionColumnName, "completion");
        if (string.IsNullOrWhiteSpace(o.BaseModelPath)) throw new ArgumentException("BaseModelPath is not set.", nameof(o.BaseModelPath));
        if (!Directory.Exists(o.BaseModelPath)) throw new DirectoryNotFoundException($"The base model folder '{o.BaseModelPath}' (BaseModelPath) does not exist.");
        Runtime.TorchNativeLibrary.EnsureLoaded();

        if (o.NumberOfThreads is int threads)
        {
            if (threads < 1) throw new ArgumentOutOfRangeException(nameof(o.NumberOfThreads), "NumberOfThreads must be ≥ 1.");
            torch.set_num_threads(threads);
        }
        var device = ResolveDevice();
        var dtypeChoice = AutoDType.Resolve(o.DType, device);
        HostAccess.Info(Host, $"compute dtype {dtypeChoice.DType}: {dtypeChoice.Reason}");
        var dtype = dtypeChoice.DType;
        var config = CausalLMConfig.Load(o.BaseModelPath);
        var tokenizer = CausalLMTokenizer.FromFolder(o.BaseModelPath);
        tokenizer.ValidateAgainstModel(config.VocabSize);
        foreach (var warning in TokenizerChecks.CheckSpecialTokens(tokenizer, o.BaseModelPath, config.VocabSize)) Warn(warning);
        var encoder = new ExampleEncoder(tokenizer, ExampleEncoder.EffectiveMaxLength(o.MaxSequenceLength, config));
        var train = ReadPairs(input, "training data (the IDataView passed to Fit)", encoder);
        if (TokenizerChecks.UnknownTokenWarning(tokenizer, Texts(input)) is { } unknown) Warn(unknown);
        var validation = o.ValidationData is null ? null : ReadPairs(o.ValidationData, "ValidationData", encoder);
        List<long[]>? references = null;
        if (o.KlPenalty > 0)
        {
            if (o.ReferenceTextData is null) throw new ArgumentException("KlPenalty > 0 needs ReferenceTextData.", nameof(o.ReferenceTextData));
            if (o.KlTopK < 1) throw new ArgumentOutOfRangeException(nameof(o.KlTopK), $"KlTopK must be ≥ 1, got {o.KlTopK}.");
            references = ReadTexts(o.ReferenceTextData, o.ReferenceTextColumnName, encoder);
        }

        var model = CausalLMFactory.LoadPretrained(o.BaseModelPath, new ModelLoadOptions { DType = dtype, Device = device });
        var method = CreateMethod();
        try
        {
            using var progress = new FitProgress(Host, method.Name);
            torch.manual_seed(o.Seed);
            method.Attach(model, o.Seed);
            var trainer = new FinetuneTrainer(new TrainerOptions
            {
                LearningRate = o.LearningRate, Optimizer = o.Optimizer, WeightDecay = o.WeightDecay, Momentum = o.Momentum,
                Schedule = o.Schedule, WarmupSteps = o.WarmupSteps, MaxSteps = o.MaxSteps, Epochs = o.Epochs, BatchSize = o.BatchSize,
                GradientClipNorm = o.GradientClipNorm, GradientAccumulationSteps = o.GradientAccumulationSteps,
                EvaluateEveryNSteps = o.EvaluateEveryNSteps, L2Penalty = o.L2Penalty, L2Squared = o.L2Squared, KlPenalty = o.KlPenalty, Seed = o.Seed,
                KlReference = o.KlReference, KlTopK = o.KlTopK, GradientCheckpointing = o.GradientCheckpointing,
                EarlyStoppingPatience = o.EarlyStoppingPatience, EarlyStoppingMinDelta = o.EarlyStoppingMinDelta,
                CheckpointFolder = o.CheckpointFolder, CheckpointEveryNSteps = o.CheckpointEveryNSteps,
            }, encoder.PadId)
            {
                CheckAlive = () => HostAccess.CheckAlive(Host),
                Progress = p =>
                {
                    progress.Report(p);
                    ProgressCallback?.Invoke(p);
                },
                Warning = Warn,
            };
            var history = trainer.Train(model, method, train, validation, references);
            foreach (var (_, p) in method.TrainableParameters) p.requires_grad = false;
            var baseFiles = method.Name == FullFinetuneMethod.MethodName ? FinetuneTransformer.ReadBaseFiles(o.BaseModelPath) : new Dictionary<string, byte[]>();
            return new FinetuneTransformer(Env, model, tokenizer, method, FinetuneTransformerSettings.From(o) with { DType = dtypeChoice.Option }, history,
                BaseModelReference.Of(o.BaseModelPath), baseFiles);
        }
        catch
        {
            (method as IDisposable)?.Dispose();
            model.Dispose();
            throw;
        }
    }

    /// <summary>Optional per-step progress callback (in addition to the ML.NET log and progress channel).</summary>
    public Action<TrainingProgress>? ProgressCallback { get; set; }

    /// <summary>
    /// Receives Fit's warnings (see <see cref="TokenizerChecks"/>; a corrupt checkpoint skipped on resume), which also go
    /// to the ML.NET log (MLContext.Log, kind Warning). Default: "warning: …" on standard error; null silences that.
    /// </summary>
    public Action<string>? WarningCallback { get; set; } = message => Console.Error.WriteLine("warning: " + message);

    void Warn(string message)
    {
        HostAccess.Warning(Host, message);
        WarningCallback?.Invoke(message);
    }

    Device ResolveDevice()
    {
        var (gpu, fallback) = HostAccess.GpuSettings(Env);
        bool cuda = torch.cuda.is_available();
        switch (Options.Device)
        {
            case FinetuneDevice.Cpu: return torch.CPU;
            case FinetuneDevice.Cuda:
                // Under mpirun each rank takes the GPU of its node-local rank unless MLContext.GpuDeviceId says otherwise.
                if (cuda) return torch.device(DeviceType.CUDA, gpu ?? Distributed.Communicator.World.LocalRank);
                if (fallback) return torch.CPU;
                throw new InvalidOperationException("Device = Cuda was requested but CUDA is not available (set MLContext.FallbackToCpu = true to use the CPU).");
            default:
                if (gpu is null) return torch.CPU;
                if (cuda) return torch.device(DeviceType.CUDA, gpu.Value);
                if (fallback) return torch.CPU;
                throw new InvalidOperationException($"MLContext.GpuDeviceId = {gpu} but CUDA is not available (set MLContext.FallbackToCpu = true to use the CPU).");
        }
    }

    /// <summary>Each prompt and completion of the training data with where it is, read again (nothing is kept in memory).</summary>
    IEnumerable<(string Text, string Where)> Texts(IDataView data)
    {
        var p = data.Schema[Options.PromptColumnName]; var c = data.Schema[Options.CompletionColumnName];
        using var cursor = data.GetRowCursor(new[] { p, c });
        var gp = cursor.GetGetter<ReadOnlyMemory<char>>(p); var gc = cursor.GetGetter<ReadOnlyMemory<char>>(c);
        ReadOnlyMemory<char> pv = default, cv = default;
        for (long row = 0; cursor.MoveNext(); row++)
        {
            HostAccess.CheckAlive(Host);
            gp(ref pv); gc(ref cv);
            yield return (pv.ToString(), $"training row {row} (0-based), column '{Options.PromptColumnName}'");
            yield return (cv.ToString(), $"training row {row} (0-based), column '{Options.CompletionColumnName}'");
        }
    }

    List<EncodedExample> ReadPairs(IDataView data, string what, ExampleEncoder encoder)
    {
        CheckTextColumn(data.Schema, Options.PromptColumnName, "prompt");
        CheckTextColumn(data.Schema, Options.CompletionColumnName, "completion");
        var p = data.Schema[Options.PromptColumnName]; var c = data.Schema[Options.CompletionColumnName];
        var list = new List<EncodedExample>();
        using var cursor = data.GetRowCursor(new[] { p, c });
        var gp = cursor.GetGetter<ReadOnlyMemory<char>>(p); var gc = cursor.GetGetter<ReadOnlyMemory<char>>(c);
        ReadOnlyMemory<char> pv = default, cv = default;
        long row = 0;
        while (cursor.MoveNext())
        {
            HostAccess.CheckAlive(Host);
            gp(ref pv); gc(ref cv);
            list.Add(encoder.Encode(pv.ToString(), cv.ToString(), row++, Options.CompletionColumnName));
        }
        if (list.Count == 0) throw new InvalidOperationException($"The {what} has no rows; finetuning needs at least one (prompt, completion) pair.");
        return list;
    }

    List<long[]> ReadTexts(IDataView data, string column, ExampleEncoder encoder)
    {
        CheckTextColumn(data.Schema, column, "reference text");
        var col = data.Schema[column];
        var list = new List<long[]>();
        using var cursor = data.GetRowCursor(new[] { col });
        var g = cursor.GetGetter<ReadOnlyMemory<char>>(col);
        ReadOnlyMemory<char> v = default;
        while (cursor.MoveNext())
        {
            g(ref v);
            var ids = encoder.EncodePrompt(v.ToString());
            if (ids.Length > 0) list.Add(ids);
        }
        if (list.Count == 0) throw new InvalidOperationException("ReferenceTextData has no non-empty rows; the KL penalty needs reference texts.");
        return list;
    }
}

/// <summary>Full finetuning: every weight of the base model trains. The saved model is self-contained.</summary>
public sealed class FullFinetuneEstimator : FinetuneEstimatorBase
{
    public FullFinetuneEstimator(IHostEnvironment env, FullFinetuneOptions options) : base(env, options) { }
    protected override IFinetuneMethod CreateMethod() => new FullFinetuneMethod();
}
