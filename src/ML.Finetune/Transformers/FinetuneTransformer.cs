using System.Security.Cryptography;
using System.Text.Json;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using ML.Finetune.Chat;
using ML.Finetune.Checkpoints;
using ML.Finetune.Data;
using ML.Finetune.Estimators;
using ML.Finetune.Generation;
using ML.Finetune.Models;
using ML.Finetune.Persistence;
using ML.Finetune.Runtime;
using ML.Finetune.Tokenization;
using ML.Finetune.Training;
using TorchSharp;
using static TorchSharp.torch;

[assembly: LoadableClass(typeof(ML.Finetune.Transformers.FinetuneTransformer), null, typeof(SignatureLoadModel),
    "Finetuned causal LM", ML.Finetune.Transformers.FinetuneTransformer.LoaderSignature)]

namespace ML.Finetune.Transformers;

/// <summary>What the transformer needs besides weights: columns, lengths and generation settings (saved as JSON).</summary>
public sealed record FinetuneTransformerSettings
{
    public string PromptColumnName { get; init; } = "Prompt";
    public string CompletionColumnName { get; init; } = "Completion";
    public string OutputColumnName { get; init; } = "GeneratedText";
    public string ScoreColumnName { get; init; } = "Score";
    public string ScorePerTokenColumnName { get; init; } = "ScorePerToken";
    public int MaxSequenceLength { get; init; } = 512;
    public FinetuneDType DType { get; init; } = FinetuneDType.Float32;
    public long Seed { get; init; }
    public int MaxNewTokens { get; init; } = 32;
    public double Temperature { get; init; }
    public int TopK { get; init; }
    public double TopP { get; init; } = 1.0;
    public string[] StopStrings { get; init; } = Array.Empty<string>();
    public int BatchSize { get; init; } = 8;
    public long GenerationSeed { get; init; }
    /// <summary>The format the model was trained on; Transform prefers its columns when the input has several formats'.</summary>
    public FinetuneDataFormat DataFormat { get; init; } = FinetuneDataFormat.PromptCompletion;
    public string MessagesColumnName { get; init; } = "Messages";
    public string TextColumnName { get; init; } = "Text";
    public bool AssistantOnlyLoss { get; init; } = true;

    [System.Text.Json.Serialization.JsonIgnore]
    public DataColumnNames ColumnNames => new(PromptColumnName, CompletionColumnName, MessagesColumnName, TextColumnName);

    public FinetuneGenerationOptions Generation => new()
    {
        MaxNewTokens = MaxNewTokens, Temperature = Temperature, TopK = TopK, TopP = TopP, StopStrings = StopStrings, BatchSize = BatchSize, Seed = GenerationSeed,
    };

    public static FinetuneTransformerSettings From(FinetuneOptions o) => new()
    {
        PromptColumnName = o.PromptColumnName, CompletionColumnName = o.CompletionColumnName, OutputColumnName = o.OutputColumnName,
        ScoreColumnName = o.ScoreColumnName, ScorePerTokenColumnName = o.ScorePerTokenColumnName, MaxSequenceLength = o.MaxSequenceLength,
        DType = o.DType, Seed = o.Seed, MaxNewTokens = o.Generation.MaxNewTokens, Temperature = o.Generation.Temperature, TopK = o.Generation.TopK,
        TopP = o.Generation.TopP, StopStrings = o.Generation.StopStrings ?? Array.Empty<string>(), BatchSize = Math.Max(1, o.Generation.BatchSize),
        GenerationSeed = o.Generation.Seed, DataFormat = o.DataFormat, MessagesColumnName = o.MessagesColumnName, TextColumnName = o.TextColumnName,
        AssistantOnlyLoss = o.AssistantOnlyLoss,
    };
}

/// <summary>The base checkpoint a saved model refers to: its folder and the SHA-256 of each weight file.</summary>
public sealed record BaseModelReference(string Path, IReadOnlyDictionary<string, string> WeightSha256)
{
    public static BaseModelReference Of(string folder) => new(System.IO.Path.GetFullPath(folder),
        CausalLMFactory.WeightFiles(folder).ToDictionary(f => System.IO.Path.GetFileName(f), Sha256));

    public static string Sha256(string file)
    {
        using var fs = File.OpenRead(file);
        return Convert.ToHexString(SHA256.HashData(fs)).ToLowerInvariant();
    }

    /// <summary>True when <paramref name="folder"/> holds the same weight files.</summary>
    public bool Matches(string folder)
    {
        try { return Of(folder).WeightSha256.OrderBy(k => k.Key).SequenceEqual(WeightSha256.OrderBy(k => k.Key)); }
        catch (FileNotFoundException) { return false; }
    }
}

/// <summary>
/// A finetuned causal LM as an ML.NET transformer. Transform adds <c>GeneratedText</c> (KV-cached generation, lazily in
/// batches) and <c>Score</c> / <c>ScorePerToken</c> (Σ and mean log p of the row's target tokens), per input format:
/// <list type="bullet">
/// <item>a prompt column: the completion of the prompt; scores when the completion column is present: Σ log p(completion + eos | prompt);</item>
/// <item>a messages column: the next assistant reply (the chat template with the generation prompt; generation stops at
/// the template's end-of-turn token or an eos). When the conversation ends with an assistant message, that message is
/// the reference: the reply is generated from the messages before it, and the scores are Σ log p of its tokens
/// (content + end-of-turn) given them; otherwise the scores are NaN;</item>
/// <item>a text column: a continuation of the text; scores: Σ log p of every token of the text (as trained: bos/eos as the
/// tokenizer adds them, long texts in windows).</item>
/// </list>
/// When the input holds several formats' columns, the format the model was trained on wins.
/// <para>Saving (mlContext.Model.Save) stores the method name, settings, the method's trained tensors (safetensors bytes),
/// the training history and a reference to the base model (folder + SHA-256 of its weight files). Full finetuning also stores
/// the config and tokenizer files, so it is self-contained. Methods that need the base resolve it on load from, in order:
/// the saved path, the folder in the environment variable <c>MLFINETUNE_BASE_MODEL_DIR</c> (the base folder itself or its
/// parent), then each folder of <see cref="BaseModelSearchPaths"/> (itself or its parent). Missing → FileNotFoundException;
/// changed weights → InvalidDataException naming path and expected hash.</para>
/// <para>Single rows: <c>mlContext.Model.CreatePredictionEngine&lt;TIn, TOut&gt;(model)</c> works (this is a row-to-row
/// mapper) and gives Transform's results: the same GeneratedText with greedy decoding (the default) and the same Score /
/// ScorePerToken up to float rounding (a batch of one instead of a padded batch). With sampling (Temperature &gt; 0) each
/// prediction samples with <see cref="FinetuneTransformerSettings.GenerationSeed"/>, as the first batch of a Transform does.
/// As everywhere in ML.NET, a PredictionEngine is not thread-safe: use one per thread (or ASP.NET's PredictionEnginePool).
/// Engines on different threads may share one transformer: they share its model and tokenizer read-only (no_grad
/// forward passes, per-call KV caches and dispose scopes), so concurrent predictions are safe and give the results of
/// sequential ones. By ML.NET's default an engine owns its transformer and disposing the engine disposes the model;
/// pass <c>new PredictionEngineOptions { OwnsTransformer = false }</c> when the model outlives the engine.</para>
/// </summary>
public sealed partial class FinetuneTransformer : ITransformer, ICanSaveModel, IDisposable
{
    public const string LoaderSignature = "MLFtFinetuneTransformer";
    public const string BaseModelDirVariable = "MLFINETUNE_BASE_MODEL_DIR";
    private static readonly PersistedComponentInfo Info = new("MLFTFINE", 0x00010001, LoaderSignature, typeof(FinetuneTransformer));
    static readonly string[] SelfContainedFiles = { "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
        "special_tokens_map.json", "vocab.json", "merges.txt", "tokenizer.model", "chat_template.jinja" };

    /// <summary>Extra folders searched for a relocated base model (see the class remarks).</summary>
    public static List<string> BaseModelSearchPaths { get; } = new();

    private readonly IHost? _host;
    private readonly Dictionary<string, byte[]> _baseFiles;

    internal FinetuneTransformer(IHostEnvironment? env, CausalLM model, CausalLMTokenizer tokenizer, IFinetuneMethod method,
        FinetuneTransformerSettings settings, TrainingHistory history, BaseModelReference baseModel, Dictionary<string, byte[]> baseFiles,
        ChatTemplate? chatTemplate = null)
    {
        _host = env is null ? null : HostAccess.Register(env, "FinetuneTransformer");
        Model = model; Tokenizer = tokenizer; Method = method; Settings = settings; TrainingHistory = history; BaseModel = baseModel;
        _baseFiles = baseFiles;
        ChatTemplate = chatTemplate;
        Data = new FinetuneDataEncoder(tokenizer, ExampleEncoder.EffectiveMaxLength(settings.MaxSequenceLength, model.Config), chatTemplate, settings.AssistantOnlyLoss);
    }

    public CausalLM Model { get; }
    public CausalLMTokenizer Tokenizer { get; }
    public IFinetuneMethod Method { get; }
    public FinetuneTransformerSettings Settings { get; }
    public TrainingHistory TrainingHistory { get; }
    public BaseModelReference BaseModel { get; }
    internal ExampleEncoder Encoder => Data.PromptCompletion;
    /// <summary>How rows of each format become ids (the training encoders).</summary>
    internal FinetuneDataEncoder Data { get; }
    /// <summary>The chat template of conversations (the base model's or the options'; saved with the model), or null.</summary>
    public ChatTemplate? ChatTemplate { get; }
    public bool IsSelfContained => _baseFiles.Count > 0;

    /// <summary>
    /// Under mpirun (N &gt; 1 ranks), Transform's generation and scoring is split across the ranks and every rank receives
    /// all rows (see <see cref="Distributed.DistributedBatchMapper"/>): every rank must then read the output the same way.
    /// Set false to have each rank compute everything itself (e.g. when only rank 0 transforms). No effect in one process,
    /// and none on PredictionEngine (a single row is computed where it is asked for).
    /// </summary>
    public bool DistributedScoring { get; set; } = true;

    public bool IsRowToRowMapper => true;

    /// <summary>The single-row mapper behind PredictionEngine (see the class remarks).</summary>
    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        ThrowIfDisposed();
        return new FinetuneRowMapper(this, inputSchema, InputColumns(inputSchema));
    }

    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema) =>
        new BatchMappedDataView(new EmptyDataView(inputSchema), new Mapper(this, InputColumns(inputSchema))).Schema;

    /// <summary>Which columns of <paramref name="schema"/> the model reads (see the class remarks); throws naming the columns when none fit.</summary>
    internal DataColumns InputColumns(DataViewSchema schema)
    {
        var columns = DataFormatColumns.ForScoring(schema, Settings.ColumnNames, Settings.DataFormat);
        if (columns.Format == FinetuneDataFormat.Conversation && ChatTemplate is null) throw FinetuneDataEncoder.NoTemplate();
        return columns;
    }

    public IDataView Transform(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        ThrowIfDisposed();
        IBatchColumnMapper mapper = new Mapper(this, InputColumns(input.Schema));
        var comm = DistributedScoring ? Distributed.Communicator.World : Distributed.Communicator.SingleProcess;
        if (comm.IsDistributed) mapper = new Distributed.DistributedBatchMapper(mapper, comm);
        return new BatchMappedDataView(input, mapper, CheckAlive);
    }

    /// <summary>Throws when the MLContext was cancelled (ML.NET's Host.CheckAlive).</summary>
    internal void CheckAlive()
    {
        if (_host is not null) HostAccess.CheckAlive(_host);
    }

    private bool _disposed;
    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    // ---------------------------------------------------------------- persistence

    sealed record Manifest(int FormatVersion, string Method, string[] BaseFiles);

    void ICanSaveModel.Save(ModelSaveContext ctx) => ModelPersistence.Save(ctx, Info, w =>
    {
        w.Header.Write(1);
        var (tensors, configJson) = Method.SaveState();
        w.WriteEntry("manifest.json", JsonSerializer.SerializeToUtf8Bytes(new Manifest(1, Method.Name, _baseFiles.Keys.ToArray())));
        w.WriteEntry("settings.json", JsonSerializer.SerializeToUtf8Bytes(Settings));
        w.WriteEntry("method.json", System.Text.Encoding.UTF8.GetBytes(configJson));
        w.WriteEntry("base.json", JsonSerializer.SerializeToUtf8Bytes(BaseModel));
        w.WriteEntry("history.csv", System.Text.Encoding.UTF8.GetBytes(TrainingHistory.ToCsv()));
        w.WriteEntry("weights.safetensors", TensorsToBytes(tensors));
        foreach (var (name, bytes) in _baseFiles) w.WriteEntry("base/" + name, bytes);
        if (ChatTemplate is not null) w.WriteEntry("chat_template.json", System.Text.Encoding.UTF8.GetBytes(ChatTemplate.ToJson()));
    });

    private static FinetuneTransformer Create(IHostEnvironment env, ModelLoadContext ctx) => ModelPersistence.Load(ctx, Info, r =>
    {
        TorchNativeLibrary.EnsureLoaded();
        int format = r.Header.ReadInt32();
        if (format != 1) throw new InvalidDataException($"Unsupported FinetuneTransformer format {format}.");
        var manifest = JsonSerializer.Deserialize<Manifest>(r.ReadEntry("manifest.json")) ?? throw new InvalidDataException("manifest.json is empty.");
        var settings = JsonSerializer.Deserialize<FinetuneTransformerSettings>(r.ReadEntry("settings.json")) ?? throw new InvalidDataException("settings.json is empty.");
        string methodJson = System.Text.Encoding.UTF8.GetString(r.ReadEntry("method.json"));
        var baseRef = JsonSerializer.Deserialize<BaseModelReference>(r.ReadEntry("base.json")) ?? throw new InvalidDataException("base.json is empty.");
        var history = TrainingHistory.FromCsv(System.Text.Encoding.UTF8.GetString(r.ReadEntry("history.csv")));
        var tensors = BytesToTensors(r.ReadEntry("weights.safetensors"));
        var baseFiles = manifest.BaseFiles.ToDictionary(f => f, f => r.ReadEntry("base/" + f));
        var method = FinetuneMethodFactory.Create(manifest.Method, methodJson);
        var dtype = AutoDType.Resolve(settings.DType, null).DType; // saved resolved; Auto only from hand-made settings
        CausalLM model; CausalLMTokenizer tokenizer;
        if (baseFiles.Count > 0)
        {
            string tmp = Directory.CreateTempSubdirectory("mlft-load").FullName;
            try
            {
                foreach (var (f, bytes) in baseFiles) File.WriteAllBytes(System.IO.Path.Combine(tmp, f), bytes);
                var config = CausalLMConfig.Load(tmp);
                model = CausalLMFactory.Create(config);
                tokenizer = CausalLMTokenizer.FromFolder(tmp);
            }
            finally { Directory.Delete(tmp, true); }
            if (dtype != ScalarType.Float32) model.to(dtype);
            model.eval();
        }
        else
        {
            string folder = ResolveBaseModel(baseRef);
            model = CausalLMFactory.LoadPretrained(folder, new ModelLoadOptions { DType = dtype });
            tokenizer = CausalLMTokenizer.FromFolder(folder);
        }
        method.Attach(model, settings.Seed);
        try { method.LoadState(tensors); }
        finally { foreach (var t in tensors.Values) t.Dispose(); }
        foreach (var (_, p) in method.TrainableParameters) p.requires_grad = false;
        var template = r.TryReadEntry("chat_template.json") is { } templateJson ? ChatTemplate.FromJson(System.Text.Encoding.UTF8.GetString(templateJson)) : null;
        return new FinetuneTransformer(env, model, tokenizer, method, settings, history, baseRef, baseFiles, template);
    });

    /// <summary>Finds the base model folder of <paramref name="reference"/> (see the class remarks for the search order).</summary>
    public static string ResolveBaseModel(BaseModelReference reference)
    {
        string name = System.IO.Path.GetFileName(reference.Path.TrimEnd('/', '\\'));
        var candidates = new List<string> { reference.Path };
        var env = Environment.GetEnvironmentVariable(BaseModelDirVariable);
        foreach (var root in (string.IsNullOrEmpty(env) ? Array.Empty<string>() : new[] { env }).Concat(BaseModelSearchPaths))
        {
            candidates.Add(root);
            candidates.Add(System.IO.Path.Combine(root, name));
        }
        string? mismatched = null;
        foreach (var c in candidates.Where(Directory.Exists))
        {
            if (reference.Matches(c)) return c;
            if (File.Exists(System.IO.Path.Combine(c, "config.json"))) mismatched ??= c;
        }
        string expected = string.Join(", ", reference.WeightSha256.Select(kv => $"{kv.Key} sha256 {kv.Value}"));
        if (mismatched != null)
            throw new InvalidDataException($"The base model at '{mismatched}' is not the one this model was trained on: expected {expected}. " +
                $"Restore the original weights, or point {BaseModelDirVariable} / FinetuneTransformer.BaseModelSearchPaths at a copy of them.");
        throw new FileNotFoundException($"The base model '{reference.Path}' ({expected}) was not found. Set the environment variable " +
            $"{BaseModelDirVariable} or add to FinetuneTransformer.BaseModelSearchPaths the folder it was moved to.", reference.Path);
    }

    internal static byte[] TensorsToBytes(IReadOnlyDictionary<string, Tensor> tensors)
    {
        string tmp = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"mlft-{Guid.NewGuid():N}.safetensors");
        try { SafeTensors.Save(tmp, tensors); return File.ReadAllBytes(tmp); }
        finally { if (File.Exists(tmp)) File.Delete(tmp); }
    }

    internal static Dictionary<string, Tensor> BytesToTensors(byte[] bytes)
    {
        string tmp = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"mlft-{Guid.NewGuid():N}.safetensors");
        try { File.WriteAllBytes(tmp, bytes); return SafeTensors.Load(tmp); }
        finally { if (File.Exists(tmp)) File.Delete(tmp); }
    }

    internal static Dictionary<string, byte[]> ReadBaseFiles(string folder) => SelfContainedFiles
        .Select(f => System.IO.Path.Combine(folder, f)).Where(File.Exists)
        .ToDictionary(f => System.IO.Path.GetFileName(f), File.ReadAllBytes);

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        (Method as IDisposable)?.Dispose();
        Model.Dispose();
    }
}
