using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Lasp2.Reference;
using Lasp2.Research.Attention;
using Lasp2.Research.Verification;
using Xunit;
using static TorchSharp.torch;

namespace Lasp2.PropertyTests;

/// <summary>A distributed problem (<see cref="DistributedCase"/>) whose sequence packs several documents.</summary>
public sealed record PackedDistributedCase(DistributedCase Problem, long[] Cuts)
{
    public DocumentBoundaries Documents => DocumentCuts.Boundaries(Problem.Seq, Cuts);

    public override string ToString() => $"{Problem} documents={Documents}";
}

public static class PackedDistributedArbitraries
{
    /// <summary>
    /// Random documents over N = piece x W (x 2 zigzag): cuts favour piece edges (a boundary exactly at a shard or
    /// zigzag piece edge) and their neighbours (length-1 documents); documents longer than a shard come from few cuts,
    /// a single document from none. Shrinks by merging documents, then by the problem's own shrinker.
    /// </summary>
    public static Arbitrary<PackedDistributedCase> PackedDistributedCase() =>
        Arb.From(
            from problem in DistributedArbitraries.DistributedCase().Generator
            from cuts in DocumentCuts.For(problem.Seq, problem.PieceLength)
            select new PackedDistributedCase(problem, cuts),
            c => DocumentCuts.Shrink(c.Cuts).Select(cuts => c with { Cuts = cuts })
                 .Concat(DistributedArbitraries.DistributedCase().Shrinker(c.Problem)
                     .Select(p => new PackedDistributedCase(p, Scaled(c.Cuts, c.Problem.Seq, p.Seq)))));

    /// <summary>The cuts moved to a shorter sequence in proportion (a boundary at a piece edge stays at a piece edge).</summary>
    static long[] Scaled(long[] cuts, long from, long to) =>
        cuts.Select(cut => cut * to / from).Where(cut => cut >= 1 && cut < to).Distinct().ToArray();
}

/// <summary>
/// Packing invariance, the property that proves document boundaries: a packed sequence run through a method on W
/// ranks equals each document run alone through the single-device reference, concatenated, in O, dQ, dK and dV
/// (float64, 1e-10 relative), for every registered method that declares packed documents for the mask
/// (<see cref="MethodCapabilities.Documents"/>), both layouts, W 1..8.
/// </summary>
public class PackingInvarianceTests
{
    /// <summary>The case's configuration for <paramref name="method"/>, adapted to what it needs (no decay for softmax,
    /// H a multiple of W for head-sharding methods), or null when it has no packed documents under the case's mask.</summary>
    static DistributedCheckConfig? ConfigFor(ISequenceParallelAttention method, PackedDistributedCase c)
    {
        var supports = method.Supports;
        if (!supports.SupportsDocuments(c.Problem.Causal) || !supports.Layouts.Contains(c.Problem.Layout)) return null;
        var problem = c.Problem with { Decay = supports.Decay ? c.Problem.Decay : 1.0 };
        if (method.Unsupported(problem.WorldSize, problem.Heads, problem.Heads) is not null)
            problem = problem with { Heads = problem.WorldSize };
        return problem.Config(method.Name) with { Documents = c.Documents };
    }

    /// <summary>Each document alone through the plain single-device reference, concatenated: O and dQ, dK, dV.</summary>
    static (Tensor O, Tensor[] Grads) EachDocumentAlone(DistributedCheckConfig config, AttentionKind kind, IReadOnlyDictionary<string, Tensor> t)
    {
        Func<Tensor[], Tensor> alone = kind == AttentionKind.Softmax
            ? x => SoftmaxAttention.Forward(x[0], x[1], x[2], config.Causal)
            : x => LinearAttention.Quadratic(x[0], x[1], x[2], config.Causal, config.HeadDecays());
        return Autograd.ForwardBackward(x => PerDocument.Run(config.Documents!, alone, x), t["dO"], t["q"], t["k"], t["v"]);
    }

    internal static int CheckEveryMethod(PackedDistributedCase c)
    {
        int compared = 0;
        foreach (var method in MethodRegistry.All)
        {
            if (ConfigFor(method, c) is not { } config) continue;
            using var scope = NewDisposeScope();
            var (tensors, _) = DistributedEqualsReferenceTests.Run(config);
            var (o, grads) = EachDocumentAlone(config, method.Supports.Kind, tensors);
            AssertClose.Tensors($"{method.Name} O", o, tensors["o"]);
            AssertClose.Tensors($"{method.Name} dQ", grads[0], tensors["dq"]);
            AssertClose.Tensors($"{method.Name} dK", grads[1], tensors["dk"]);
            AssertClose.Tensors($"{method.Name} dV", grads[2], tensors["dv"]);
            compared++;
        }
        return compared;
    }

    [Property(MaxTest = 30, Arbitrary = [typeof(PackedDistributedArbitraries)])]
    public void EveryMethodOnPackedDocumentsEqualsEachDocumentAlone(PackedDistributedCase c) =>
        Assert.True(CheckEveryMethod(c) > 0, $"no registered method ran packed documents for {c}");

    /// <summary>
    /// The gated affine-summary methods do not take packed documents yet (in their engine a document start would be a
    /// transition of 0); they refuse <see cref="AttentionOptions.Documents"/> with a one-line error. The list may only shrink.
    /// </summary>
    static readonly HashSet<string> WithoutDocuments = ["all-scan", "lasp2-affine"];

    /// <summary>Every other registered method declares packed documents for the causal mask (the common case in training).</summary>
    [Fact]
    public void EveryRegisteredMethodSupportsCausalDocuments() =>
        Assert.All(MethodRegistry.All, method =>
            Assert.True(method.Supports.SupportsDocuments(causal: true) != WithoutDocuments.Contains(method.Name),
                        $"{method.Name}: supports causal documents = {method.Supports.SupportsDocuments(causal: true)}"));

    /// <summary>A method without documents under the mask fails with a one-line error naming the option, never a silent wrong answer.</summary>
    [Fact]
    public void UnsupportedOrMismatchedDocumentsAreErrors()
    {
        var q = randn(1, 2, 8, 3, dtype: float64);
        var documents = DocumentBoundaries.FromLengths([3, 5]);
        Research.Comm.ProcessGroups.RunInProcess(1, group =>
        {
            var unmasked = Assert.Throws<ArgumentException>(() =>
                MethodRegistry.Get("lasp2").Forward(group, q, q, q, new AttentionOptions(Causal: false, Documents: documents)));
            Assert.Contains("packed documents", unmasked.Message);
            var length = Assert.Throws<ArgumentException>(() =>
                MethodRegistry.Get("ring-softmax").Forward(group, q, q, q, new AttentionOptions(Documents: DocumentBoundaries.FromLengths([3, 6]))));
            Assert.Equal("Documents", length.ParamName);
            return 0;
        });
    }
}
