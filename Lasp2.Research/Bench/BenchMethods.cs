using Lasp2.Reference;
using Lasp2.Research.Attention;

namespace Lasp2.Research.Bench;

/// <summary>
/// The methods `lasp2 bench` runs: the single-device chunked kernel and every registered method, each
/// with its flop algorithm and its analytic communication (both stated by the method).
/// </summary>
public static class BenchMethods
{
    /// <summary>By name: "chunked" first, then the registry's methods in name order.</summary>
    public static IReadOnlyDictionary<string, BenchMethod> All()
    {
        var chunked = new SingleDeviceChunked();
        var methods = new Dictionary<string, BenchMethod>(StringComparer.Ordinal)
        {
            [chunked.Name] = new(chunked, chunked.Flops, SingleDevice: true),
        };
        foreach (var method in MethodRegistry.All)
            methods[method.Name] = new BenchMethod(method, method.Flops, (shape, elementSize) => Analytic(method, shape, elementSize));
        return methods;
    }

    /// <summary>Analytic bytes sent and received per iteration (forward + backward) by each rank, in rank order.</summary>
    public static IReadOnlyList<(long Sent, long Received)> Analytic(ISequenceParallelAttention method, BenchShape shape, int elementSize)
    {
        var commShape = new CommShape(shape.Batch, shape.Heads, shape.KvHeads, shape.SeqLen, shape.HeadDim, shape.HeadDim,
            shape.WorldSize, elementSize, Layout.Contiguous, shape.Causal);
        return Enumerable.Range(0, shape.WorldSize).Select(rank => CommModel.Predict(method, commShape, rank))
            .Select(p => (p.Forward.BytesSent + p.Backward.BytesSent, p.Forward.BytesReceived + p.Backward.BytesReceived)).ToList();
    }
}
