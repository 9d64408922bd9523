using Lasp2.Reference;
using TorchSharp;
using static TorchSharp.torch;

namespace Lasp2.Research.Verification;

/// <summary>Shape, dtype and seed of a verification run. The defaults are deliberately awkward (N = 97 is prime).</summary>
public sealed record ReferenceCheckConfig(
    int Batch = 2, int Heads = 4, int KvHeads = 2, int Seq = 97, int DimK = 16, int DimV = 12,
    double Decay = 0.9, ScalarType Dtype = ScalarType.Float64, long Seed = 20250211)
{
    /// <summary>Per-head decays spread below <see cref="Decay"/> so heads differ (lambda_h = Decay^(1 + h/H)).</summary>
    public double[] HeadDecays() => Enumerable.Range(0, Heads).Select(h => Math.Pow(Decay, 1.0 + (double)h / Heads)).ToArray();
}

/// <summary>
/// The reference forms checked against each other (the chain of trust: the quadratic form is the root,
/// every other form is compared with it, outputs and gradients of q, k, v under a random dO).
/// </summary>
public static class ReferenceChecks
{
    /// <summary>Runs every check of the reference forms.</summary>
    public static IReadOnlyList<CheckResult> Run(ReferenceCheckConfig config)
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator((ulong)config.Seed);  // using: alive until the last randn returned (TorchSharp does not keep it alive across the native call)
        Tensor Random(params long[] shape) => randn(shape, dtype: config.Dtype, generator: generator);
        var (b, h, n) = ((long)config.Batch, (long)config.Heads, (long)config.Seq);
        var q = Random(b, h, n, config.DimK);
        var k = Random(b, h, n, config.DimK);
        var v = Random(b, h, n, config.DimV);
        var dO = Random(b, h, n, config.DimV);
        var decay = config.HeadDecays();
        double tolerance = Compare.ToleranceFor(config.Dtype);
        var results = new List<CheckResult>();

        void Pair(string name, Func<Tensor[], Tensor> expected, Func<Tensor[], Tensor> actual, Tensor cotangent, params Tensor[] inputs)
        {
            var (eo, eg) = Autograd.ForwardBackward(expected, cotangent, inputs);
            var (ao, ag) = Autograd.ForwardBackward(actual, cotangent, inputs);
            results.Add(CheckResult.Of(name, "O", eo, ao, tolerance));
            string[] names = ["dQ", "dK", "dV"];
            for (int i = 0; i < eg.Length; i++)
                results.Add(CheckResult.Of(name, names[i], eg[i], ag[i], tolerance));
        }

        Func<Tensor[], Tensor> quadratic = x => LinearAttention.Quadratic(x[0], x[1], x[2], causal: true, decay: decay);
        Pair("recurrent vs quadratic (causal, decay)", quadratic,
             x => LinearAttention.Recurrent(x[0], x[1], x[2], decay), dO, q, k, v);
        foreach (int block in new[] { 1, 16, 30, (int)n, 128 })
            Pair($"chunked B={block} vs quadratic (causal, decay)", quadratic,
                 x => LinearAttention.Chunked(x[0], x[1], x[2], block, causal: true, decay: decay), dO, q, k, v);
        Pair("chunked B=16 vs quadratic (causal, elu+1)",
             x => LinearAttention.Quadratic(x[0], x[1], x[2], featureMap: FeatureMap.EluPlusOne),
             x => LinearAttention.Chunked(x[0], x[1], x[2], 16, featureMap: FeatureMap.EluPlusOne), dO, q, k, v);
        Func<Tensor[], Tensor> unmasked = x => LinearAttention.Quadratic(x[0], x[1], x[2], causal: false);
        Pair("right-product vs quadratic (no mask)", unmasked,
             x => LinearAttention.RightProduct(x[0], x[1], x[2]), dO, q, k, v);
        Pair("chunked B=30 vs quadratic (no mask)", unmasked,
             x => LinearAttention.Chunked(x[0], x[1], x[2], 30, causal: false), dO, q, k, v);

        long groups = h / config.KvHeads;
        var kvK = Random(b, config.KvHeads, n, config.DimK);
        var kvV = Random(b, config.KvHeads, n, config.DimK);
        var softDO = Random(b, h, n, config.DimK);
        Pair($"softmax GQA (h_kv={config.KvHeads}) vs repeated-KV MHA (causal)",
             x => SoftmaxAttention.Forward(x[0], SoftmaxAttention.RepeatKv(x[1], groups), SoftmaxAttention.RepeatKv(x[2], groups)),
             x => SoftmaxAttention.Forward(x[0], x[1], x[2]), softDO, q, kvK, kvV);
        return results;
    }
}
