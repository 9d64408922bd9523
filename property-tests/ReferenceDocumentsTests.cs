using FsCheck.Xunit;
using Lasp2.Reference;
using Xunit;
using static TorchSharp.torch;

namespace Lasp2.PropertyTests;

/// <summary>
/// Packed documents in the single-device references: every form given document boundaries equals running
/// each document alone and concatenating (the root of trust is the per-document split itself), in O, dQ, dK,
/// dV; float64 at 1e-10. Plus the validation of the boundaries.
/// </summary>
[Properties(Arbitrary = [typeof(PackedArbitraries)], MaxTest = 25)]
public class ReferenceDocumentsTests
{
    static void EqualsPerDocument(string label, DocumentBoundaries documents, Func<Tensor[], Tensor> packed,
                                  Func<Tensor[], Tensor> alone, Tensor dO, params Tensor[] inputs) =>
        ReferenceFormsTests.SameOutputsAndGradients(label, dO, x => PerDocument.Run(documents, alone, x), packed, inputs);

    [Property]
    public void EveryLinearFormEqualsEachDocumentAlone(PackedLinearCase c)
    {
        using var scope = NewDisposeScope();
        var (p, docs) = (c.Problem, c.Documents);
        var (q, k, v, dO) = p.Tensors();
        EqualsPerDocument("quadratic causal", docs,
            x => LinearAttention.Quadratic(x[0], x[1], x[2], true, p.Decay, p.FeatureMap, docs),
            x => LinearAttention.Quadratic(x[0], x[1], x[2], true, p.Decay, p.FeatureMap), dO, q, k, v);
        EqualsPerDocument("quadratic unmasked", docs,
            x => LinearAttention.Quadratic(x[0], x[1], x[2], false, null, p.FeatureMap, docs),
            x => LinearAttention.Quadratic(x[0], x[1], x[2], false, null, p.FeatureMap), dO, q, k, v);
        EqualsPerDocument("right product", docs,
            x => LinearAttention.RightProduct(x[0], x[1], x[2], p.FeatureMap, docs),
            x => LinearAttention.RightProduct(x[0], x[1], x[2], p.FeatureMap), dO, q, k, v);
        EqualsPerDocument("recurrent", docs,
            x => LinearAttention.Recurrent(x[0], x[1], x[2], p.Decay, p.FeatureMap, docs),
            x => LinearAttention.Recurrent(x[0], x[1], x[2], p.Decay, p.FeatureMap), dO, q, k, v);
        EqualsPerDocument($"chunked causal block={p.BlockSize}", docs,
            x => LinearAttention.Chunked(x[0], x[1], x[2], p.BlockSize, true, p.Decay, p.FeatureMap, docs),
            x => LinearAttention.Chunked(x[0], x[1], x[2], p.BlockSize, true, p.Decay, p.FeatureMap), dO, q, k, v);
        EqualsPerDocument($"chunked unmasked block={p.BlockSize}", docs,
            x => LinearAttention.Chunked(x[0], x[1], x[2], p.BlockSize, false, null, p.FeatureMap, docs),
            x => LinearAttention.Chunked(x[0], x[1], x[2], p.BlockSize, false, null, p.FeatureMap), dO, q, k, v);
    }

    [Property]
    public void SoftmaxEqualsEachDocumentAlone(PackedSoftmaxCase c)
    {
        using var scope = NewDisposeScope();
        var docs = c.Documents;
        var (q, k, v, dO) = c.Problem.Tensors();
        foreach (bool causal in new[] { true, false })
            EqualsPerDocument($"softmax causal={causal}", docs,
                x => SoftmaxAttention.Forward(x[0], x[1], x[2], causal, documents: docs),
                x => SoftmaxAttention.Forward(x[0], x[1], x[2], causal), dO, q, k, v);
    }

    [Theory]
    [InlineData(new long[] { 1, 5, 8 }, 8, "cuSeqlens[0] = 1 must be 0")]
    [InlineData(new long[] { 0, 5, 5, 8 }, 8, "strictly increasing")]
    [InlineData(new long[] { 0, 6, 3, 8 }, 8, "strictly increasing")]
    [InlineData(new long[] { 0, 5, 7 }, 8, "must end at the sequence length N = 8")]
    [InlineData(new long[] { 0 }, 8, "at least 2 entries")]
    public void InvalidCuSeqlensAreOneLineErrorsNamingTheParameter(long[] cuSeqlens, long n, string message)
    {
        var error = Assert.ThrowsAny<ArgumentException>(() => DocumentBoundaries.FromCuSeqlens(cuSeqlens, n));
        Assert.Equal("cuSeqlens", error.ParamName);
        Assert.Contains(message, error.Message);
        Assert.DoesNotContain('\n', error.Message);
    }

    [Fact]
    public void LengthsGiveCumulativeBoundariesAndBadLengthsAreErrors()
    {
        var docs = DocumentBoundaries.FromLengths([7, 100, 1, 20]);
        Assert.Equal([0L, 7, 107, 108, 128], docs.CuSeqlens);
        Assert.Equal(128, docs.Length);
        using var positions = tensor(new long[] { 0, 6, 7, 106, 107, 108, 127 });
        Assert.Equal([0L, 0, 1, 1, 2, 3, 3], docs.DocumentIds(positions).data<long>().ToArray());
        Assert.Equal("lengths", Assert.ThrowsAny<ArgumentException>(() => DocumentBoundaries.FromLengths([3, 0, 2])).ParamName);
        Assert.Equal("documents", Assert.ThrowsAny<ArgumentException>(() =>
            LinearAttention.Quadratic(zeros(1, 1, 5, 2, dtype: float64), zeros(1, 1, 5, 2, dtype: float64), zeros(1, 1, 5, 2, dtype: float64),
                                      documents: docs)).ParamName);
    }
}
