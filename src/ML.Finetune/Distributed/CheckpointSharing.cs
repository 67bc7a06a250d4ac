using System.Text.Json;
using System.Text.Json.Serialization;
using ML.Finetune.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Distributed;

/// <summary>
/// Resume under data parallelism: rank 0 alone reads the checkpoint folder (it alone writes it) and broadcasts what it
/// loaded, so the other ranks need no shared file system and every rank resumes from the very same bytes. A failure
/// on rank 0 (no usable checkpoint, unreadable files) is raised on every rank.
/// </summary>
internal static class CheckpointSharing
{
    sealed record TensorInfo(string Name, ScalarType DType, long[] Shape);
    sealed record Header(string? Error, string? Folder, CheckpointState? State, TensorInfo[]? Trainable, TensorInfo[]? Optimizer, TensorInfo[]? Best);

    static readonly JsonSerializerOptions Json = new() { NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals };

    /// <summary><see cref="TrainingCheckpoint.LoadLatest"/> on rank 0, then broadcast; the same result on every rank.</summary>
    public static TrainingCheckpoint.Loaded? LoadLatest(Communicator comm, string folder, Action<string>? warn)
    {
        if (!comm.IsDistributed) return TrainingCheckpoint.LoadLatest(folder, warn);
        TrainingCheckpoint.Loaded? loaded = null;
        Header header;
        if (comm.IsRoot)
        {
            try
            {
                loaded = TrainingCheckpoint.LoadLatest(folder, warn);
                header = loaded is null ? new Header(null, null, null, null, null, null)
                    : new Header(null, loaded.Folder, loaded.State, Infos(loaded.Trainable), Infos(loaded.Optimizer), loaded.Best is null ? null : Infos(loaded.Best));
            }
            catch (Exception e) when (e is InvalidDataException or IOException or UnauthorizedAccessException)
            {
                header = new Header(e.Message, null, null, null, null, null);
            }
        }
        else header = null!;
        header = JsonSerializer.Deserialize<Header>(BroadcastBytes(comm, comm.IsRoot ? JsonSerializer.SerializeToUtf8Bytes(header, Json) : null), Json)!;
        if (header.Error != null) { loaded?.Dispose(); throw new InvalidDataException(header.Error); }
        if (header.State is null) return null;
        var trainable = BroadcastTensors(comm, header.Trainable!, loaded?.Trainable);
        var optimizer = BroadcastTensors(comm, header.Optimizer!, loaded?.Optimizer);
        var best = header.Best is null ? null : BroadcastTensors(comm, header.Best, loaded?.Best);
        return loaded ?? new TrainingCheckpoint.Loaded(header.Folder!, header.State, trainable, optimizer, best);
    }

    static TensorInfo[] Infos(Dictionary<string, Tensor> tensors) =>
        tensors.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => new TensorInfo(kv.Key, kv.Value.dtype, kv.Value.shape)).ToArray();

    /// <summary>Rank 0's byte array on every rank (its length first).</summary>
    public static byte[] BroadcastBytes(Communicator comm, byte[]? rootData)
    {
        var length = new byte[8];
        if (comm.IsRoot) BitConverter.TryWriteBytes(length, (long)rootData!.Length);
        comm.Broadcast(length);
        var data = comm.IsRoot ? rootData! : new byte[BitConverter.ToInt64(length)];
        comm.Broadcast(data);
        return data;
    }

    /// <summary>Rank 0's tensors (CPU, contiguous) on every rank; the other ranks allocate them from the header.</summary>
    static Dictionary<string, Tensor> BroadcastTensors(Communicator comm, TensorInfo[] infos, Dictionary<string, Tensor>? root)
    {
        var result = new Dictionary<string, Tensor>();
        foreach (var info in infos)
        {
            var t = root?[info.Name] ?? torch.empty(info.Shape, dtype: info.DType).DetachFromDisposeScope();
            using var flat = t.view(-1);
            long chunk = (1L << 30) / Math.Max(1, t.element_size()); // a Span's length is an int
            for (long start = 0; start < t.numel(); start += chunk)
                using (var part = flat.narrow(0, start, Math.Min(chunk, t.numel() - start))) comm.Broadcast(part.bytes);
            result[info.Name] = t;
        }
        return result;
    }
}
