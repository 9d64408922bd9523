using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Lasp2.Reference;
using Lasp2.Research.Verification;
using Xunit;
using static TorchSharp.torch;

namespace Lasp2.PropertyTests;

/// <summary>One single-device problem of a gated recurrence: shape, block, where the gates sit, seed.</summary>
public sealed record GatedCase(Recurrence Recurrence, int Batch, int Heads, int Seq, int DimK, int DimV, int BlockSize,
                               GateRegime Regime, int Seed)
{
    public Dictionary<string, Tensor> Inputs() =>
        GatedInputs.Random(Recurrence, Batch, Heads, Seq, DimK, DimV, ScalarType.Float64, Seed, Regime);

    public override string ToString() =>
        $"{Recurrence.Name} B={Batch} H={Heads} N={Seq} Dk={DimK} Dv={DimV} block={BlockSize} gates={Regime} seed={Seed}";
}

/// <summary>FsCheck arbitraries for <see cref="GatedCase"/>, shrinking toward short sequences and small heads.</summary>
public static class GatedArbitraries
{
    public static Arbitrary<GatedCase> GatedCase() =>
        Arb.From(
            from recurrence in Gen.Elements(Recurrence.All.ToArray())
            from batch in Gen.Choose(1, 2)
            from heads in Gen.Choose(1, 2)
            from seq in Gen.Choose(1, 13)
            from dimK in Gen.Choose(1, 4)
            from dimV in Gen.Choose(1, 4)
            from block in Gen.Choose(1, 6)
            from regime in Gen.Elements(Enum.GetValues<GateRegime>())
            from seed in Gen.Choose(0, int.MaxValue)
            select new GatedCase(recurrence, batch, heads, seq, dimK, dimV, block, regime, seed),
            Shrink);

    static IEnumerable<GatedCase> Shrink(GatedCase c)
    {
        if (c.Seq > 1) yield return c with { Seq = c.Seq / 2 };
        if (c.Seq > 1) yield return c with { Seq = c.Seq - 1 };
        if (c.Batch > 1) yield return c with { Batch = 1 };
        if (c.Heads > 1) yield return c with { Heads = 1 };
        if (c.DimK > 1) yield return c with { DimK = c.DimK - 1 };
        if (c.DimV > 1) yield return c with { DimV = 1 };
        if (c.BlockSize > 1) yield return c with { BlockSize = c.BlockSize - 1 };
        if (c.Regime != GateRegime.Moderate) yield return c with { Regime = GateRegime.Moderate };
    }
}

/// <summary>
/// The chain of trust of the gated references: the per-token recurrence is the root; the chunked form (log-space
/// cumulative gates, the UT transform for the delta rule) and the affine summary (A, B) must equal it in outputs,
/// final state, and the gradients of q, k, v, the log-gates, beta and the entering state, for gates near 0 and
/// near 1. float64, 1e-10 normwise relative.
/// </summary>
[Properties(Arbitrary = [typeof(GatedArbitraries)], MaxTest = 60)]
public class GatedReferenceTests
{
    /// <summary>q, k, v, the gate tensors, then S_0: the differentiable inputs, and their names.</summary>
    static (Tensor[] Inputs, string[] Names, Gates Gates) Differentiable(GatedCase c, Dictionary<string, Tensor> x, Tensor initial)
    {
        var gates = GatedInputs.GatesOf(c.Recurrence, x);
        var names = new List<string> { "q", "k", "v" };
        if (gates.LogGate is not null) names.Add("g");
        if (gates.Beta is not null) names.Add("beta");
        names.Add("S0");
        return ([x["q"], x["k"], x["v"], .. gates.Tensors, initial], names.ToArray(), gates);
    }

    /// <summary>Runs <paramref name="form"/> (inputs in the order of <see cref="Differentiable"/>) and the recurrent form; asserts equal values and gradients.</summary>
    static void SameAsRecurrent(GatedCase c, string label, Func<Tensor, Tensor, Tensor, Gates, Tensor, Tensor> form)
    {
        using var scope = NewDisposeScope();
        var x = c.Inputs();
        var generator = new Generator((ulong)c.Seed + 1);
        var initial = randn([c.Batch, c.Heads, c.DimK, c.DimV], dtype: float64, generator: generator);
        var (inputs, names, gates) = Differentiable(c, x, initial);
        Tensor Run(Tensor[] t, Func<Tensor, Tensor, Tensor, Gates, Tensor, Tensor> f) =>
            f(t[0], t[1], t[2], gates.With(t[3..^1]), t[^1]);
        Tensor Recurrent(Tensor q, Tensor k, Tensor v, Gates g, Tensor s)
        {
            var (o, state) = GatedLinearAttention.Recurrent(q, k, v, g, s);
            return label == "summary" ? state.flatten() : cat([o.flatten(), state.flatten()]);
        }
        var probe = Run(inputs, Recurrent);
        var cotangent = randn(probe.shape, dtype: float64, generator: generator);
        var (expected, expectedGrads) = Autograd.ForwardBackward(t => Run(t, Recurrent), cotangent, inputs);
        var (actual, actualGrads) = Autograd.ForwardBackward(t => Run(t, form), cotangent, inputs);
        AssertClose.Tensors($"{label} values ({c})", expected, actual);
        for (int i = 0; i < names.Length; i++)
            AssertClose.Tensors($"{label} d{names[i]} ({c})", expectedGrads[i], actualGrads[i]);
    }

    [Property]
    public void ChunkedEqualsRecurrent(GatedCase c) =>
        SameAsRecurrent(c, "chunked", (q, k, v, g, s) =>
        {
            var (o, state) = GatedLinearAttention.Chunked(q, k, v, g, c.BlockSize, s);
            return cat([o.flatten(), state.flatten()]);
        });

    /// <summary>The summary is the affine map of the span: A S_0 + B equals the recurrent final state, gradients included.</summary>
    [Property]
    public void SummaryIsTheAffineMapOfTheSpan(GatedCase c) =>
        SameAsRecurrent(c, "summary", (_, k, v, g, s) =>
        {
            var (transition, state) = GatedLinearAttention.Summary(k, v, g, c.BlockSize);
            return (c.Recurrence.Apply(transition, s) + state).flatten();
        });

    /// <summary>Composition follows token order: the summary of a span equals (second) o (first) of its two halves.</summary>
    [Property(MaxTest = 30)]
    public void SummaryOfTwoHalvesComposesInTokenOrder(GatedCase c)
    {
        if (c.Seq < 2) return;
        using var scope = NewDisposeScope();
        var x = c.Inputs();
        var gates = GatedInputs.GatesOf(c.Recurrence, x);
        long half = c.Seq / 2;
        var (whole, wholeState) = GatedLinearAttention.Summary(x["k"], x["v"], gates, c.BlockSize);
        var (first, firstState) = GatedLinearAttention.Summary(x["k"].narrow(2, 0, half), x["v"].narrow(2, 0, half), gates.Narrow(0, half), c.BlockSize);
        var (second, secondState) = GatedLinearAttention.Summary(x["k"].narrow(2, half, c.Seq - half), x["v"].narrow(2, half, c.Seq - half),
                                                                 gates.Narrow(half, c.Seq - half), c.BlockSize);
        AssertClose.Tensors($"A ({c})", whole, c.Recurrence.Compose(second, first));
        AssertClose.Tensors($"B ({c})", wholeState, c.Recurrence.Apply(second, firstState) + secondState);
    }

    [Fact]
    public void BadGatesAreRejectedNamingTheParameter()
    {
        using var scope = NewDisposeScope();
        var x = GatedInputs.Random(Recurrence.GatedDelta, 1, 2, 5, 3, 2, ScalarType.Float64, 1);
        var (q, k, v) = (x["q"], x["k"], x["v"]);
        Assert.Equal("LogGate", Assert.Throws<ArgumentException>(() =>
            GatedLinearAttention.Recurrent(q, k, v, new Gates(Recurrence.GatedDelta, null, x["beta"]))).ParamName);
        Assert.Equal("LogGate", Assert.Throws<ArgumentOutOfRangeException>(() =>
            GatedLinearAttention.Recurrent(q, k, v, new Gates(Recurrence.GatedDelta, -x["g"], x["beta"]))).ParamName);
        Assert.Equal("Beta", Assert.Throws<ArgumentOutOfRangeException>(() =>
            GatedLinearAttention.Recurrent(q, k, v, new Gates(Recurrence.GatedDelta, x["g"], full_like(x["beta"], 2.0)))).ParamName);
        Assert.Equal("Beta", Assert.Throws<ArgumentException>(() =>
            GatedLinearAttention.Chunked(q, k, v, new Gates(Recurrence.Gla, x["g"].unsqueeze(-1).expand(1, 2, 5, 3), x["beta"]), 2)).ParamName);
        Assert.Equal("LogGate", Assert.Throws<ArgumentException>(() =>
            GatedLinearAttention.Chunked(q, k, v, new Gates(Recurrence.Gla, x["g"]), 2)).ParamName);
        Assert.Equal("name", Assert.Throws<ArgumentException>(() => Recurrence.Get("mamba")).ParamName);
    }
}
