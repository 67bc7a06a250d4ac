using ML.Finetune.Distributed;
using ML.Finetune.Models;
using ML.Finetune.Tests.Shared;
using ML.Finetune.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Tests.Distributed;

/// <summary>In-process parts of data parallelism: sharding, launcher detection, the objective's shard terms, gradient buckets.</summary>
public sealed class DataParallelUnitTests
{
    [Theory]
    [InlineData(4, 2, new[] { 0, 2, 2, 2 })]
    [InlineData(5, 2, new[] { 0, 3, 3, 2 })]
    [InlineData(1, 2, new[] { 0, 1, 1, 0 })]
    [InlineData(7, 3, new[] { 0, 3, 3, 2, 5, 2 })]
    public void ShardsAreContiguousBalancedAndCoverTheBatch(int count, int size, int[] startCount)
    {
        for (int r = 0; r < size; r++) Assert.Equal((startCount[2 * r], startCount[2 * r + 1]), DataParallel.ShardRange(count, r, size));
        for (int n = 0; n < 30; n++)
            for (int s = 1; s < 6; s++)
            {
                var covered = Enumerable.Range(0, s).SelectMany(r => { var (a, c) = DataParallel.ShardRange(n, r, s); return Enumerable.Range(a, c); });
                Assert.Equal(Enumerable.Range(0, n), covered);
            }
        Assert.Same(Array.Empty<int>(), DataParallel.Shard(Array.Empty<int>(), Communicator.SingleProcess));
    }

    [Fact]
    public void DetectsTheLauncherFromItsEnvironmentOnly()
    {
        MpiLaunch? Detect(params (string, string)[] vars) => MpiLaunch.Detect(k => vars.FirstOrDefault(v => v.Item1 == k).Item2);
        Assert.Null(Detect());
        Assert.Null(Detect(("OMPI_COMM_WORLD_SIZE", "1"), ("OMPI_COMM_WORLD_RANK", "0"))); // mpirun -np 1: one process, MPI never loaded
        var ompi = Detect(("OMPI_COMM_WORLD_SIZE", "4"), ("OMPI_COMM_WORLD_RANK", "3"), ("OMPI_COMM_WORLD_LOCAL_RANK", "1"))!;
        Assert.Equal((4, 3, 1, "libmpi.so.40"), (ompi.Size, ompi.Rank, ompi.LocalRank, ompi.Library));
        Assert.Null(Detect(("PMIX_RANK", "2"))!.Size); // srun --mpi=pmix: the size comes from MPI itself
        Assert.Equal("/opt/ompi/lib/libmpi.so", Detect(("PMI_SIZE", "2"), ("PMI_RANK", "1"), ("MLFINETUNE_MPI_LIBRARY", "/opt/ompi/lib/libmpi.so"))!.Library);
        Assert.Same(Communicator.SingleProcess, Communicator.FromEnvironment(_ => null));
    }

    [Fact]
    public void LaunchedByMpirunWithoutOpenMpiIsAClearError()
    {
        var vars = new Dictionary<string, string> { ["OMPI_COMM_WORLD_SIZE"] = "2", ["OMPI_COMM_WORLD_RANK"] = "0", ["MLFINETUNE_MPI_LIBRARY"] = "/nonexistent/libmpi.so.40" };
        var e = Assert.Throws<InvalidOperationException>(() => Communicator.FromEnvironment(k => vars.GetValueOrDefault(k)));
        Assert.Contains("OMPI_COMM_WORLD_SIZE=2", e.Message);
        Assert.Contains("/nonexistent/libmpi.so.40", e.Message);
        Assert.Contains("apt-get install openmpi-bin libopenmpi-dev", e.Message);
    }

    [Fact]
    public void CollectiveTimeLimitComesFromTheEnvironment()
    {
        Assert.Equal(TimeSpan.FromMinutes(10), Communicator.ParseTimeout(null));
        Assert.Null(Communicator.ParseTimeout("0"));
        Assert.Equal(TimeSpan.FromSeconds(2.5), Communicator.ParseTimeout("2.5"));
        var e = Assert.Throws<InvalidOperationException>(() => Communicator.ParseTimeout("ten"));
        Assert.Contains("MLFINETUNE_MPI_TIMEOUT='ten'", e.Message);
    }

    [Fact]
    public void ShardTermsOverGlobalCountsAddUpToTheWholeBatchObjective()
    {
        // CE and KL of a batch split 2 + 1 (padded differently), each shard divided by the whole batch's counts, add up to
        // the whole batch's mean, in value and in gradient: what the ranks' all-reduce relies on.
        torch.set_num_threads(1);
        var (model, method) = TinyTrainingRun.Create();
        using var _m = model; using var _f = method;
        model.eval(); // no dropout: the same function on every split
        var data = new List<EncodedExample>
        {
            new([1, 5, 6, 7, 2], [-100, -100, -100, 7, 2]),
            new([1, 9, 2], [-100, -100, 2]),
            new([1, 4, 4, 4, 8, 9, 2], [-100, -100, -100, 8, 9, 9, 2]),
        };
        var texts = new List<long[]> { new long[] { 1, 3, 5, 7 }, new long[] { 1, 9 }, new long[] { 1, 2, 3, 4, 5, 6 } };
        var objective = new FinetuneObjective(l2Penalty: 0, klPenalty: 0.5);
        ReferenceBatch Reference(IReadOnlyList<long[]> chunk, long? count)
        {
            using var b = FinetuneTrainer.Collate(chunk.Select(t => new EncodedExample(t, t)).ToList(), 0);
            return new ReferenceBatch(b.InputIds.clone(), b.AttentionMask.clone()) { PositionCount = count }; // p_θp on the fly
        }
        (double Loss, Tensor[] Grads) Run(Func<IReadOnlyList<Tensor>> losses)
        {
            foreach (var (_, p) in method.TrainableParameters) p.grad = null;
            double total = 0;
            foreach (var l in losses()) { l.backward(); total += l.ToDouble(); }
            return (total, method.TrainableParameters.Select(p => p.Parameter.grad!.clone()).ToArray());
        }
        using var scope = NewDisposeScope();
        // Nudge θ off θ_p so that KL has a gradient.
        using (no_grad()) foreach (var (_, p) in method.TrainableParameters) p.add_(randn_like(p).mul(0.01));
        var whole = Run(() =>
        {
            using var b = FinetuneTrainer.Collate(data, 0);
            return [objective.Compute(method, model, b, Reference(texts, null)).Total];
        });
        long targets = FinetuneObjective.CountTargets(data), positions = texts.Sum(t => (long)t.Length);
        Assert.Equal(2 + 1 + 4, targets);
        var shards = Run(() => new[] { (0, 2), (2, 1) }.Select(s =>
        {
            using var b = FinetuneTrainer.Collate(data.GetRange(s.Item1, s.Item2), 0);
            return objective.Compute(method, model, b, Reference(texts.GetRange(s.Item1, s.Item2), positions), targets).Total;
        }).ToList());
        Assert.Equal(whole.Loss, shards.Loss, 1e-6);
        for (int i = 0; i < whole.Grads.Length; i++)
            Assert.True(whole.Grads[i].allclose(shards.Grads[i], rtol: 1e-4, atol: 1e-7), method.TrainableParameters[i].Name);
        // A rank with no rows of the batch contributes nothing (and needs no forward pass).
        var empty = objective.Compute(method, model, null, null, targets, includeL2: false);
        Assert.Equal(0.0, empty.Total.ToDouble());
        Assert.False(empty.Total.requires_grad);
    }

    /// <summary>A stand-in for one peer rank whose gradient is 1 everywhere: the all-reduce adds it to ours.</summary>
    sealed class OnesPeer(int parameters) : Communicator
    {
        public override int Rank => 0;
        public override int Size => 2;
        public override int LocalRank => 0;
        public int Calls;
        public override void AllReduce(Span<double> values, ReduceOperation op)
        {
            Calls++;
            for (int i = 0; i < values.Length; i++) values[i] += i >= values.Length - parameters ? 1 : 10; // flags, then scalars
        }
        public override void AllReduce(Span<float> values, ReduceOperation op) { Calls++; for (int i = 0; i < values.Length; i++) values[i] += 1; }
        public override void AllReduce(Span<long> values, ReduceOperation op) => throw new NotSupportedException();
        public override void Broadcast(Span<byte> data, int root) => throw new NotSupportedException();
        public override byte[][] AllGather(ReadOnlySpan<byte> mine) => throw new NotSupportedException();
        public override void Barrier() { }
        public override CommunicationStats Stats => new(Calls, 0, 0);
        public override void ResetStats() { }
    }

    [Fact]
    public void GradientBucketsSumEveryGradientInAFewCallsAndCreateMissingOnes()
    {
        using var scope = NewDisposeScope();
        var ps = new List<(string, Tensor)>
        {
            ("a", randn(3, 4).requires_grad_()), ("b", randn(5).requires_grad_()), ("c", randn(2, 2).requires_grad_()), ("d", randn(7).requires_grad_()),
        };
        var before = new Dictionary<string, Tensor>();
        foreach (var (name, p) in ps.Where(p => p.Item1 != "c")) { p.grad = randn_like(p); before[name] = p.grad.clone(); }
        var peer = new OnesPeer(ps.Count);
        using var buckets = new ParameterBuckets(peer, ps, bucketElements: 12);
        Assert.Equal(3, buckets.BucketCount); // [a] [b c] [d]: at most 12 elements each, parameters never split
        Assert.Equal(4L * (12 + 5 + 4 + 7), buckets.Bytes);
        var scalars = new double[] { 1, 2, 3 };
        buckets.AllReduceGradients(scalars);
        Assert.Equal(new double[] { 11, 12, 13 }, scalars);
        Assert.Equal(1 + 3, peer.Calls); // one for the scalars and gradient flags, one per bucket
        foreach (var (name, p) in ps)
            Assert.True(p.grad!.allclose(name == "c" ? ones_like(p) : before[name].add(1)), name); // c had no gradient here, the peer had
    }
}
