using ML.Finetune.Distributed;
using ML.Finetune.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Training;

/// <summary>Settings of the training loop (the estimator options map onto these).</summary>
public sealed class TrainerOptions
{
    public double LearningRate { get; set; } = 1e-5;
    public OptimizerKind Optimizer { get; set; } = OptimizerKind.AdamW;
    public double WeightDecay { get; set; } = 0.0;
    public double Momentum { get; set; } = 0.0;
    public double AdamBeta1 { get; set; } = 0.9;
    public double AdamBeta2 { get; set; } = 0.999;
    public double AdamEpsilon { get; set; } = 1e-8;
    public LearningRateScheduleKind Schedule { get; set; } = LearningRateScheduleKind.Constant;
    public int WarmupSteps { get; set; }
    /// <summary>Optimizer steps; when null, <see cref="Epochs"/> passes over the data.</summary>
    public int? MaxSteps { get; set; }
    public int Epochs { get; set; } = 1;
    /// <summary>Examples per micro-batch, over all data-parallel ranks together (each rank takes a shard of it).</summary>
    public int BatchSize { get; set; } = 8;
    /// <summary>Global-norm gradient clipping; null or ≤ 0 = off.</summary>
    public double? GradientClipNorm { get; set; }
    public int GradientAccumulationSteps { get; set; } = 1;
    /// <summary>Validation loss every N optimizer steps (and after the last); 0 = only after the last.</summary>
    public int EvaluateEveryNSteps { get; set; }
    public double L2Penalty { get; set; }
    public bool L2Squared { get; set; }
    public double KlPenalty { get; set; }
    /// <summary>How the KL obtains p_θp (default: exact, on the fly from θ_p).</summary>
    public KlReferenceMode KlReference { get; set; } = KlReferenceMode.OnTheFly;
    /// <summary>k of <see cref="KlReferenceMode.TopKCache"/>.</summary>
    public int KlTopK { get; set; } = 64;
    /// <summary>Activation checkpointing per decoder layer while training (<see cref="CausalLM.GradientCheckpointing"/>).</summary>
    public bool GradientCheckpointing { get; set; }
    /// <summary>Rows of logits per chunk of the LM head in the loss, validation and reference passes; null = about 2²⁵ logits.</summary>
    public long? LogitsChunkRows { get; set; }
    public long Seed { get; set; } = 0;
    public bool Shuffle { get; set; } = true;

    /// <summary>Early stopping: stop after this many validation evaluations without improvement (0 = off). Needs
    /// validation data and <see cref="EvaluateEveryNSteps"/> &gt; 0.</summary>
    public int EarlyStoppingPatience { get; set; }
    /// <summary>An evaluation improves when its loss is below the best by more than this.</summary>
    public double EarlyStoppingMinDelta { get; set; }
    /// <summary>With early stopping on, end with the weights of the best evaluation (default true).</summary>
    public bool RestoreBestWeights { get; set; } = true;

    /// <summary>
    /// Folder for checkpoints (trainable weights, optimizer state, step, RNG and data position); null = none. When set,
    /// a run cancelled through <see cref="FinetuneTrainer.CheckAlive"/> (OperationCanceledException, e.g. MLContext
    /// cancellation) also writes a checkpoint of the steps it completed before stopping, so it resumes from there.
    /// </summary>
    public string? CheckpointFolder { get; set; }
    /// <summary>Write a checkpoint every N optimizer steps (0 = never).</summary>
    public int CheckpointEveryNSteps { get; set; }
    /// <summary>Checkpoints kept (newest; at least 2, so a corrupt newest one can fall back).</summary>
    public int KeepCheckpoints { get; set; } = 2;
    /// <summary>Continue from the newest valid checkpoint in <see cref="CheckpointFolder"/> when there is one (default true).</summary>
    public bool ResumeFromCheckpoint { get; set; } = true;
    /// <summary>Apply <see cref="Runtime.MallocTuning.ApplyForTraining"/> (glibc only; env MLFINETUNE_MALLOC_TUNING=0 turns it off).</summary>
    public bool TuneMalloc { get; set; } = true;
}

/// <summary>Progress of a run, reported after every optimizer step.</summary>
public sealed record TrainingProgress(TrainingRecord Record, int TotalSteps)
{
    /// <summary>Tokens (prompt and completion, no padding) the step trained on, over all its micro-batches.</summary>
    public long Tokens { get; init; }
}

/// <summary>
/// The one training loop for every <see cref="IFinetuneMethod"/>: right-padded batches (cost linear in length, one
/// forward per batch), seeded shuffling, AdamW/SGD, schedules with warmup, global-norm clipping, gradient
/// accumulation, periodic validation, NaN/Inf detection, a dispose scope per step. Deterministic on CPU for a seed.
/// The method must be attached to the model before <see cref="Train"/>.
/// <para>Data parallelism (<see cref="Communicator"/>, e.g. under <c>mpirun -np N</c>): every rank runs this same loop
/// on the same data and order, takes its shard of each global batch, and sums its share of the objective's gradient
/// with the others' before the (identical) update, so N ranks train the model one process trains (up to float
/// summation order). Rank 0 alone writes checkpoints. In one process every collective is a no-op.</para>
/// </summary>
public sealed class FinetuneTrainer
{
    public FinetuneTrainer(TrainerOptions options, long padId)
    {
        Options = options ?? throw new ArgumentNullException(nameof(options));
        if (options.BatchSize < 1) throw new ArgumentOutOfRangeException(nameof(options), "BatchSize must be ≥ 1.");
        if (options.GradientAccumulationSteps < 1) throw new ArgumentOutOfRangeException(nameof(options), "GradientAccumulationSteps must be ≥ 1.");
        if (options.MaxSteps is < 1) throw new ArgumentOutOfRangeException(nameof(options), "MaxSteps must be ≥ 1.");
        if (options.MaxSteps is null && options.Epochs < 1) throw new ArgumentOutOfRangeException(nameof(options), "Epochs must be ≥ 1.");
        if (!(options.LearningRate > 0)) throw new ArgumentOutOfRangeException(nameof(options), "LearningRate must be > 0.");
        if (options.KlTopK < 1) throw new ArgumentOutOfRangeException(nameof(options), "KlTopK must be ≥ 1.");
        if (options.LogitsChunkRows is < 1) throw new ArgumentOutOfRangeException(nameof(options), "LogitsChunkRows must be ≥ 1.");
        PadId = padId;
        Objective = new FinetuneObjective(options.L2Penalty, options.KlPenalty, options.L2Squared) { LogitsChunkRows = options.LogitsChunkRows };
    }

    public TrainerOptions Options { get; }
    public long PadId { get; }
    public FinetuneObjective Objective { get; }
    public Action<TrainingProgress>? Progress { get; set; }
    /// <summary>
    /// Called before every step; throw to cancel (the estimator passes ML.NET's host CheckAlive). An
    /// OperationCanceledException stops at that step boundary and, with a CheckpointFolder, checkpoints first.
    /// </summary>
    public Action? CheckAlive { get; set; }
    /// <summary>Called after the step's gradients are complete and before clipping/update: (step, trainable parameters).</summary>
    public Action<int, IReadOnlyList<(string Name, Tensor Parameter)>>? GradientsReady { get; set; }
    /// <summary>Warnings (e.g. a corrupt checkpoint skipped on resume). Default: standard error.</summary>
    public Action<string>? Warning { get; set; } = m => Console.Error.WriteLine("warning: " + m);
    /// <summary>Called after a checkpoint is written: (completed steps, folder). Rank 0 only.</summary>
    public Action<int, string>? CheckpointWritten { get; set; }

    Communicator? _communicator;
    /// <summary>The data-parallel job (default <see cref="Communicator.World"/>: the ranks mpirun started, else one process).</summary>
    public Communicator Communicator { get => _communicator ??= Communicator.World; set => _communicator = value ?? throw new ArgumentNullException(nameof(value)); }

    /// <summary>
    /// Right-pads examples into one batch (pad id, mask 0, label −100). When a row holds packed sequences
    /// (<see cref="EncodedExample.SequenceLengths"/>), the batch carries their positions and sequence ids (<see cref="SequencePacking"/>).
    /// </summary>
    public static TrainingBatch Collate(IReadOnlyList<EncodedExample> examples, long padId, Device? device = null)
    {
        int b = examples.Count, t = examples.Max(e => e.Length);
        var ids = new long[b * t]; var mask = new long[b * t]; var labels = new long[b * t];
        for (int i = 0; i < b; i++)
            for (int j = 0; j < t; j++)
            {
                bool real = j < examples[i].Length;
                ids[i * t + j] = real ? examples[i].InputIds[j] : padId;
                mask[i * t + j] = real ? 1 : 0;
                labels[i * t + j] = real ? examples[i].Labels[j] : FinetuneObjective.IgnoreIndex;
            }
        Tensor Make(long[] a) { var x = torch.tensor(a, new long[] { b, t }); return device is null || device.type == DeviceType.CPU ? x : x.to(device); }
        var packing = examples.Any(e => e.IsPacked)
            ? SequencePacking.FromLengths(examples.Select(e => e.SequenceLengths).ToList(), examples.Select(e => e.Length).ToList(), t, device)
            : null;
        return new TrainingBatch(Make(ids), Make(mask), Make(labels)) { Packing = packing };
    }

    /// <summary>Total optimizer steps for a data set of <paramref name="count"/> examples.</summary>
    public int TotalSteps(int count)
    {
        if (Options.MaxSteps is int m) return m;
        int batches = (count + Options.BatchSize - 1) / Options.BatchSize;
        return Math.Max(1, (int)Math.Ceiling((double)batches * Options.Epochs / Options.GradientAccumulationSteps));
    }

    public TrainingHistory Train(CausalLM model, IFinetuneMethod method, IReadOnlyList<EncodedExample> train,
        IReadOnlyList<EncodedExample>? validation = null, IReadOnlyList<long[]>? referenceTexts = null)
    {
        ArgumentNullException.ThrowIfNull(model); ArgumentNullException.ThrowIfNull(method); ArgumentNullException.ThrowIfNull(train);
        if (train.Count == 0) throw new InvalidOperationException("The training data has no rows.");
        var device = model.Device;
        var comm = Communicator;
        if (Options.TuneMalloc) Runtime.MallocTuning.ApplyForTraining();
        torch.manual_seed(DataParallel.TorchSeed(Options.Seed, comm.Rank));
        var rng = new Random(unchecked((int)Options.Seed));
        var parameters = method.TrainableParameters;
        if (parameters.Count == 0) throw new InvalidOperationException($"Method '{method.Name}' has no trainable parameters; was Attach called?");
        int total = TotalSteps(train.Count);
        if (comm.IsDistributed)
            RankAgreement.CheckSameRun(comm, Options, method.Name, total, PadId, parameters, train, validation, Options.KlPenalty > 0 ? referenceTexts : null);

        var pretrained = Options.KlPenalty > 0 ? PretrainedModel.For(method, model) : null;
        var references = Options.KlPenalty > 0 ? PrepareReferences(model, pretrained!, referenceTexts, device) : new List<ReferenceBatch?>();
        bool checkpointing = model.GradientCheckpointing;
        model.GradientCheckpointing = Options.GradientCheckpointing;
        using var optimizer = FinetuneOptimizer.Create(Options.Optimizer, parameters, Options.WeightDecay,
            Options.AdamBeta1, Options.AdamBeta2, Options.AdamEpsilon, Options.Momentum);
        using var buckets = comm.IsDistributed ? new ParameterBuckets(comm, parameters) : null;
        var schedule = new LearningRateSchedule(Options.Schedule, Options.WarmupSteps, total);
        var history = new TrainingHistory();
        var order = new List<int>();
        int cursor = 0, shuffles = 0;
        void Reshuffle()
        {
            order = Enumerable.Range(0, train.Count).ToList();
            if (Options.Shuffle) for (int i = order.Count - 1; i > 0; i--) { int j = rng.Next(i + 1); (order[i], order[j]) = (order[j], order[i]); }
            cursor = 0;
            shuffles++;
        }
        IReadOnlyList<EncodedExample> NextBatch()
        {
            if (cursor >= order.Count) Reshuffle();
            var idx = order.Skip(cursor).Take(Options.BatchSize).Select(i => train[i]).ToList();
            cursor += Options.BatchSize;
            return idx;
        }

        var early = new EarlyStopping(Options, parameters);
        int startStep = 0;
        bool checkpoints = Options.CheckpointFolder != null && Options.CheckpointEveryNSteps > 0;
        if (Options.CheckpointFolder != null && Options.ResumeFromCheckpoint)
        {
            using var ck = CheckpointSharing.LoadLatest(comm, Options.CheckpointFolder, Warning);
            if (ck != null)
            {
                var st = ck.State;
                if (st.Seed != Options.Seed || st.Method != method.Name || st.Step > total)
                    throw new InvalidDataException($"checkpoint {ck.Folder} belongs to another run (seed {st.Seed}, method '{st.Method}', step {st.Step}); " +
                                                   $"this run: seed {Options.Seed}, method '{method.Name}', {total} steps. Use another CheckpointFolder or set ResumeFromCheckpoint = false.");
                CopyInto(parameters, ck.Trainable, "trainable");
                optimizer.SetState(ck.Optimizer);
                // The seeded RNG only shuffles: replaying the shuffles restores its state exactly.
                rng = new Random(unchecked((int)Options.Seed));
                for (int k = 0; k < st.Shuffles; k++) Reshuffle();
                order = st.Order.ToList(); cursor = st.Cursor; shuffles = st.Shuffles;
                RestoreTorchRng(st, comm);
                foreach (var r in TrainingHistory.FromCsv(st.HistoryCsv).Records) history.Add(r);
                early.Restore(st, ck.Best);
                startStep = st.Step;
                history.ResumedFromStep = st.Step;
            }
        }
        int lastCheckpoint = startStep;
        // Rank 0 alone writes checkpoints; they hold every rank's dropout stream (a collective, so every rank calls this).
        void SaveCheckpoint(int completed)
        {
            using var rs = torch.get_rng_state();
            var rngStates = comm.AllGather(rs.data<byte>().ToArray()).Select(Convert.ToBase64String).ToArray();
            lastCheckpoint = completed;
            if (!comm.IsRoot) return;
            var st = new CheckpointState
            {
                Step = completed, Seed = Options.Seed, Method = method.Name, Order = order.ToArray(), Cursor = cursor,
                Shuffles = shuffles, TorchRngState = rngStates[0], WorldSize = comm.Size, RankTorchRngStates = rngStates[1..],
                HistoryCsv = history.ToCsv(),
            };
            early.Save(st);
            using var optState = new DisposingDictionary(optimizer.GetState());
            string dir = TrainingCheckpoint.Save(Options.CheckpointFolder!, st, parameters.ToDictionary(p => p.Name, p => p.Parameter),
                optState.Items, early.BestWeights, Options.KeepCheckpoints);
            CheckpointWritten?.Invoke(completed, dir);
        }
        if (startStep == 0) buckets?.BroadcastFromRoot(); // identical starting weights on every rank, whatever their RNGs did
        try
        {
            model.train();
            for (int step = startStep; step < total; step++)
            {
                try { CheckAlive?.Invoke(); }
                catch (OperationCanceledException) when (Options.CheckpointFolder != null && step > lastCheckpoint)
                {
                    SaveCheckpoint(step); // a step boundary: the state is exactly that of a periodic checkpoint after `step` steps
                    throw;
                }
                using var scope = torch.NewDisposeScope();
                double lr = schedule.LearningRate(Options.LearningRate, step);
                optimizer.ZeroGrad();
                // This rank's share of the step's terms (summed over micro-batches): [total, CE, KL, L2, ‖θ−θ_p‖²]. CE and KL
                // are sums over its rows divided by the whole batch's counts and β·L2 is added on rank 0 only, so the ranks'
                // shares add up; L2 and the distance are rank 0's alone (other ranks compute them on another kernel path,
                // which may round differently), so every rank reports the same history.
                var sums = new double[5];
                long tokens = 0; // of the global batch (progress reports tokens/s of the whole job)
                int acc = Options.GradientAccumulationSteps;
                for (int micro = 0; micro < acc; micro++)
                {
                    var global = NextBatch();
                    tokens += global.Sum(e => (long)e.Length);
                    var shard = DataParallel.Shard(global, comm);
                    using var batch = shard.Count > 0 ? Collate(shard, PadId, device) : null;
                    var reference = references.Count > 0 ? references[(step * acc + micro) % references.Count] : null;
                    var terms = Objective.Compute(method, model, batch, reference, FinetuneObjective.CountTargets(global), includeL2: comm.IsRoot, pretrained);
                    if (terms.Total.requires_grad) (acc == 1 ? terms.Total : terms.Total.div(acc)).backward();
                    sums[0] += terms.Total.ToDouble(); sums[1] += terms.CrossEntropy.ToDouble(); sums[2] += terms.KL.ToDouble();
                    if (comm.IsRoot) { sums[3] += terms.L2.ToDouble(); sums[4] = terms.DistanceSquared.ToDouble(); }
                }
                buckets?.AllReduceGradients(sums); // the global gradient and terms on every rank
                if (!double.IsFinite(sums[0])) throw new FinetuneDivergedException(step, sums[0] / acc, "loss", Options.LearningRate, Options.GradientClipNorm);
                GradientsReady?.Invoke(step, parameters);
                double gradNorm = GradientNorm(parameters);
                if (!double.IsFinite(gradNorm)) throw new FinetuneDivergedException(step, gradNorm, "gradient norm", Options.LearningRate, Options.GradientClipNorm);
                optimizer.Step(lr, ClipScale(gradNorm, Options.GradientClipNorm)); // clipping folded into the update

                bool last = step == total - 1;
                double val = double.NaN;
                if (validation is { Count: > 0 } && (last || (Options.EvaluateEveryNSteps > 0 && (step + 1) % Options.EvaluateEveryNSteps == 0)))
                {
                    val = ValidationLoss(model, method, validation);
                    model.train();
                }
                var record = new TrainingRecord(step, sums[0] / acc, sums[1] / acc, sums[3] / acc, sums[2] / acc, Math.Sqrt(Math.Max(0, sums[4])), lr, gradNorm, val);
                history.Add(record);
                Progress?.Invoke(new TrainingProgress(record, total) { Tokens = tokens });
                bool stop = !double.IsNaN(val) && early.Observe(step, val);
                if (checkpoints && ((step + 1) % Options.CheckpointEveryNSteps == 0)) SaveCheckpoint(step + 1);
                if (stop) { history.EarlyStoppedAtStep = step; break; }
            }
            if (validation is { Count: > 0 } && early.BestStep >= 0)
            {
                history.BestStep = early.BestStep;
                history.BestValidationLoss = early.BestLoss;
                early.RestoreBest(); // no-op unless early stopping with RestoreBestWeights kept a snapshot
            }
            if (comm.IsDistributed) RankAgreement.CheckSameWeights(comm, parameters);
        }
        finally
        {
            early.Dispose();
            model.GradientCheckpointing = checkpointing;
            model.eval();
            foreach (var r in references) r?.Dispose();
            optimizer.ZeroGrad();
        }
        return history;
    }

    /// <summary>
    /// Restores this rank's dropout stream. A checkpoint of another world size has no stream for this rank: the data
    /// order, batches and objective do not depend on the world size, so the run continues, with fresh streams there.
    /// </summary>
    void RestoreTorchRng(CheckpointState st, Communicator comm)
    {
        string? state = comm.Rank == 0 ? st.TorchRngState
            : st.WorldSize == comm.Size && comm.Rank - 1 < st.RankTorchRngStates.Length ? st.RankTorchRngStates[comm.Rank - 1] : null;
        if (state is { Length: > 0 })
            using (var rs = torch.tensor(Convert.FromBase64String(state), dtype: ScalarType.Byte)) torch.set_rng_state(rs);
        else if (comm.Rank > 0) torch.manual_seed(DataParallel.TorchSeed(unchecked(Options.Seed + st.Step), comm.Rank));
        if (st.WorldSize != comm.Size && comm.IsRoot)
            Warning?.Invoke($"the checkpoint at step {st.Step} was written by {st.WorldSize} data-parallel rank(s) and resumes on {comm.Size}: " +
                            "data order, batches and objective are unchanged; dropout masks on ranks ≥ 1 come from new random streams");
    }

    static void CopyInto(IReadOnlyList<(string Name, Tensor Parameter)> parameters, IReadOnlyDictionary<string, Tensor> values, string what)
    {
        using var _ = torch.no_grad();
        foreach (var (name, p) in parameters)
        {
            if (!values.TryGetValue(name, out var v)) throw new InvalidDataException($"{what} tensor '{name}' missing from the checkpoint");
            if (!v.shape.SequenceEqual(p.shape)) throw new InvalidDataException($"{what} tensor '{name}' has shape [{string.Join(",", v.shape)}], expected [{string.Join(",", p.shape)}]");
            p.copy_(v);
        }
    }

    sealed class DisposingDictionary(IReadOnlyDictionary<string, Tensor> items) : IDisposable
    {
        public IReadOnlyDictionary<string, Tensor> Items { get; } = items;
        public void Dispose() { foreach (var t in Items.Values) t.Dispose(); }
    }

    /// <summary>Best-validation tracking, patience counting and the best weights (a CPU copy of the trainable parameters).</summary>
    sealed class EarlyStopping(TrainerOptions options, IReadOnlyList<(string Name, Tensor Parameter)> parameters) : IDisposable
    {
        Dictionary<string, Tensor>? _best;
        public double BestLoss { get; private set; } = double.PositiveInfinity;
        public int BestStep { get; private set; } = -1;
        public int Bad { get; private set; }
        public IReadOnlyDictionary<string, Tensor>? BestWeights => _best;
        bool Restores => options.EarlyStoppingPatience > 0 && options.RestoreBestWeights;

        /// <summary>Records an evaluation; true when the run should stop.</summary>
        public bool Observe(int step, double val)
        {
            if (val < BestLoss - options.EarlyStoppingMinDelta || BestStep < 0)
            {
                BestLoss = val; BestStep = step; Bad = 0;
                if (Restores) Snapshot();
                return false;
            }
            Bad++;
            return options.EarlyStoppingPatience > 0 && Bad >= options.EarlyStoppingPatience;
        }

        void Snapshot()
        {
            DisposeBest();
            using var _ = torch.no_grad();
            _best = parameters.ToDictionary(p => p.Name, p => p.Parameter.detach().cpu().clone().DetachFromDisposeScope());
        }

        public void RestoreBest()
        {
            if (_best != null) CopyInto(parameters, _best, "best");
        }

        public void Save(CheckpointState st) { st.BestValidationLoss = BestLoss; st.BestStep = BestStep; st.EvaluationsWithoutImprovement = Bad; }

        public void Restore(CheckpointState st, IReadOnlyDictionary<string, Tensor>? best)
        {
            BestLoss = st.BestValidationLoss; BestStep = st.BestStep; Bad = st.EvaluationsWithoutImprovement;
            DisposeBest();
            if (best != null) _best = best.ToDictionary(kv => kv.Key, kv => kv.Value.clone().DetachFromDisposeScope());
        }

        void DisposeBest() { if (_best != null) foreach (var t in _best.Values) t.Dispose(); _best = null; }
        public void Dispose() => DisposeBest();
    }

    /// <summary>‖g‖₂ over all gradients, accumulated in float64 (one fused pass on CPU; deterministic).</summary>
    public static double GradientNorm(IReadOnlyList<(string Name, Tensor Parameter)> parameters)
    {
        var grads = parameters.Select(p => p.Parameter.grad).Where(g => g is not null).Select(g => g!).ToList();
        if (grads.Count == 0) return 0;
        if (grads.All(FusedCpuKernels.IsAddressable)) return Math.Sqrt(FusedCpuKernels.SumOfSquares(grads));
        using var _ = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        return Math.Sqrt(grads.Select(g => g.to_type(ScalarType.Float64).square().sum()).Aggregate((a, b) => a.add(b)).ToDouble());
    }

    /// <summary>The factor that brings a gradient of norm <paramref name="norm"/> down to <paramref name="maxNorm"/> (1 when within it or off).</summary>
    public static double ClipScale(double norm, double? maxNorm) =>
        maxNorm is double m && m > 0 && double.IsFinite(norm) && norm > m ? m / (norm + 1e-6) : 1.0;

    /// <summary>‖g‖₂ over all parameters; scales gradients in place to <paramref name="maxNorm"/> when above it.</summary>
    public static double ClipGradients(IReadOnlyList<(string Name, Tensor Parameter)> parameters, double? maxNorm)
    {
        double norm = GradientNorm(parameters), scale = ClipScale(norm, maxNorm);
        if (scale != 1.0)
            using (torch.no_grad())
                foreach (var (_, p) in parameters) p.grad?.mul_(scale);
        return norm;
    }

    /// <summary>
    /// Mean CE over every completion token of the data (no_grad, eval mode). Under data parallelism the batches are dealt
    /// round-robin to the ranks and the sums are all-reduced: each batch is the one-process batch, every rank gets the result.
    /// </summary>
    public double ValidationLoss(CausalLM model, IFinetuneMethod method, IReadOnlyList<EncodedExample> data)
    {
        model.eval();
        using var _ = torch.no_grad();
        var comm = Communicator;
        var sums = new double[2]; // Σ −log p, targets
        for (int i = comm.Rank * Options.BatchSize; i < data.Count; i += comm.Size * Options.BatchSize)
        {
            using var scope = torch.NewDisposeScope();
            using var batch = Collate(data.Skip(i).Take(Options.BatchSize).ToList(), PadId, model.Device);
            var hidden = method.HiddenStates(model, batch.InputIds, batch.AttentionMask, batch.Packing);
            var (lp, mask) = FinetuneObjective.TargetLogProbs(model, hidden, batch.Labels, Options.LogitsChunkRows);
            sums[0] -= lp.sum().ToDouble();
            sums[1] += (long)mask.sum().ToDouble();
        }
        comm.AllReduce(sums);
        return sums[1] == 0 ? double.NaN : sums[0] / sums[1];
    }

    /// <summary>
    /// The reference batches (BatchSize texts each) with their position counts; with <see cref="KlReferenceMode.TopKCache"/>
    /// also the top-k cache of p_θp, computed here while θ = θ_p. Under data parallelism a rank keeps only its shard of
    /// each batch (null when it has none) with the whole batch's position count, like the training batches.
    /// </summary>
    private List<ReferenceBatch?> PrepareReferences(CausalLM model, PretrainedModel pretrained, IReadOnlyList<long[]>? texts, Device device)
    {
        if (texts is null || texts.Count == 0)
            throw new InvalidOperationException("KlPenalty > 0 needs reference texts (ReferenceTextData); none were given.");
        var list = new List<ReferenceBatch?>();
        for (int i = 0; i < texts.Count; i += Options.BatchSize)
        {
            var global = texts.Skip(i).Take(Options.BatchSize).ToList();
            var chunk = DataParallel.Shard(global, Communicator).Select(t => new EncodedExample(t, t)).ToList();
            if (chunk.Count == 0) { list.Add(null); continue; }
            var batch = Collate(chunk, PadId, device);
            batch.InputIds.DetachFromDisposeScope(); batch.AttentionMask.DetachFromDisposeScope(); batch.Labels.Dispose();
            list.Add(new ReferenceBatch(batch.InputIds, batch.AttentionMask) { PositionCount = global.Sum(t => (long)t.Length) });
        }
        if (Options.KlReference != KlReferenceMode.TopKCache) return list;
        var present = list.Where(r => r is not null).Select(r => r!).ToList();
        var caches = TopKLogProbs.Allocate(present.Select(r => r.AttentionMask.ne(0).sum().item<long>()).ToList(), Options.KlTopK, model.Config.VocabSize, device);
        for (int i = 0; i < present.Count; i++)
            caches[i].Fill(model, pretrained, present[i].InputIds, present[i].AttentionMask, Options.LogitsChunkRows);
        int next = 0;
        return list.Select(r => r is null ? null : r with { TopK = caches[next++] }).ToList();
    }
}
