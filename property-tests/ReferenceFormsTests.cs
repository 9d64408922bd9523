using FsCheck.Xunit;
using Lasp2.Reference;
using TorchSharp;
using static TorchSharp.torch;

namespace Lasp2.PropertyTests;

/// <summary>
/// The chain of trust of the single-device references: the quadratic (left-product) form is the root;
/// every other form must equal it in outputs and in the gradients of q, k, v under a random dO.
/// float64, normwise relative tolerance 1e-10 (Compare.Float64Tolerance).
/// </summary>
[Properties(Arbitrary = [typeof(ReferenceArbitraries)], MaxTest = 60)]
public class ReferenceFormsTests
{
    /// <summary>Asserts that two forms agree in O, dQ, dK, dV.</summary>
    internal static void SameOutputsAndGradients(string label, Tensor dO, Func<Tensor[], Tensor> expected, Func<Tensor[], Tensor> actual,
                                        params Tensor[] inputs)
    {
        using var scope = NewDisposeScope();
        var (expectedOutput, expectedGrads) = Autograd.ForwardBackward(expected, dO, inputs);
        var (actualOutput, actualGrads) = Autograd.ForwardBackward(actual, dO, inputs);
        AssertClose.Tensors($"{label} O", expectedOutput, actualOutput);
        string[] names = ["dQ", "dK", "dV"];
        for (int i = 0; i < inputs.Length; i++)
            AssertClose.Tensors($"{label} {names[i]}", expectedGrads[i], actualGrads[i]);
    }

    [Property]
    public void RecurrentEqualsQuadraticCausal(LinearCase c)
    {
        using var scope = NewDisposeScope();
        var (q, k, v, dO) = c.Tensors();
        SameOutputsAndGradients("recurrent", dO,
            x => LinearAttention.Quadratic(x[0], x[1], x[2], causal: true, c.Decay, c.FeatureMap),
            x => LinearAttention.Recurrent(x[0], x[1], x[2], c.Decay, c.FeatureMap), q, k, v);
    }

    [Property]
    public void ChunkedEqualsQuadraticCausalForEveryBlockSize(LinearCase c)
    {
        using var scope = NewDisposeScope();
        var (q, k, v, dO) = c.Tensors();
        SameOutputsAndGradients($"chunked block={c.BlockSize}", dO,
            x => LinearAttention.Quadratic(x[0], x[1], x[2], causal: true, c.Decay, c.FeatureMap),
            x => LinearAttention.Chunked(x[0], x[1], x[2], c.BlockSize, causal: true, c.Decay, c.FeatureMap), q, k, v);
    }

    [Property]
    public void ChunkedEqualsQuadraticUnmasked(LinearCase c)
    {
        using var scope = NewDisposeScope();
        var (q, k, v, dO) = c.Tensors();
        SameOutputsAndGradients($"chunked unmasked block={c.BlockSize}", dO,
            x => LinearAttention.Quadratic(x[0], x[1], x[2], causal: false, featureMap: c.FeatureMap),
            x => LinearAttention.Chunked(x[0], x[1], x[2], c.BlockSize, causal: false, featureMap: c.FeatureMap), q, k, v);
    }

    [Property]
    public void RightProductEqualsQuadraticUnmasked(LinearCase c)
    {
        using var scope = NewDisposeScope();
        var (q, k, v, dO) = c.Tensors();
        SameOutputsAndGradients("right-product", dO,
            x => LinearAttention.Quadratic(x[0], x[1], x[2], causal: false, featureMap: c.FeatureMap),
            x => LinearAttention.RightProduct(x[0], x[1], x[2], c.FeatureMap), q, k, v);
    }

    /// <summary>
    /// No token sees the future: changing k and v from a cut position on leaves every earlier output
    /// row bitwise unchanged, in every causal linear form and in causal softmax.
    /// </summary>
    [Property]
    public void CausalRowsIgnoreTheFuture(LinearCase c)
    {
        using var scope = NewDisposeScope();
        var (q, k, v, _) = c.Tensors();
        long cut = c.Seed % c.Seq;                               // rows [0, cut) must not change
        var future = arange(c.Seq, dtype: int64) >= cut;         // [N]
        var mask = future.view(1, 1, -1, 1);
        var (k2, v2) = (k.masked_fill(mask, 7.0), v.masked_fill(mask, -3.0));
        var forms = new (string Name, Func<Tensor, Tensor, Tensor> Run)[]
        {
            ("quadratic", (kk, vv) => LinearAttention.Quadratic(q, kk, vv, causal: true, c.Decay, c.FeatureMap)),
            ("recurrent", (kk, vv) => LinearAttention.Recurrent(q, kk, vv, c.Decay, c.FeatureMap)),
            ("chunked", (kk, vv) => LinearAttention.Chunked(q, kk, vv, c.BlockSize, causal: true, c.Decay, c.FeatureMap)),
            ("softmax", (kk, vv) => SoftmaxAttention.Forward(q, kk, vv)),
        };
        foreach (var (name, run) in forms)
        {
            var before = run(k, v).narrow(2, 0, cut);
            var after = run(k2, v2).narrow(2, 0, cut);
            AssertClose.Tensors($"{name}: rows before {cut} after changing the future", before, after, relativeTolerance: 0.0);
        }
    }

    /// <summary>Every token sees itself: with one token, causal linear attention is (q . k) v.</summary>
    [Property]
    public void EveryTokenSeesItself(LinearCase c)
    {
        using var scope = NewDisposeScope();
        var (q, k, v, _) = (c with { Seq = 1 }).Tensors();
        var expected = (q * k).sum(-1, keepdim: true) * v;       // [B,H,1,Dv]
        AssertClose.Tensors("recurrent, one token", expected, LinearAttention.Recurrent(q, k, v, c.Decay));
        AssertClose.Tensors("chunked, one token", expected, LinearAttention.Chunked(q, k, v, c.BlockSize, true, c.Decay));
        AssertClose.Tensors("quadratic, one token", expected, LinearAttention.Quadratic(q, k, v, true, c.Decay));
    }

    [Property]
    public void SoftmaxRowsSumToOne(SoftmaxCase c)
    {
        using var scope = NewDisposeScope();
        var (q, k, _, _) = c.Tensors();
        var ones = torch.ones(c.Batch, c.KvHeads, c.Seq, 1, dtype: float64);
        // With V = 1 every output is the row sum of the attention probabilities.
        foreach (bool causal in new[] { true, false })
            AssertClose.Tensors($"row sums, causal={causal}", torch.ones(c.Batch, c.Heads, c.Seq, 1, dtype: float64),
                                SoftmaxAttention.Forward(q, k, ones, causal));
    }

    [Property]
    public void GroupedQueryAttentionEqualsRepeatedKvHeads(SoftmaxCase c)
    {
        using var scope = NewDisposeScope();
        var (q, k, v, dO) = c.Tensors();
        foreach (bool causal in new[] { true, false })
            SameOutputsAndGradients($"GQA causal={causal}", dO,
                x => SoftmaxAttention.Forward(x[0], SoftmaxAttention.RepeatKv(x[1], c.Groups), SoftmaxAttention.RepeatKv(x[2], c.Groups), causal),
                x => SoftmaxAttention.Forward(x[0], x[1], x[2], causal), q, k, v);
    }

    /// <summary>Explicit global positions 0..N-1 give the same causal softmax as the implicit mask.</summary>
    [Property]
    public void SoftmaxPositionsMatchImplicitCausalMask(SoftmaxCase c)
    {
        using var scope = NewDisposeScope();
        var (q, k, v, _) = c.Tensors();
        var positions = arange(c.Seq, dtype: int64);
        AssertClose.Tensors("softmax with positions", SoftmaxAttention.Forward(q, k, v),
                            SoftmaxAttention.Forward(q, k, v, queryPositions: positions, keyPositions: positions));
    }
}
