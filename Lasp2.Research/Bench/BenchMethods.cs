using Lasp2.Reference;
using Lasp2.Research.Attention;

namespace Lasp2.Research.Bench;

/// <summary>
/// The methods `lasp2 bench` runs: the single-device chunked kernel and every registered method, each
/// with its flop algorithm and the analytic communication of <see cref="CommModel"/> where it has one.
/// </summary>
public static class BenchMethods
{
    /// <summary>By name: "chunked" first, then the registry's methods in name order.</summary>
    public static IReadOnlyDictionary<string, BenchMethod> All()
    {
        var methods = new Dictionary<string, BenchMethod>(StringComparer.Ordinal)
        {
            [BenchTargets.Chunked] = new(new SingleDeviceChunked(), FlopAlgorithm.ChunkedLinear, SingleDevice: true),
        };
        foreach (var method in MethodRegistry.All)
            methods[method.Name] = new BenchMethod(method, AlgorithmOf(method),
                CommModel.Methods.Contains(method.Name) ? (shape, elementSize) => Analytic(method.Name, shape, elementSize) : null);
        return methods;
    }

    /// <summary>
    /// What a method computes: LASP-1 and LASP-2 run the chunked kernel; the other linear methods
    /// (Ring, Ulysses) the left product over token pairs; softmax methods softmax attention.
    /// </summary>
    public static FlopAlgorithm AlgorithmOf(ISequenceParallelAttention method) =>
        method.Supports.Kind == AttentionKind.Softmax ? FlopAlgorithm.Softmax
        : method.Name is "lasp1" or "lasp2" or BenchTargets.Chunked ? FlopAlgorithm.ChunkedLinear
        : FlopAlgorithm.LeftProductLinear;

    /// <summary>Analytic bytes sent and received per iteration (forward + backward) by each rank, in rank order.</summary>
    public static IReadOnlyList<(long Sent, long Received)> Analytic(string method, BenchShape shape, int elementSize)
    {
        var commShape = new CommShape(shape.Batch, shape.Heads, shape.KvHeads, shape.SeqLen, shape.HeadDim, shape.HeadDim,
            shape.WorldSize, elementSize, Layout.Contiguous, shape.Causal);
        return Enumerable.Range(0, shape.WorldSize).Select(rank => CommModel.Predict(method, commShape, rank))
            .Select(p => (p.Forward.BytesSent + p.Backward.BytesSent, p.Forward.BytesReceived + p.Backward.BytesReceived)).ToList();
    }
}
