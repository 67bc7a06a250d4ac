using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using ML.Finetune.Chat;
using ML.Finetune.Data;
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

    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        DataFormatColumns.ForTraining(inputSchema, DataColumnNames.Of(Options), Options.DataFormat, "input schema");
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
        var names = DataColumnNames.Of(o);
        var trainColumns = DataFormatColumns.ForTraining(input.Schema, names, o.DataFormat, "training data (the IDataView passed to Fit)");
        var validationColumns = o.ValidationData is null ? null : DataFormatColumns.ForTraining(o.ValidationData.Schema, names, o.DataFormat, "ValidationData");
        if (o.KlPenalty > 0 && o.ReferenceTextData is null) throw new ArgumentException("KlPenalty > 0 needs ReferenceTextData.", nameof(o.ReferenceTextData));
        if (o.KlPenalty > 0 && o.KlReference == KlReferenceMode.TopKCache && o.KlTopK < 1)
            throw new ArgumentOutOfRangeException(nameof(o.KlTopK), $"KlTopK must be ≥ 1, got {o.KlTopK}.");
        var referenceColumns = o.KlPenalty > 0 ? ReferenceColumns(o.ReferenceTextData!.Schema) : null;
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
        var template = LoadChatTemplate(o);
        if (template is null && new[] { trainColumns, validationColumns, referenceColumns }.Any(c => c?.Format == FinetuneDataFormat.Conversation))
            throw FinetuneDataEncoder.NoTemplate();
        var encoder = new FinetuneDataEncoder(tokenizer, ExampleEncoder.EffectiveMaxLength(o.MaxSequenceLength, config), template, o.AssistantOnlyLoss);
        HostAccess.Info(Host, $"training data: {trainColumns.Describe()}{(o.Packing ? ", packed" : "")}");
        IReadOnlyList<EncodedExample> train = ReadExamples(input, trainColumns, "training data (the IDataView passed to Fit)", encoder);
        if (TokenizerChecks.UnknownTokenWarning(tokenizer, Texts(input, trainColumns)) is { } unknown) Warn(unknown);
        IReadOnlyList<EncodedExample>? validation = validationColumns is null ? null : ReadExamples(o.ValidationData!, validationColumns, "ValidationData", encoder);
        List<long[]>? references = referenceColumns is null ? null : ReadReferences(o.ReferenceTextData!, referenceColumns, encoder);
        if (o.Packing)
        {
            train = SequencePacker.Pack(train, encoder.MaxSequenceLength);
            if (validation is not null) validation = SequencePacker.Pack(validation, encoder.MaxSequenceLength);
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
            return new FinetuneTransformer(Env, model, tokenizer, method,
                FinetuneTransformerSettings.From(o) with { DType = dtypeChoice.Option, DataFormat = trainColumns.Format }, history,
                BaseModelReference.Of(o.BaseModelPath), baseFiles, template);
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

    /// <summary>The options' ChatTemplate, else the base model folder's (null when neither has one).</summary>
    static ChatTemplate? LoadChatTemplate(FinetuneOptions o)
    {
        if (!string.IsNullOrEmpty(o.ChatTemplate))
            return new ChatTemplate(o.ChatTemplate, ChatTemplate.FolderHasTemplate(o.BaseModelPath)
                ? ChatTemplate.FromFolder(o.BaseModelPath).SpecialTokens : ChatTemplateFiles.ReadSpecialTokens(o.BaseModelPath));
        return ChatTemplate.FolderHasTemplate(o.BaseModelPath) ? ChatTemplate.FromFolder(o.BaseModelPath) : null;
    }

    /// <summary>The KL reference set's format: its text column, else conversations, else prompt/completion pairs.</summary>
    DataColumns ReferenceColumns(DataViewSchema schema)
    {
        var o = Options;
        var names = DataColumnNames.Of(o) with { Text = o.ReferenceTextColumnName };
        if (schema.GetColumnOrNull(o.ReferenceTextColumnName) is null
            && (schema.GetColumnOrNull(o.MessagesColumnName) is not null || schema.GetColumnOrNull(o.PromptColumnName) is not null))
            return DataFormatColumns.ForTraining(schema, names, FinetuneDataFormat.Auto, "ReferenceTextData");
        return DataFormatColumns.ForTraining(schema, names, FinetuneDataFormat.Text, "ReferenceTextData");
    }

    /// <summary>Every text of the training data with where it is, read again (nothing is kept in memory).</summary>
    IEnumerable<(string Text, string Where)> Texts(IDataView data, DataColumns columns)
    {
        foreach (var row in FinetuneRows.Read(data, columns, () => HostAccess.CheckAlive(Host)))
        {
            string where = "training " + row.Where;
            if (row.Messages is { } messages)
                foreach (var m in messages) yield return (m.Content ?? "", where);
            else if (row.Text is { } text) yield return (text, where);
            else
            {
                yield return (row.Prompt ?? "", $"training row {row.Index} (0-based), column '{Options.PromptColumnName}'");
                yield return (row.Completion ?? "", $"training row {row.Index} (0-based), column '{Options.CompletionColumnName}'");
            }
        }
    }

    List<EncodedExample> ReadExamples(IDataView data, DataColumns columns, string what, FinetuneDataEncoder encoder)
    {
        var list = new List<EncodedExample>();
        int split = 0, empty = 0;
        foreach (var row in FinetuneRows.Read(data, columns, () => HostAccess.CheckAlive(Host)))
        {
            if (row.Text is { } text && string.IsNullOrWhiteSpace(text)) { empty++; continue; }
            var examples = encoder.ForTraining(row);
            if (examples.Count > 1) split++;
            list.AddRange(examples);
        }
        if (empty > 0) Warn($"{what}: {empty} empty text(s) skipped.");
        if (split > 0)
            Warn($"{what}: {split} text(s) longer than {encoder.MaxSequenceLength} tokens (MaxSequenceLength) were split into windows of " +
                 $"{encoder.MaxSequenceLength} tokens that overlap by one, so every token is still trained once.");
        if (list.Count == 0)
            throw new InvalidOperationException($"The {what} has no rows to train on ({columns.Describe()}); finetuning needs at least one.");
        return list;
    }

    List<long[]> ReadReferences(IDataView data, DataColumns columns, FinetuneDataEncoder encoder)
    {
        var list = FinetuneRows.Read(data, columns, () => HostAccess.CheckAlive(Host)).Select(encoder.ForReference).Where(ids => ids.Length > 0).ToList();
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
