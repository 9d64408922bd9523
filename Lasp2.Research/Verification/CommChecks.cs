using Lasp2.Reference;
using Lasp2.Research.Attention;
using Lasp2.Research.Comm;

namespace Lasp2.Research.Verification;

/// <summary>Measured against predicted calls and bytes of one collective kind on one rank (forward + backward).</summary>
public sealed record CommComparison(string Kind, long PredictedCalls, long MeasuredCalls, long PredictedSent, long MeasuredSent,
                                    long PredictedReceived, long MeasuredReceived)
{
    /// <summary>True when calls and bytes agree exactly.</summary>
    public bool Matches => PredictedCalls == MeasuredCalls && PredictedSent == MeasuredSent && PredictedReceived == MeasuredReceived;
}

/// <summary>
/// A distributed check's measured communication (<see cref="DistributedReport.Comm"/>, forward + backward on
/// one rank) next to <see cref="CommModel"/>'s prediction for the same shape, kind by kind.
/// </summary>
public static class CommChecks
{
    /// <summary>The model's shape of a check: softmax methods use Hkv KV heads and d_v = d_k (as DistributedChecks builds them).</summary>
    public static CommShape ShapeOf(DistributedCheckConfig config)
    {
        bool softmax = MethodRegistry.Get(config.Method).Supports.Kind == AttentionKind.Softmax;
        return new CommShape(config.Batch, config.Heads, softmax ? config.KvHeads : config.Heads, config.Seq, config.DimK,
                             softmax ? config.DimK : config.DimV, config.WorldSize, ElementSize(config.Dtype), config.Layout, config.Causal);
    }

    /// <summary>One row per kind either side has (rank <paramref name="rank"/>'s report).</summary>
    public static IReadOnlyList<CommComparison> Compare(DistributedReport report, int rank)
    {
        var prediction = CommModel.Predict(report.Config.Method, ShapeOf(report.Config), rank);
        var predicted = prediction.Forward.Calls.Concat(prediction.Backward.Calls)
            .GroupBy(c => c.Kind)
            .ToDictionary(g => g.Key, g => (Calls: g.Sum(c => c.Calls), Sent: g.Sum(c => c.BytesSent), Received: g.Sum(c => c.BytesReceived)));
        var measured = report.Comm.Where(r => r.Calls > 0).ToDictionary(r => r.Kind);
        return predicted.Keys.Union(measured.Keys).Order(StringComparer.Ordinal).Select(kind =>
        {
            var p = predicted.GetValueOrDefault(kind);
            var m = measured.GetValueOrDefault(kind);
            return new CommComparison(kind, p.Calls, m.Calls, p.Sent, m.BytesSent, p.Received, m.BytesReceived);
        }).ToList();
    }

    /// <summary>Predicted sequential communication steps, forward and backward.</summary>
    public static (long Forward, long Backward) Steps(DistributedCheckConfig config)
    {
        var prediction = CommModel.Predict(config.Method, ShapeOf(config), 0);
        return (prediction.Forward.SequentialSteps, prediction.Backward.SequentialSteps);
    }

    static int ElementSize(TorchSharp.torch.ScalarType dtype) => dtype switch
    {
        TorchSharp.torch.ScalarType.Float64 => 8,
        TorchSharp.torch.ScalarType.Float32 => 4,
        TorchSharp.torch.ScalarType.Float16 or TorchSharp.torch.ScalarType.BFloat16 => 2,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "dtype must be float64, float32, float16 or bfloat16."),
    };
}
