namespace Lasp2.Research.Simulation;

/// <summary>Predicted bytes per rank of one training iteration, by part.</summary>
public sealed record MemoryEstimate(double Static, double Activations, double Logits, double AttentionSaved, double AttentionPeak)
{
    public double Total => Static + Activations + Logits + AttentionSaved + AttentionPeak;
}

/// <summary>
/// Analytic memory per rank (e = bytes per element, C = N / W local tokens, L layers, S = B H d^2 e one state):
/// <list type="bullet">
/// <item>Static: 16 bytes per parameter (bf16 weights and gradients, fp32 master weights and two Adam moments).</item>
/// <item>Activations saved for backward, per token per layer: 34 h (e / 2) for a transformer layer without the
/// attention-score term (Korthikanti et al. 2022, no recomputation); attention only: Q, K, V, O (4 H d e).</item>
/// <item>Logits: B C V (4 + e) (fp32 for the loss and the bf16 copy).</item>
/// <item>Attention, saved per layer (times L) and the peak of one layer's temporaries (once), per method:
/// lasp2: saved M_t and P_t per piece (2 P S), peak the gathered states and their fold (2 W P S);
/// lasp1: saved P_t per piece (P S), peak one message (S);
/// ring-*: peak one score block and its gradient (2 B H C^2 e) and three K,V blocks in flight (current, incoming, dK,dV accumulator);
/// allgather-cp: saved the gathered K,V (B Hkv N 2d e), peak the scores and their gradient (2 B H C N e) and the full dK,dV;
/// ulysses-*: saved Q, K, V on H/W heads over N tokens, peak the scores and their gradient (2 B (H/W) N^2 e).</item>
/// </list>
/// Not modelled: allocator caching and fragmentation, CUDA context and workspaces, the per-block states this
/// implementation keeps (GPU kernels recompute them).
/// </summary>
public static class MemoryModel
{
    public static MemoryEstimate Estimate(string method, LayerShape s, ModelSpec model, int layers)
    {
        double e = s.ElementBytes, c = s.Local, b = s.Batch, h = s.Heads, hkv = s.KvHeads, d = Math.Max(s.DimK, s.DimV);
        double w = s.WorldSize, n = s.Seq, pieces = Lasp2.Reference.SequenceLayout.PiecesPerRank(s.Layout);
        double state = s.StateBytes, keyValue = s.KeyValueBytes;
        double perTokenLayer = model.Hidden > 0 ? 34.0 * model.Hidden * e / 2 : 4 * h * d * e;
        var (saved, peak) = method switch
        {
            "lasp2" => (2 * pieces * state, 2 * w * pieces * state),
            "lasp1" => (pieces * state, state),
            "ring-linear" or "ring-softmax" => (0.0, 2 * b * h * c * c * e + 3 * keyValue),
            "allgather-cp" => (b * hkv * n * 2 * d * e, 2 * b * h * c * n * e + b * hkv * n * 2 * d * e),
            "ulysses-linear" or "ulysses-softmax" => (b * (h + 2 * hkv) / w * n * d * e, 2 * b * h / w * n * n * e),
            _ => throw new ArgumentException($"no memory model for method '{method}'.", nameof(method)),
        };
        return new MemoryEstimate(16.0 * model.Parameters(layers), layers * c * b * perTokenLayer,
                                  b * c * model.Vocab * (4 + e), layers * saved, peak);
    }
}
