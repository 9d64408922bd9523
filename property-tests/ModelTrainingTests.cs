using FsCheck;
using FsCheck.Fluent;
using Lasp2.Reference;
using Lasp2.Research.Attention;
using Lasp2.Research.Comm;
using Lasp2.Research.Model;
using Xunit;
using Xunit.Abstractions;
using Xunit.Sdk;
using static TorchSharp.torch;

namespace Lasp2.PropertyTests;

/// <summary>
/// The toolkit's headline one level up: a Linear-Llama3 hybrid trained for k AdamW steps with sequence x data
/// parallelism gives the same losses and parameters as its single-device twin (float64, relative 1e-10),
/// whatever the rank counts, layout, pattern and methods. The three traps of distributed training are shown
/// to matter: planted, each one breaks the equality.
/// </summary>
public class ModelTrainingTests(ITestOutputHelper output)
{
    /// <summary>A tiny model and run: everything the equality depends on.</summary>
    public sealed record TrainCase(string Pattern, Layout Layout, int Sp, int Dp, string LinearMethod, string SoftmaxMethod,
                                   string Recurrence, FeatureMap FeatureMap, int Heads, int KvHeads, int PieceLength, int Seed,
                                   bool SeparateDocuments = true)
    {
        public int Seq => PieceLength * Sp * SequenceLayout.PiecesPerRank(Layout);
        public ModelConfig Config => new(Vocab: 24, ModelDim: 4 * Heads, Pattern, Heads, KvHeads, MlpDim: 24, LinearMethod, SoftmaxMethod,
                                         FeatureMap, Recurrence, Layout, BlockSize: 4, SeparateDocuments: SeparateDocuments);
        public override string ToString() =>
            $"{Pattern} {Layout} sp={Sp} dp={Dp} {LinearMethod}/{SoftmaxMethod} {Recurrence} {FeatureMap} H={Heads} Hkv={KvHeads} N={Seq} seed={Seed}" +
            (SeparateDocuments ? " documents" : " joined");
    }

    const int Steps = 3;

    static TrainOptions Options(int seed) => new(new LearningRate(3e-2, 3e-3, WarmupSteps: 1, TotalSteps: Steps), ClipNorm: 0.5, Seed: seed);

    static PackedCorpus Corpus(TrainCase c) => PackedCorpus.Random(24, 4096, meanDocument: 6, rows: 2 * c.Dp, length: c.Seq, c.Seed);

    /// <summary>Losses of every step and the final parameters: the single-device twin when <paramref name="twin"/>, else rank 0 of an in-process run (all ranks are checked equal).</summary>
    static (double[] Losses, Tensor[] Parameters) Train(TrainCase c, bool twin, bool plantMissingSequenceReduction = false)
    {
        var corpus = Corpus(c);
        (double[], Tensor[]) Run(IProcessGroup? world)
        {
            using var trainer = new Trainer(c.Config, Options(c.Seed), world, world is null ? 1 : c.Sp, world is null ? 1 : c.Dp);
            if (plantMissingSequenceReduction) trainer.GradientGroups = [trainer.GradientGroups[1]];
            var losses = new double[Steps];
            for (int s = 0; s < Steps; s++)
            {
                using var batch = corpus.Get(s);
                losses[s] = trainer.TrainStep(batch).Loss;
            }
            return (losses, trainer.Parameters.Tensors.Select(p => p.detach().clone()).ToArray());
        }
        if (twin) return Run(null);
        var ranks = ProcessGroups.RunInProcess(c.Sp * c.Dp, group => Run(group), threadsPerRank: 1);
        for (int r = 1; r < ranks.Length; r++)
            for (int p = 0; p < ranks[0].Item2.Length; p++)
                if (!ranks[r].Item2[p].equal(ranks[0].Item2[p]).all().item<bool>())
                    throw new XunitException($"{c}: rank {r} holds different parameters than rank 0 (parameter {p})");
        return ranks[0];
    }

    static void AssertSameRun(TrainCase c, (double[] Losses, Tensor[] Parameters) expected, (double[] Losses, Tensor[] Parameters) actual)
    {
        for (int s = 0; s < Steps; s++)
        {
            double relative = Math.Abs(actual.Losses[s] - expected.Losses[s]) / Math.Abs(expected.Losses[s]);
            if (!(relative <= Compare.Float64Tolerance))
                throw new XunitException($"{c}: loss of step {s} {actual.Losses[s]:R} vs {expected.Losses[s]:R} (relative {relative:0.0e+00})");
        }
        var names = ModelParameters.Init(c.Config, 0).Names;
        for (int p = 0; p < expected.Parameters.Length; p++)
            AssertClose.Tensors($"{c}: {names[p]}", expected.Parameters[p], actual.Parameters[p]);
    }

    [Theory]
    [InlineData("LL", Layout.Contiguous)]
    [InlineData("LL", Layout.Zigzag)]
    [InlineData("LLLN", Layout.Contiguous)]
    [InlineData("LLLN", Layout.Zigzag)]
    public void TrainingOnAnyRankCountFollowsTheSingleDeviceTrajectory(string pattern, Layout layout)
    {
        foreach (var (sp, dp) in new[] { (1, 1), (2, 1), (4, 1), (2, 2) })
        {
            var c = new TrainCase(pattern, layout, sp, dp, "lasp2", "allgather-cp", "basic", FeatureMap.Identity,
                                  Heads: 4, KvHeads: 2, PieceLength: 16 / (sp * SequenceLayout.PiecesPerRank(layout)), Seed: 7);
            AssertSameRun(c, Train(c, twin: true), Train(c, twin: false));
        }
    }

    static readonly string[] LinearMethods = MethodRegistry.All.Where(m => m.Supports.Kind == AttentionKind.Linear).Select(m => m.Name).ToArray();
    static readonly string[] SoftmaxMethods = MethodRegistry.All.Where(m => m.Supports.Kind == AttentionKind.Softmax).Select(m => m.Name).ToArray();

    static readonly Arbitrary<TrainCase> Cases = Arb.From(
        from length in Gen.Choose(1, 3)
        from pattern in Gen.ArrayOf(Gen.Elements('L', 'N'), length)
        from layout in Gen.Elements(Layout.Contiguous, Layout.Zigzag)
        from mesh in Gen.Elements((1, 1), (2, 1), (4, 1), (1, 2), (2, 2))
        from linear in Gen.Elements(LinearMethods)
        from softmax in Gen.Elements(SoftmaxMethods)
        from recurrence in Gen.Elements(ModelConfig.Recurrences.ToArray())
        from featureMap in Gen.Elements(FeatureMap.Identity, FeatureMap.EluPlusOne, FeatureMap.Swish)
        from kvHeads in Gen.Elements(1, 2, 4)
        from piece in Gen.Choose(1, 3)
        from seed in Gen.Choose(0, 1 << 20)
        from separate in Gen.Elements(true, false)
        select new TrainCase(new string(pattern), layout, mesh.Item1, mesh.Item2, linear, softmax, recurrence, featureMap,
                             Heads: 4, kvHeads, piece, seed, separate), Shrink)
        .Filter(c => c.Config.Unsupported(c.Sp) is null);

    /// <summary>Simpler cases first: fewer layers, fewer ranks, the default methods, no decay or feature map, MHA, shorter pieces, seed 0.</summary>
    static IEnumerable<TrainCase> Shrink(TrainCase c)
    {
        for (int i = 0; i < c.Pattern.Length && c.Pattern.Length > 1; i++) yield return c with { Pattern = c.Pattern.Remove(i, 1) };
        if (c.Dp > 1) yield return c with { Dp = c.Dp / 2 };
        if (c.Sp > 1) yield return c with { Sp = c.Sp / 2 };
        if (c.Layout != Layout.Contiguous) yield return c with { Layout = Layout.Contiguous };
        if (c.LinearMethod != "lasp2") yield return c with { LinearMethod = "lasp2" };
        if (c.SoftmaxMethod != "allgather-cp") yield return c with { SoftmaxMethod = "allgather-cp" };
        if (c.Recurrence != "basic") yield return c with { Recurrence = "basic" };
        if (c.FeatureMap != FeatureMap.Identity) yield return c with { FeatureMap = FeatureMap.Identity };
        if (c.KvHeads != c.Heads) yield return c with { KvHeads = c.Heads };
        if (c.PieceLength > 1) yield return c with { PieceLength = 1 };
        if (c.Seed != 0) yield return c with { Seed = 0 };
        if (c.SeparateDocuments) yield return c with { SeparateDocuments = false };
    }

    /// <summary>The property: random small models, patterns, methods and meshes train identically on W ranks and on one device.</summary>
    static Property SameTrajectory(bool plantMissingSequenceReduction) =>
        Prop.ForAll(Cases, c =>
        {
            using var scope = NewDisposeScope();
            AssertSameRun(c, Train(c, twin: true), Train(c, twin: false, plantMissingSequenceReduction));
        });

    /// <summary>
    /// Learned gates and the delta rule in the model: the gates come from each rank's own tokens, LASP-2 on affine
    /// summaries and All-Scan carry them across ranks, and the twin runs the chunked reference on the whole sequence.
    /// </summary>
    [Theory]
    [InlineData("scalar-gate", "lasp2-affine", Layout.Zigzag, 2, 1)]
    [InlineData("gla", "all-scan", Layout.Contiguous, 2, 2)]
    [InlineData("delta", "lasp2-affine", Layout.Contiguous, 4, 1)]
    [InlineData("gated-delta", "all-scan", Layout.Zigzag, 2, 2)]
    public void LearnedRecurrencesTrainIdenticallyOnAnyMesh(string recurrence, string method, Layout layout, int sp, int dp)
    {
        var c = new TrainCase("LLN", layout, sp, dp, method, "allgather-cp", recurrence, FeatureMap.Identity, Heads: 4, KvHeads: 2,
                              PieceLength: 16 / (sp * SequenceLayout.PiecesPerRank(layout)), Seed: 5, SeparateDocuments: false);
        AssertSameRun(c, Train(c, twin: true), Train(c, twin: false));
    }

    [Fact]
    public void RandomModelsTrainIdenticallyOnAnyMesh() =>
        SameTrajectory(false).Check(Config.QuickThrowOnFailure.WithMaxTest(12));

    /// <summary>
    /// Without the sequence-group gradient reduction each rank steps with the gradient of its own tokens only: the
    /// property fails, and FsCheck shrinks the failure to a small case with sp &gt; 1.
    /// </summary>
    [Fact]
    public void AMissingSequenceReductionIsCaughtAndShrunk()
    {
        var failure = Assert.ThrowsAny<Exception>(() =>
            SameTrajectory(plantMissingSequenceReduction: true).Check(Config.QuickThrowOnFailure.WithMaxTest(30).WithReplay(20251205UL, 1UL)));
        output.WriteLine(failure.Message);
        Assert.Contains("Falsifiable", failure.Message);
        var shrunk = failure.Message.Split("Shrunk:", 2);
        Assert.True(shrunk.Length == 2, "FsCheck should shrink the failing case");
        Assert.Matches(@"^\s*\S+ \w+ sp=[24] ", shrunk[1]);
    }

    [Fact]
    public void SequenceGradientsMustBeReducedOverTheSequenceGroup()
    {
        var c = new TrainCase("LLLN", Layout.Zigzag, 2, 2, "lasp2", "allgather-cp", "basic", FeatureMap.Identity, 4, 2, 4, 3);
        var twin = Train(c, twin: true);
        AssertSameRun(c, twin, Train(c, twin: false));
        Assert.ThrowsAny<XunitException>(() => AssertSameRun(c, twin, Train(c, twin: false, plantMissingSequenceReduction: true)));
    }

    /// <summary>
    /// RoPE must rotate each token by its GLOBAL position: with local indices 0..C-1 the logits of the shards differ
    /// from the twin's (zigzag: the second piece of every rank; contiguous: every rank but the first).
    /// </summary>
    [Theory]
    [InlineData(Layout.Zigzag)]
    [InlineData(Layout.Contiguous)]
    public void RopeUsesGlobalPositions(Layout layout)
    {
        const int sp = 2;
        var config = new ModelConfig(24, 16, "LN", 4, 2, 24, Layout: layout, BlockSize: 4);
        using var batch = PackedCorpus.Random(24, 512, 6, rows: 2, length: 16, seed: 5).Get(0);
        using var model = new LinearLlama(config);
        using var parameters = ModelParameters.Init(config, 11);
        var expected = model.Forward(parameters, batch.Inputs, arange(16L), null, batch.Documents(0, batch.Rows)); // [B,N,V]
        Tensor Run(bool global) => SequenceLayout.Unshard(ProcessGroups.RunInProcess(sp, group =>
        {
            using var rankModel = new LinearLlama(config);
            using var rankParameters = ModelParameters.Init(config, 11);
            var positions = global ? SequenceLayout.Positions(16, sp, group.Rank, layout) : arange(16L / sp);
            using var noGrad = no_grad();
            return rankModel.Forward(rankParameters, SequenceLayout.ShardOf(batch.Inputs, sp, group.Rank, layout, dim: 1), positions, group,
                                     batch.Documents(0, batch.Rows));
        }, threadsPerRank: 1), layout, dim: 1);
        AssertClose.Tensors("global positions", expected, Run(global: true));
        Assert.False(Compare.Errors(expected, Run(global: false)).Within(1e-3), "local positions should change the logits");
    }

    /// <summary>
    /// The loss is the mean over the GLOBAL target count. Ranks hold different numbers of targets (document ends have
    /// none), so the mean of per-rank means is a different number; the trainer's loss is the twin's.
    /// </summary>
    [Fact]
    public void LossIsTheMeanOverTheGlobalTokenCount()
    {
        const int sp = 4;
        var config = new ModelConfig(24, 16, "LLLN", 4, 2, 24, BlockSize: 4);
        using var batch = PackedCorpus.Random(24, 512, 3, rows: 1, length: 32, seed: 2).Get(0);
        using var model = new LinearLlama(config);
        using var parameters = ModelParameters.Init(config, 11);
        double expected = (LinearLlama.LossSum(model.Forward(parameters, batch.Inputs, arange(32L), null, batch.Documents(0, 1)), batch.Targets) / batch.TargetCount).item<double>();
        var ranks = ProcessGroups.RunInProcess(sp, group =>
        {
            using var rankModel = new LinearLlama(config);
            using var rankParameters = ModelParameters.Init(config, 11);
            using var noGrad = no_grad();
            Tensor Shard(Tensor t) => SequenceLayout.ShardOf(t, sp, group.Rank, Layout.Contiguous, dim: 1);
            var logits = rankModel.Forward(rankParameters, Shard(batch.Inputs), SequenceLayout.Positions(32, sp, group.Rank, Layout.Contiguous), group,
                                           batch.Documents(0, 1));
            var targets = Shard(batch.Targets);
            return (Sum: LinearLlama.LossSum(logits, targets).item<double>(), Count: targets.ne(LinearLlama.NoTarget).sum().item<long>());
        }, threadsPerRank: 1);
        Assert.True(ranks.Select(r => r.Count).Distinct().Count() > 1, "the case must give ranks different target counts");
        double global = ranks.Sum(r => r.Sum) / ranks.Sum(r => r.Count);
        double meanOfMeans = ranks.Average(r => r.Sum / r.Count);
        Assert.True(Math.Abs(global - expected) <= 1e-12 * expected, $"global mean {global:R} vs twin {expected:R}");
        Assert.True(Math.Abs(meanOfMeans - expected) > 1e-6 * expected, $"mean of per-rank means {meanOfMeans:R} should differ from {expected:R}");

        var c = new TrainCase("LLLN", Layout.Contiguous, sp, 1, "lasp2", "allgather-cp", "basic", FeatureMap.Identity, 4, 2, 8, 2);
        Assert.Equal(Train(c, twin: true).Losses[0], Train(c, twin: false).Losses[0], 1e-12);
    }

    /// <summary>
    /// Packed documents are kept apart: the logits of every document of a packed row equal those of the document run
    /// alone (the L layers restart their state at its start; the N layers see only it, and RoPE scores depend only on
    /// relative positions, so its offset in the row does not matter), on one device and on 4 ranks in both layouts.
    /// With the documents joined, the later documents see the earlier ones and their logits change.
    /// </summary>
    [Theory]
    [InlineData(Layout.Contiguous)]
    [InlineData(Layout.Zigzag)]
    public void EveryPackedDocumentEqualsTheDocumentAlone(Layout layout)
    {
        const int sp = 4, seq = 32;
        var config = new ModelConfig(24, 16, "LNL", 4, 2, 24, Recurrence: "retention", Layout: layout, BlockSize: 4);
        using var batch = PackedCorpus.Random(24, 4096, 5, rows: 2, length: seq, seed: 9).Get(3);
        using var model = new LinearLlama(config);
        using var parameters = ModelParameters.Init(config, 13);
        using var noGrad = no_grad();
        var documents = batch.Documents(0, batch.Rows);
        var packed = model.Forward(parameters, batch.Inputs, arange((long)seq), null, documents);            // [B,N,V]
        var sharded = SequenceLayout.Unshard(ProcessGroups.RunInProcess(sp, group =>
        {
            using var rankModel = new LinearLlama(config);
            using var rankParameters = ModelParameters.Init(config, 13);
            using var rankNoGrad = no_grad();
            return rankModel.Forward(rankParameters, SequenceLayout.ShardOf(batch.Inputs, sp, group.Rank, layout, dim: 1),
                                     SequenceLayout.Positions(seq, sp, group.Rank, layout), group, documents);
        }, threadsPerRank: 1), layout, dim: 1);
        AssertClose.Tensors("4 ranks vs one device, packed documents", packed, sharded);

        int compared = 0;
        for (int row = 0; row < batch.Rows; row++)
        {
            var cu = documents[row].CuSeqlens;
            Assert.True(cu.Count > 3, "the row must pack several documents");
            for (int d = 0; d + 1 < cu.Count; d++)
            {
                long start = cu[d], length = cu[d + 1] - cu[d];
                var alone = model.Forward(parameters, batch.Inputs[row].narrow(0, start, length).unsqueeze(0), arange(length), null,
                                          [DocumentBoundaries.Single(length)]);                               // [1,n,V]
                AssertClose.Tensors($"row {row} document {d} [{start}, {start + length})", alone[0], packed[row].narrow(0, start, length));
                compared++;
            }
        }
        Assert.True(compared > 6, $"compared {compared} documents");

        using var joinedModel = new LinearLlama(config with { SeparateDocuments = false });
        var joined = joinedModel.Forward(parameters, batch.Inputs, arange((long)seq), null);
        long secondStart = documents[0].CuSeqlens[1];
        Assert.False(Compare.Errors(packed[0].narrow(0, secondStart, seq - secondStart), joined[0].narrow(0, secondStart, seq - secondStart)).Within(1e-3),
                     "joined documents should change the logits after the first document");
    }
}
