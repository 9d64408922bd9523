using FsCheck;
using FsCheck.Fluent;
using Lasp2.Reference;
using static TorchSharp.torch;

namespace Lasp2.PropertyTests;

/// <summary>
/// Random packed documents over N tokens, as the cut positions between documents (sorted, distinct, in 1..N-1):
/// none (a single document), cuts next to each other (documents of length 1), and cuts exactly at the edges of
/// <c>edge</c>-token pieces (a boundary at a shard or zigzag piece edge). Shrinks by removing cuts.
/// </summary>
public static class DocumentCuts
{
    /// <summary>Cuts for N tokens; <paramref name="edge"/> is the piece length whose multiples are favoured (1: none).</summary>
    public static Gen<long[]> For(long n, long edge = 1)
    {
        if (n < 2) return Gen.Constant(Array.Empty<long>());
        var position = Gen.Frequency(
            (3, Gen.Choose(1, (int)n - 1).Select(i => (long)i)),
            (2, Gen.Choose(1, (int)Math.Max(1, (n - 1) / edge)).Select(m => Math.Min(n - 1, m * edge))),
            (1, Gen.Choose(1, (int)Math.Max(1, (n - 1) / edge)).Select(m => Math.Clamp(m * edge + 1, 1, n - 1))));
        return from count in Gen.Frequency((1, Gen.Constant(0)), (4, Gen.Choose(1, (int)Math.Min(n - 1, 8))))
               from cuts in Gen.ListOf(position, count)
               select cuts.Distinct().Order().ToArray();
    }

    /// <summary>Each cut removed in turn (merging two documents), then all of them.</summary>
    public static IEnumerable<long[]> Shrink(long[] cuts)
    {
        if (cuts.Length > 1) yield return [];
        for (int i = 0; i < cuts.Length; i++) yield return cuts.Where((_, j) => j != i).ToArray();
    }

    /// <summary>The boundaries of N tokens cut at <paramref name="cuts"/>.</summary>
    public static DocumentBoundaries Boundaries(long n, long[] cuts) =>
        DocumentBoundaries.FromCuSeqlens([0, .. cuts, n], n);
}

/// <summary>A linear-attention problem (<see cref="LinearCase"/>) packed into documents.</summary>
public sealed record PackedLinearCase(LinearCase Problem, long[] Cuts)
{
    public DocumentBoundaries Documents => DocumentCuts.Boundaries(Problem.Seq, Cuts);

    public override string ToString() => $"{Problem} documents={Documents}";
}

/// <summary>A softmax problem (<see cref="SoftmaxCase"/>) packed into documents.</summary>
public sealed record PackedSoftmaxCase(SoftmaxCase Problem, long[] Cuts)
{
    public DocumentBoundaries Documents => DocumentCuts.Boundaries(Problem.Seq, Cuts);

    public override string ToString() => $"{Problem} documents={Documents}";
}

/// <summary>FsCheck arbitraries for packed reference problems; shrinking merges documents, then shrinks the shape.</summary>
public static class PackedArbitraries
{
    public static Arbitrary<PackedLinearCase> PackedLinearCase() =>
        Arb.From(
            from problem in ReferenceArbitraries.LinearCase().Generator
            from cuts in DocumentCuts.For(problem.Seq, Math.Max(1, problem.BlockSize))
            select new PackedLinearCase(problem, cuts),
            c => DocumentCuts.Shrink(c.Cuts).Select(cuts => c with { Cuts = cuts })
                 .Concat(ReferenceArbitraries.LinearCase().Shrinker(c.Problem)
                     .Select(p => new PackedLinearCase(p, c.Cuts.Where(cut => cut < p.Seq).ToArray()))));

    public static Arbitrary<PackedSoftmaxCase> PackedSoftmaxCase() =>
        Arb.From(
            from problem in ReferenceArbitraries.SoftmaxCase().Generator
            from cuts in DocumentCuts.For(problem.Seq)
            select new PackedSoftmaxCase(problem, cuts),
            c => DocumentCuts.Shrink(c.Cuts).Select(cuts => c with { Cuts = cuts }));
}

/// <summary>The root of trust for packed sequences: run each document alone and concatenate.</summary>
public static class PerDocument
{
    /// <summary>f applied to each document's tokens (dimension 2 of every input) alone; the results concatenated.</summary>
    public static Tensor Run(DocumentBoundaries documents, Func<Tensor[], Tensor> f, Tensor[] inputs) =>
        cat(Enumerable.Range(0, documents.Count)
                      .Select(d => f(inputs.Select(x => x.narrow(2, documents.CuSeqlens[d], documents.Lengths[d])).ToArray()))
                      .ToList(), 2);
}
