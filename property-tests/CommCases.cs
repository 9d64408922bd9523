using FsCheck;
using FsCheck.Fluent;
using TorchSharp;
using static TorchSharp.torch;

namespace Lasp2.PropertyTests;

/// <summary>
/// One random collective problem: world size 1..8, a dtype (float32, float64, bfloat16, float16), an awkward
/// shape of 1..3 dimensions with extents 1..5, a root/shift and a seed. Each rank's input is made from the
/// seed and the rank alone, so every rank (and the test) can rebuild any rank's input.
/// </summary>
public sealed record CommCase(int WorldSize, ScalarType Dtype, long[] Shape, int Root, int Seed)
{
    public override string ToString() => $"W={WorldSize} {Dtype} [{string.Join(",", Shape)}] root={Root} seed={Seed}";

    /// <summary>Rank <paramref name="rank"/>'s input of shape <paramref name="shape"/> (default <see cref="Shape"/>).</summary>
    public Tensor Input(int rank, long[]? shape = null)
    {
        using var generator = new Generator((ulong)Seed * 131 + (ulong)rank);   // using: alive until randn returned (rank threads)
        return randn(shape ?? Shape, dtype: float64, generator: generator).to(Dtype);
    }

    /// <summary>Every rank's input, in rank order.</summary>
    public Tensor[] Inputs(long[]? shape = null) => Enumerable.Range(0, WorldSize).Select(rank => Input(rank, shape)).ToArray();

    /// <summary>The shape with <see cref="WorldSize"/> blocks in front: [W, ...].</summary>
    public long[] Blocked => [WorldSize, .. Shape];
}

/// <summary>FsCheck arbitraries for <see cref="CommCase"/>, shrinking toward fewer ranks and smaller shapes.</summary>
public static class CommArbitraries
{
    public static Arbitrary<CommCase> CommCase() =>
        Arb.From(
            from worldSize in Gen.Choose(1, 8)
            from dtype in Gen.Elements(ScalarType.Float32, ScalarType.Float64, ScalarType.BFloat16, ScalarType.Float16)
            from dims in Gen.Choose(1, 3)
            from shape in Gen.ArrayOf(Gen.Choose(1, 5).Select(e => (long)e), dims)
            from root in Gen.Choose(0, worldSize - 1)
            from seed in Gen.Choose(0, int.MaxValue)
            select new CommCase(worldSize, dtype, shape, root, seed),
            Shrink);

    static IEnumerable<CommCase> Shrink(CommCase c)
    {
        if (c.WorldSize > 1) yield return c with { WorldSize = c.WorldSize - 1, Root = Math.Min(c.Root, c.WorldSize - 2) };
        if (c.Shape.Length > 1) yield return c with { Shape = c.Shape[1..] };
        if (c.Shape.Any(e => e > 1)) yield return c with { Shape = c.Shape.Select(_ => 1L).ToArray() };
        if (c.Dtype != ScalarType.Float64) yield return c with { Dtype = ScalarType.Float64 };
    }
}
