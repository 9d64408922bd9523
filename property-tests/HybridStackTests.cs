using FsCheck;
using FsCheck.Fluent;
using Lasp2.Reference;
using Lasp2.Research.Attention;
using Lasp2.Research.Comm;
using Xunit;
using static TorchSharp.torch;

namespace Lasp2.PropertyTests;

/// <summary>
/// The hybrid stack (L = LASP-2, N = AllGather-CP, one layout for all layers) on W in-process ranks equals
/// its single-device twin in the output and in the gradients of the hidden states and of every projection
/// (float64, relative 1e-10); bad patterns are refused with a message naming the offending character.
/// </summary>
public class HybridStackTests
{
    sealed record HybridCase(string Pattern, int WorldSize, Layout Layout, bool Causal, double Decay, int KvHeads, int Groups,
                             int PieceLength, int ModelDim, int Dim, int Seed)
    {
        public int Seq => PieceLength * WorldSize * SequenceLayout.PiecesPerRank(Layout);
        public int Heads => KvHeads * Groups;
    }

    static readonly Arbitrary<HybridCase> Cases = Arb.From(
        from length in Gen.Choose(1, 4)
        from pattern in Gen.ArrayOf(Gen.Elements('L', 'N'), length)
        from worldSize in Gen.Choose(1, 8)
        from layout in Gen.Elements(Layout.Contiguous, Layout.Zigzag)
        from causal in Gen.Elements(true, false)
        from decay in Gen.Elements(1.0, 0.9)
        from kvHeads in Gen.Choose(1, 2)
        from groups in Gen.Choose(1, 2)
        from piece in Gen.Choose(1, 3)
        from modelDim in Gen.Choose(2, 6)
        from dim in Gen.Choose(1, 4)
        from seed in Gen.Choose(0, int.MaxValue)
        select new HybridCase(new string(pattern), worldSize, layout, causal, causal ? decay : 1.0, kvHeads, groups, piece, modelDim, dim, seed));

    [Fact]
    public void DistributedStackEqualsItsSingleDeviceTwin() =>
        Prop.ForAll(Cases, c =>
        {
            using var scope = NewDisposeScope();
            var decay = c.Decay == 1.0 ? null : Enumerable.Range(0, c.Heads).Select(h => Math.Pow(c.Decay, 1.0 + h)).ToArray();
            var stack = new HybridStack(c.Pattern, new AttentionOptions(c.Causal, decay, c.Layout, BlockSize: 2));
            var generator = new Generator((ulong)c.Seed);
            var layers = stack.InitLayers(c.ModelDim, c.Heads, c.KvHeads, c.Dim, c.Dim + 1, generator);
            var x = randn([2, c.Seq, c.ModelDim], dtype: float64, generator: generator);
            var dOut = randn([2, c.Seq, c.ModelDim], dtype: float64, generator: generator);
            // Query scaled by 1/N: an unmasked linear layer sums over all N tokens. modelDim >= 2: with one
            // feature the RMSNorm maps every token to +-1, and identical keys make some gradients exactly 0,
            // which a relative comparison cannot judge.
            var weights = layers.SelectMany(l => new[] { l.Query / c.Seq, l.Key, l.Value, l.Output }).ToArray();

            var (expected, expectedGrads) = Autograd.ForwardBackward(
                inputs => stack.Reference(inputs[0], Rebuild(layers, inputs[1..])), dOut, [x, .. weights]);

            var ranks = ProcessGroups.RunInProcess(c.WorldSize, group =>
            {
                var leaves = new[] { SequenceLayout.ShardOf(x, c.WorldSize, group.Rank, c.Layout, dim: 1) }
                    .Concat(weights.Select(w => w.clone())).Select(t => t.requires_grad_(true)).ToArray();
                var output = stack.Forward(group, leaves[0], Rebuild(layers, leaves[1..]));
                output.backward([SequenceLayout.ShardOf(dOut, c.WorldSize, group.Rank, c.Layout, dim: 1)]);
                return (Output: output.detach(), Grads: leaves.Select(l => l.grad!).ToArray());
            }, threadsPerRank: 1);

            string label = $"{c.Pattern} W={c.WorldSize} {c.Layout} causal={c.Causal} decay={c.Decay} H={c.Heads} Hkv={c.KvHeads} N={c.Seq} D={c.ModelDim} d={c.Dim} seed={c.Seed}";
            AssertClose.Tensors($"{label} out", expected, SequenceLayout.Unshard(ranks.Select(r => r.Output).ToList(), c.Layout, dim: 1));
            AssertClose.Tensors($"{label} dx", expectedGrads[0], SequenceLayout.Unshard(ranks.Select(r => r.Grads[0]).ToList(), c.Layout, dim: 1));
            for (int w = 1; w < expectedGrads.Length; w++)
                AssertClose.Tensors($"{label} dW[{w - 1}]", expectedGrads[w], SumOverRanks(ranks.Select(r => r.Grads[w])));
        }).Check(Config.QuickThrowOnFailure.WithMaxTest(40));

    [Theory]
    [InlineData("", "empty")]
    [InlineData("LLxN", "'x' at position 2")]
    [InlineData("lln", "'l' at position 0")]
    public void BadPatternsAreRefused(string pattern, string message)
    {
        var error = Assert.Throws<ArgumentException>(() => new HybridStack(pattern, new AttentionOptions()));
        Assert.Equal("pattern", error.ParamName);
        Assert.Contains(message, error.Message);
    }

    [Fact]
    public void TheLayersMustComputeTheirKind()
    {
        var error = Assert.Throws<ArgumentException>(() => new HybridStack("LN", new AttentionOptions(), linear: "ring-softmax"));
        Assert.Equal("linear", error.ParamName);
    }

    static IReadOnlyList<HybridLayer> Rebuild(IReadOnlyList<HybridLayer> layers, Tensor[] weights) =>
        layers.Select((l, i) => l with { Query = weights[4 * i], Key = weights[4 * i + 1], Value = weights[4 * i + 2], Output = weights[4 * i + 3] })
              .ToList();

    static Tensor SumOverRanks(IEnumerable<Tensor> grads) => stack(grads.ToList()).sum(dim: 0);
}
