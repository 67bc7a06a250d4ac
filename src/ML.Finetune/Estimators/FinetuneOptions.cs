using Microsoft.ML;
using ML.Finetune.Training;

namespace ML.Finetune.Estimators;

public enum FinetuneDevice { Auto, Cpu, Cuda }

/// <summary>
/// What a row of training data is (see docs/data-formats.md). Auto picks the format from the columns present: a prompt
/// and a completion column, a messages column, or a text column; more than one of them is ambiguous and an error.
/// </summary>
public enum FinetuneDataFormat
{
    Auto = 0,
    /// <summary>Prompt and completion text columns: the loss covers the completion and an eos.</summary>
    PromptCompletion = 1,
    /// <summary>A messages column (a conversation): rendered with the model's chat template; the loss covers the assistant
    /// messages (<see cref="FinetuneOptions.AssistantOnlyLoss"/>) or every token.</summary>
    Conversation = 2,
    /// <summary>A text column (continued pretraining): every token is in the loss, with bos/eos as the tokenizer adds them.</summary>
    Text = 3,
}
/// <summary>Compute dtype. Values are saved with fitted models; Auto is resolved at Fit and saved as what it chose.</summary>
public enum FinetuneDType { Float32 = 0, BFloat16 = 1, Auto = 2 }

/// <summary>How the fitted transformer generates text (GeneratedText column).</summary>
public sealed class FinetuneGenerationOptions
{
    public int MaxNewTokens = 32;
    /// <summary>0 = greedy (default); &gt; 0 samples from softmax(logits / Temperature).</summary>
    public double Temperature = 0;
    /// <summary>Sampling only: keep the k most likely tokens (0 = off).</summary>
    public int TopK = 0;
    /// <summary>Sampling only: nucleus threshold (1 = off).</summary>
    public double TopP = 1.0;
    /// <summary>The generated text is cut before the first occurrence of any of these strings.</summary>
    public string[] StopStrings = Array.Empty<string>();
    /// <summary>Rows per generation / scoring batch.</summary>
    public int BatchSize = 8;
    /// <summary>Seed of the sampling RNG (sampling is reproducible per Transform call).</summary>
    public long Seed = 0;
}

/// <summary>
/// Options shared by every finetuning estimator (ML.NET style). The objective is CE on completion tokens
/// + <see cref="L2Penalty"/>·‖θ−θ_p‖₂ + <see cref="KlPenalty"/>·KL(p_θp ‖ p_θ) on <see cref="ReferenceTextData"/>.
/// </summary>
public abstract class FinetuneOptions
{
    /// <summary>Hugging Face checkpoint folder (config.json, model.safetensors, tokenizer files).</summary>
    public string BaseModelPath = "";
    /// <summary>Which columns hold the training data (Auto: detected from the columns present).</summary>
    public FinetuneDataFormat DataFormat = FinetuneDataFormat.Auto;
    public string PromptColumnName = "Prompt";
    public string CompletionColumnName = "Completion";
    /// <summary>
    /// Conversations: a Text column holding JSON (a list of <c>{"role", "content"}</c> objects, or <c>{"messages": [...]}</c>;
    /// <see cref="Chat.ChatConversation.ToJson"/> writes it), or a vector of Text alternating role and content
    /// (<c>["user", "Hi", "assistant", "Hello"]</c>).
    /// </summary>
    public string MessagesColumnName = "Messages";
    /// <summary>Plain text for continued pretraining (every token trained).</summary>
    public string TextColumnName = "Text";
    /// <summary>Conversations: train only on the assistant messages (content and end-of-turn token; TRL's
    /// assistant_only_loss), the default; false trains on every token of the rendered conversation.</summary>
    public bool AssistantOnlyLoss = true;
    /// <summary>
    /// Jinja chat template for conversations (transformers' chat_template), overriding the base model's
    /// (chat_template.jinja or tokenizer_config.json); saved with the fitted model.
    /// </summary>
    public string? ChatTemplate;
    /// <summary>
    /// Sequence packing: concatenate tokenized examples into rows of <see cref="MaxSequenceLength"/> tokens (best fit
    /// decreasing); each keeps its own positions and attention block, so the loss equals unpacked training, with far
    /// less padding. <see cref="BatchSize"/> then counts packed rows.
    /// </summary>
    public bool Packing = false;
    public string OutputColumnName = "GeneratedText";
    /// <summary>Sum of log p(completion + eos | prompt); added when the completion column is present.</summary>
    public string ScoreColumnName = "Score";
    /// <summary>Mean per completion token of the same log-probabilities.</summary>
    public string ScorePerTokenColumnName = "ScorePerToken";
    /// <summary>
    /// Tokens per example, at most the model's context. Prompt/completion: prompts are cut from the left, completions
    /// never (an error names the row); conversations are never cut (an error names the row); texts are split into
    /// windows of this length.
    /// </summary>
    public int MaxSequenceLength = 512;
    public int BatchSize = 8;
    public double LearningRate = 1e-5;
    public OptimizerKind Optimizer = OptimizerKind.AdamW;
    /// <summary>Decoupled (AdamW) / coupled (SGD) weight decay; never on biases, norm weights or 1-D parameters.</summary>
    public double WeightDecay = 0.0;
    /// <summary>SGD momentum (0 = plain SGD).</summary>
    public double Momentum = 0.0;
    public LearningRateScheduleKind Schedule = LearningRateScheduleKind.Linear;
    public int WarmupSteps = 0;
    /// <summary>Optimizer steps; when null, <see cref="Epochs"/> passes over the data.</summary>
    public int? MaxSteps;
    public int Epochs = 1;
    /// <summary>Global-norm clipping (null or 0 = off).</summary>
    public double? GradientClipNorm = 1.0;
    public int GradientAccumulationSteps = 1;
    /// <summary>β: weight of ‖θ−θ_p‖₂ (0 = off).</summary>
    public double L2Penalty = 0;
    /// <summary>Use β·‖θ−θ_p‖² instead of the norm.</summary>
    public bool L2Squared = false;
    /// <summary>λ: weight of the KL to the pretrained model on <see cref="ReferenceTextData"/> (0 = off).</summary>
    public double KlPenalty = 0;
    /// <summary>The KL reference set: a text column (<see cref="ReferenceTextColumnName"/>), or else conversations in
    /// <see cref="MessagesColumnName"/> (rendered), or prompt and completion columns (concatenated); every token counts.</summary>
    public IDataView? ReferenceTextData;
    public string ReferenceTextColumnName = "Text";
    /// <summary>
    /// How the KL penalty obtains p_θp. OnTheFly (default): exact, one no-grad forward of θ_p per reference batch
    /// (LoRA, prompt and prefix disable their adapter; full finetuning uses a frozen copy that shares the θ_p weights it
    /// keeps anyway); its memory does not grow with the reference set. TopKCache: the <see cref="KlTopK"/> largest
    /// log-probabilities and the remaining mass per reference position, cached before training ((8k + 4) bytes per
    /// position), and the KL over those k + 1 buckets, a lower bound of the exact KL (docs/training-memory.md).
    /// </summary>
    public KlReferenceMode KlReference = KlReferenceMode.OnTheFly;
    /// <summary>k of <see cref="KlReferenceMode.TopKCache"/>.</summary>
    public int KlTopK = 64;
    /// <summary>
    /// Activation checkpointing: each decoder layer keeps only its input for the backward and recomputes its
    /// activations there. Same gradients (dropout included), much less memory for long sequences, about one more
    /// forward pass of time (docs/training-memory.md).
    /// </summary>
    public bool GradientCheckpointing = false;
    /// <summary>Validation rows in any data format (detected like the training data); the validation loss is the mean CE over
    /// the tokens that format trains.</summary>
    public IDataView? ValidationData;
    /// <summary>0 = evaluate only after the last step.</summary>
    public int EvaluateEveryNSteps = 0;
    /// <summary>Stop after this many evaluations (every <see cref="EvaluateEveryNSteps"/>) without improvement and keep the best weights; 0 = off.</summary>
    public int EarlyStoppingPatience = 0;
    public double EarlyStoppingMinDelta = 0;
    /// <summary>Checkpoint folder (trainable weights, optimizer, RNG, data position); Fit resumes from its newest valid checkpoint.</summary>
    public string? CheckpointFolder;
    public int CheckpointEveryNSteps = 0;
    public long Seed = 0;
    /// <summary>
    /// libtorch intra-op threads (torch.set_num_threads, a process-wide setting) applied at Fit; null leaves it as it is.
    /// For tiny models 1 is often much faster than several (measured: ~18x for a 2-layer, 32-wide model on a loaded 2-core machine).
    /// </summary>
    public int? NumberOfThreads;
    /// <summary>Auto follows MLContext.GpuDeviceId (null = CPU) and MLContext.FallbackToCpu.</summary>
    public FinetuneDevice Device = FinetuneDevice.Auto;
    /// <summary>
    /// Compute dtype. Auto (default): BFloat16 on CUDA and on CPUs with AVX512_BF16 or AMX-BF16, Float32 elsewhere
    /// (bf16 without that hardware is several times slower; see Runtime.AutoDType). BFloat16 keeps the base weights in
    /// bf16; LoRA, prompt and prefix parameters stay float32, and full finetuning updates float32 master copies that
    /// the optimizer rounds into the bf16 weights (so small updates accumulate); logits and the loss are float32.
    /// </summary>
    public FinetuneDType DType = FinetuneDType.Auto;
    public FinetuneGenerationOptions Generation = new();
}

/// <summary>Options of full finetuning: every weight trains, so the default learning rate is small.</summary>
public sealed class FullFinetuneOptions : FinetuneOptions
{
    public FullFinetuneOptions() { LearningRate = 1e-5; }
}
