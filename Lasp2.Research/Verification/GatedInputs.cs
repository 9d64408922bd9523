using Lasp2.Reference;
using TorchSharp;
using static TorchSharp.torch;

namespace Lasp2.Research.Verification;

/// <summary>Where the gates a_t = sigmoid(z) of a generated problem sit.</summary>
public enum GateRegime
{
    /// <summary>z ~ N(2, 1): a around 0.88 (a typical trained forget gate).</summary>
    Moderate,
    /// <summary>z ~ N(12, 1): a within 1e-5 of 1 (long memory).</summary>
    NearOne,
    /// <summary>z ~ N(-12, 1): a near 1e-5 (the state is almost reset at every token).</summary>
    NearZero,
    /// <summary>z ~ N(0, 8^2): every token somewhere between near 0 and near 1.</summary>
    Wide,
}

/// <summary>
/// Random inputs of a gated recurrence, made the way models make them: the log-gate is logsigmoid of a projection
/// (z above), beta = 2 sigmoid of another (in (0, 2)), keys L2-normalised for the delta rule; q, v and the
/// cotangent dO standard normal. The same seed gives the same tensors on every rank.
/// </summary>
public static class GatedInputs
{
    /// <summary>
    /// q, k [B,H,N,Dk], v and dO [B,H,N,Dv], and the gates of <paramref name="recurrence"/>: "g" (log-gate) and
    /// "beta" when it reads them. The decay recurrence takes its per-head <paramref name="lambda"/> (default
    /// 0.9^(1 + h/H)) as a constant log-gate.
    /// </summary>
    public static Dictionary<string, Tensor> Random(Recurrence recurrence, int batch, int heads, long seq, int dimK, int dimV,
                                                    ScalarType dtype, long seed, GateRegime regime = GateRegime.Wide,
                                                    double[]? lambda = null)
    {
        ArgumentNullException.ThrowIfNull(recurrence);
        using var generator = new Generator((ulong)seed);  // using: alive until the last randn returned (TorchSharp does not keep it alive across the native call)
        Tensor Normal(params long[] shape) => randn(shape, dtype: dtype, generator: generator);
        var q = Normal(batch, heads, seq, dimK);
        var k = Normal(batch, heads, seq, dimK);
        if (recurrence.Beta) k = k / (k * k).sum(-1, keepdim: true).sqrt();                  // unit keys, as DeltaNet models use
        var inputs = new Dictionary<string, Tensor> { ["q"] = q, ["k"] = k, ["v"] = Normal(batch, heads, seq, dimV) };
        if (recurrence == Recurrence.Decay)
            inputs["g"] = Gates.ConstantDecay(lambda ?? DefaultDecay(heads), batch, seq, dtype).LogGate!;
        else if (recurrence.Gate != GateShape.None)
        {
            long[] shape = recurrence.Gate == GateShape.PerKey ? [batch, heads, seq, dimK] : [batch, heads, seq];
            var (mean, spread) = regime switch
            {
                GateRegime.Moderate => (2.0, 1.0),
                GateRegime.NearOne => (12.0, 1.0),
                GateRegime.NearZero => (-12.0, 1.0),
                _ => (0.0, 8.0),
            };
            using var meanTensor = tensor(mean, dtype: dtype);
            using var spreadTensor = tensor(spread, dtype: dtype);
            inputs["g"] = nn.functional.logsigmoid((Normal(shape) * spreadTensor).Plus(meanTensor));  // log a = logsigmoid(z)
        }
        if (recurrence.Beta)
        {
            using var two = tensor(2.0, dtype: dtype);
            inputs["beta"] = Normal(batch, heads, seq).sigmoid() * two;                         // beta in (0, 2)
        }
        inputs["dO"] = Normal(batch, heads, seq, dimV);
        return inputs;
    }

    /// <summary>The gates of <paramref name="recurrence"/> from a dictionary made by <see cref="Random"/> (or its shards).</summary>
    public static Gates GatesOf(Recurrence recurrence, IReadOnlyDictionary<string, Tensor> inputs) =>
        new(recurrence, inputs.GetValueOrDefault("g"), inputs.GetValueOrDefault("beta"));

    /// <summary>lambda_h = 0.9^(1 + h/H): every head decays differently.</summary>
    public static double[] DefaultDecay(int heads) => Enumerable.Range(0, heads).Select(h => Math.Pow(0.9, 1.0 + (double)h / heads)).ToArray();
}
