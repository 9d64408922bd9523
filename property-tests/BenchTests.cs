using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Lasp2.Cli.Commands;
using Lasp2.Research.Attention;
using Lasp2.Research.Bench;
using Spectre.Console.Cli;
using Xunit;
using static Lasp2.Research.Bench.BenchFrame;

namespace Lasp2.PropertyTests;

/// <summary>
/// `lasp2 bench`: the flop counting (against an independent per-block, per-pair tally), the CSV schema
/// (write -> DataFrame round trip), and a smoke run of `bench --quick` on tiny sizes. No timing asserts:
/// times are only required to be positive.
/// </summary>
public class BenchTests
{
    // Independent tally: walk every rank, every block, every query, and add the products it needs.
    static double TallyForward(FlopAlgorithm algorithm, BenchShape s)
    {
        double d = s.HeadDim, perHead = 0;
        if (algorithm == FlopAlgorithm.ChunkedLinear && !s.Causal)
            perHead = s.SeqLen * (2 * d * d + 2 * d * d);                                 // k_i^T v_i into M, q_i M
        else if (algorithm == FlopAlgorithm.ChunkedLinear)
            for (int rank = 0; rank < s.WorldSize; rank++)
                for (long start = 0; start < s.LocalLen; start += s.BlockSize)
                {
                    long length = Math.Min(s.BlockSize, s.LocalLen - start);
                    for (long i = 0; i < length; i++)
                        // q_i S_{b-1}, k_i^T v_i into the state, and (q_i . k_j) v_j for the j <= i of its block
                        perHead += 2 * d * d + 2 * d * d + (i + 1) * (2 * d + 2 * d);
                }
        else
            for (long i = 0; i < s.SeqLen; i++)
                perHead += (s.Causal ? i + 1 : s.SeqLen) * (2 * d + 2 * d);             // q_i . k_j and p_ij v_j
        return perHead * s.Batch * s.Heads;
    }

    static Arbitrary<BenchShape> Shapes() =>
        (from batch in Gen.Choose(1, 3)
         from heads in Gen.Choose(1, 4)
         from dim in Gen.Choose(1, 70)
         from block in Gen.Choose(1, 80)
         from world in Gen.Choose(1, 8)
         from local in Gen.Choose(1, 300)
         from causal in Gen.Elements(true, false)
         select new BenchShape(batch, heads, heads, (long)world * local, dim, block, causal, world)).ToArbitrary();

    [Property(MaxTest = 60)]
    public Property ForwardFlopsEqualAnIndependentTally() =>
        Prop.ForAll(Shapes(), Gen.Elements(Enum.GetValues<FlopAlgorithm>()).ToArbitrary(), (shape, algorithm) =>
        {
            double expected = TallyForward(algorithm, shape), actual = FlopCount.Forward(algorithm, shape);
            return (Math.Abs(actual - expected) <= 1e-12 * expected)                          // exact up to double rounding
                .Label($"{algorithm} {shape}: counted {actual}, tally {expected}");
        });

    [Property(MaxTest = 40)]
    public Property BackwardIsTwiceForward() =>
        Prop.ForAll(Shapes(), Gen.Elements(Enum.GetValues<FlopAlgorithm>()).ToArbitrary(), (shape, algorithm) =>
            FlopCount.ForwardBackward(algorithm, shape) == 3 * FlopCount.Forward(algorithm, shape));

    [Property(MaxTest = 40)]
    public Property ChunkedWorkDoesNotDependOnTheWorldSizeWhenShardsHoldWholeBlocks() =>
        Prop.ForAll(Shapes(), shape =>
        {
            var aligned = shape with { SeqLen = (long)shape.WorldSize * shape.BlockSize * 3 };
            return FlopCount.Forward(FlopAlgorithm.ChunkedLinear, aligned)
                   == FlopCount.Forward(FlopAlgorithm.ChunkedLinear, aligned with { WorldSize = 1 });
        });

    [Fact]
    public void CausalCountsOnlyThePairsTheMaskKeeps()
    {
        Assert.Equal(10, FlopCount.Pairs(4, causal: true));                                  // 4 + 3 + 2 + 1
        Assert.Equal(16, FlopCount.Pairs(4, causal: false));
        var causal = new BenchShape(1, 1, 1, 1000, 8, 64, true, 1);
        // softmax: 2 * pairs * (d_k + d_v) = 2 * 500500 * 16
        Assert.Equal(2 * 500500.0 * 16, FlopCount.Forward(FlopAlgorithm.Softmax, causal));
        Assert.Equal(2 * 1e6 * 16, FlopCount.Forward(FlopAlgorithm.Softmax, causal with { Causal = false }));
    }

    [Fact]
    public void InvalidShapesNameTheParameter()
    {
        var ok = new BenchShape(1, 2, 2, 64, 8, 16, true, 2);
        Assert.Equal("SeqLen", Assert.Throws<ArgumentOutOfRangeException>(() => FlopCount.Forward(FlopAlgorithm.Softmax, ok with { SeqLen = 63 })).ParamName);
        Assert.Equal("KvHeads", Assert.Throws<ArgumentOutOfRangeException>(() => FlopCount.Forward(FlopAlgorithm.Softmax, ok with { KvHeads = 3 })).ParamName);
        Assert.Equal("BlockSize", Assert.Throws<ArgumentOutOfRangeException>(() => FlopCount.Forward(FlopAlgorithm.ChunkedLinear, ok with { BlockSize = 0 })).ParamName);
    }

    static BenchContext Context(string command) => new(
        new MachineInfo("cpu, with comma", 2, 1L << 34, "os", ".NET", "0.1", "2.0"),
        [new PeakMeasurement(TorchSharp.torch.ScalarType.Float32, 1, 64, 100), new PeakMeasurement(TorchSharp.torch.ScalarType.Float32, 2, 64, 180)],
        command, new DateTime(2026, 1, 2, 3, 4, 5, DateTimeKind.Utc));

    [Fact]
    public void CsvRoundTripsThroughTheDataFrameWithTheSchemaTypes()
    {
        var shape = new BenchShape(1, 2, 2, 1024, 16, 64, true, 2);
        var benchCase = new BenchCase("lasp2", FlopAlgorithm.ChunkedLinear, "inproc", shape, TorchSharp.torch.ScalarType.Float32, 1, 1, 3, [0.9, 0.5]);
        var context = Context("lasp2 bench --seq \"1K,2K\" --methods lasp2");
        var samples = new[] { 0.3, 0.1, 0.2 }.Select(t => new RankSample(t, t / 2, 0.01, 100, 200, 2)).ToArray();
        var measured = BenchRow.Measured(benchCase, context, [new RankResult(samples, 4096, 8192), new RankResult(samples, 2048, 8192)], "probe", [(100, 200), (100, 200)]);
        var skipped = BenchRow.Unmeasured(benchCase with { Shape = shape with { SeqLen = 2048 } }, context, "skipped: predicted 12.0 s per iteration > limit 10 s");
        string path = Path.Combine(Path.GetTempPath(), $"bench-schema-{Guid.NewGuid():N}.csv");
        try
        {
            BenchCsv.Write(path, [measured]);
            BenchCsv.Write(path, [skipped], append: true);
            Assert.Equal(BenchCsv.Header, File.ReadLines(path).First());
            var frame = BenchCsv.Load(path);
            Assert.Equal(BenchCsv.Columns.Select(c => c.Name), frame.Columns.Select(c => c.Name));
            foreach (var column in BenchCsv.Columns)
                Assert.Equal(column.Type, frame.Columns[column.Name].DataType);
            Assert.Equal(2, frame.Rows.Count);
            var (first, second) = (frame.Rows[0], frame.Rows[1]);
            Assert.Equal(context.Command, Text(first, "command"));                        // quotes and commas survive
            Assert.Equal("cpu, with comma", Text(first, "cpu"));
            Assert.Equal(0.2, Number(first, "time_median_s"));                             // median of 0.1, 0.2, 0.3
            Assert.Equal(0.15, Number(first, "time_p25_s"), 12);
            Assert.Equal(FlopCount.ForwardBackward(FlopAlgorithm.ChunkedLinear, shape), Number(first, "flops"));
            Assert.Equal(1024 / 0.2, Number(first, "tokens_per_s"), 9);
            Assert.Equal(180, Number(first, "peak_gflops"));                                // 1 thread x W = 2 -> the 2-thread ceiling
            Assert.Equal(0.2, Number(first, "rank_cpu_sum_s"), 12);                         // 2 ranks x 0.1 (median)
            Assert.Equal("yes", Text(first, "analytic_match"));
            Assert.Equal(4096, Number(first, "peak_mem_per_rank_bytes"));
            Assert.Equal("0.9 0.5", Text(first, "decay"));
            Assert.StartsWith("skipped:", Text(second, "status"));
            Assert.True(double.IsNaN(Number(second, "time_median_s")));
            Assert.Single(Ok(frame));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void AppendingToAFileWithAnotherSchemaFails()
    {
        string path = Path.Combine(Path.GetTempPath(), $"bench-other-{Guid.NewGuid():N}.csv");
        try
        {
            File.WriteAllText(path, "a,b\n1,2\n");
            var row = BenchRow.Unmeasured(new BenchCase("lasp2", FlopAlgorithm.ChunkedLinear, "inproc", new BenchShape(1, 1, 1, 8, 4, 4, true, 1),
                TorchSharp.torch.ScalarType.Float32, 1, 0, 1), Context("x"), "skipped: test");
            Assert.Throws<InvalidDataException>(() => BenchCsv.Write(path, [row], append: true));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void ProcLinesParseWithTabsAndPadding()
    {
        Assert.Equal(123, ProcStatus.ParseKiB("VmHWM:\t     123 kB"));
        Assert.Equal(13107200, ProcStatus.ParseKiB("VmHWM:\t13107200 kB"));                   // no padding left at 8 digits
        Assert.Equal(24576000, ProcStatus.ParseKiB("MemTotal:       24576000 kB"));
        Assert.True(ProcStatus.PeakResidentBytes() >= ProcStatus.ResidentBytes() / 2 && ProcStatus.ResidentBytes() > 0);
    }

    [Fact]
    public void SweepArgumentsParseAndRejectClearly()
    {
        Assert.Equal([1024L, 2048, 4096], SweepArguments.Lengths("1K..4K"));
        Assert.Equal([3000L, 1 << 21], SweepArguments.Lengths("3000, 2M"));
        Assert.Equal([true, false], SweepArguments.Masks("both"));
        Assert.Contains("--seq", Assert.Throws<ArgumentException>(() => SweepArguments.Lengths("1K..x")).Message);
        Assert.Contains("--world", Assert.Throws<ArgumentException>(() => SweepArguments.Integers("1,0", "--world")).Message);
    }

    [Fact]
    public void KernelProfileTimesEveryPhase()
    {
        var profile = KernelProfile.Run(batch: 1, heads: 2, seqLen: 96, dim: 8, blockSize: 32, TorchSharp.torch.ScalarType.Float32, repetitions: 1);
        Assert.Equal(["phase", "cpu_ms", "gflops_per_s", "peak_tensors", "live_tensors"], profile.Columns.Select(c => c.Name));
        Assert.Equal(11, profile.Rows.Count);                                                 // the whole layer, 6 phases, 4 products alone
        Assert.All(profile.Rows, r => Assert.True(Number(r, "cpu_ms") > 0, Text(r, "phase")));
        Assert.Equal("blockSize", Assert.Throws<ArgumentOutOfRangeException>(() =>
            KernelProfile.Run(1, 1, 100, 8, 32, TorchSharp.torch.ScalarType.Float32)).ParamName);    // 32 does not divide 100
    }

    /// <summary>
    /// `lasp2 bench --quick` on tiny sizes (N = 256, 512; W = 1, 2, 4): every method has a measured row,
    /// every measured row has positive times and throughput, and every distributed row sent and received
    /// per rank exactly what the analytic model (CommModel) predicts.
    /// </summary>
    [Fact]
    public void QuickBenchMeasuresEveryMethodWithTheAnalyticTraffic()
    {
        string directory = Path.Combine(Path.GetTempPath(), $"bench-smoke-{Guid.NewGuid():N}");
        string csv = Path.Combine(directory, "bench.csv");
        try
        {
            var app = new CommandApp();
            app.Configure(c => c.AddCommand<BenchCommand>("bench"));
            int exit = app.Run(["bench", "--quick", "--seq", "256,512", "--dim", "16", "--iterations", "2",
                                "--peak-size", "128", "--threads", "1", "--out", csv, "--charts", "none"]);
            Assert.Equal(0, exit);
            var frame = BenchCsv.Load(csv);
            var ok = Ok(frame).ToList();
            foreach (var method in BenchMethods.All().Keys)
                Assert.Contains(ok, r => Text(r, "method") == method);
            Assert.Equal(frame.Rows.Count, ok.Count);                                      // nothing skipped or failed at these sizes
            foreach (var row in ok)
            {
                string label = $"{Text(row, "method")} W={Number(row, "world_size")} N={Number(row, "seq_len")}";
                Assert.True(Number(row, "time_median_s") > 0, label);
                Assert.True(Number(row, "time_min_s") <= Number(row, "time_median_s") && Number(row, "time_median_s") <= Number(row, "time_max_s"), label);
                Assert.True(Number(row, "tokens_per_s") > 0 && Number(row, "flops") > 0, label);
                Assert.True(Number(row, "fraction_of_peak") > 0, label);
                Assert.StartsWith("lasp2 bench --quick", Text(row, "command"));
                if (Number(row, "world_size") > 1 && Text(row, "method") != BenchTargets.Chunked)
                {
                    Assert.True(Number(row, "bytes_sent_per_rank") > 0 && Number(row, "collectives_per_rank") > 0, label);
                    Assert.True(Text(row, "analytic_match") == "yes",
                        $"{label}: sent {Number(row, "bytes_sent_per_rank")} / received {Number(row, "bytes_received_per_rank")} per rank, " +
                        $"model {Number(row, "analytic_bytes_sent_per_rank")} / {Number(row, "analytic_bytes_received_per_rank")} (max over ranks)");
                }
            }
            Assert.Equal(4, BenchCharts.Build(frame).Count);
        }
        finally
        {
            if (Directory.Exists(directory)) Directory.Delete(directory, recursive: true);
        }
    }
    [Fact]
    public void TheMemoryModelSkipsACaseThatCannotFitBeforeRunningIt()
    {
        string directory = Path.Combine(Path.GetTempPath(), $"bench-model-{Guid.NewGuid():N}");
        string csv = Path.Combine(directory, "bench.csv");
        try
        {
            var app = new CommandApp();
            app.Configure(c => c.AddCommand<BenchCommand>("bench"));
            int exit = app.Run(["bench", "--methods", "lasp2", "--seq", "4M", "--world", "8", "--heads", "2", "--dim", "64",
                                "--memory-gb", "1", "--peak-size", "64", "--iterations", "1", "--out", csv, "--charts", "none"]);
            Assert.Equal(0, exit);
            var row = Assert.Single(BenchCsv.Load(csv).Rows);
            // 9 [B,H,C,d] tensors per rank at L = d (docs/benchmarks.md, memory model): C = 512K, 256 MiB each, 8 ranks;
            // the test host's heap is tuned (NativeHeapTests), which the sweep budgets at 1.5 times the live tensors.
            double perRank = 9 * 2.0 * 524288 * 64 * 4 + 4.0 * (1 << 20) * 4;
            Assert.Equal(perRank, Number(row, "model_peak_mem_per_rank_bytes"));
            Assert.Equal($"skipped: predicted {1.5 * 8 * perRank / 1e9:0.0} GB by the memory model (x1.5 for the native heap) > budget 1 GB",
                         Text(row, "status"));
            Assert.Equal(8 > Environment.ProcessorCount ? "yes" : "no", Text(row, "oversubscribed"));
        }
        finally
        {
            if (Directory.Exists(directory)) Directory.Delete(directory, recursive: true);
        }
    }
}
