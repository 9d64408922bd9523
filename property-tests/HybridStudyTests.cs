using Lasp2.Research.Model;
using Xunit;

namespace Lasp2.PropertyTests;

/// <summary>The hybrid-ratio study's results: the committed files are complete, and the summary computes what it says.</summary>
public class HybridStudyTests
{
    static readonly string Data = Path.Combine(CheckpointTests.RepoRoot(), "data");

    [Fact]
    public void TheCommittedStudyHasEveryPatternAndSeed()
    {
        var runs = HybridStudy.LoadRuns(Path.Combine(Data, "hybrid-ratio.csv"));
        Assert.All(HybridStudy.Patterns, p => Assert.Equal(3, runs.Count(r => r.Pattern == p)));
        Assert.Single(runs.Select(r => r.Tokens).Distinct());                                     // the same token budget for every run
        var evaluations = HybridStudy.LoadCurves(Path.Combine(Data, "hybrid-ratio-curves.csv"));
        foreach (var run in runs)                                                                  // the last evaluation is the run's result
            Assert.Equal(run.HeldOut, evaluations.Where(e => e.Pattern == run.Pattern && e.Seed == run.Seed).MaxBy(e => e.Step)!.HeldOut, 12);
        var published = HybridStudy.Published(Path.Combine(Data, "published-convergence.csv"));
        Assert.Equal(2.892, published["LLLL"]);
        Assert.Equal(2.824, published["LLLN"]);
    }

    [Fact]
    public void SummaryAndGapClosedOnAKnownStudy()
    {
        var directory = Directory.CreateTempSubdirectory("lasp2-study-").FullName;
        try
        {
            string path = Path.Combine(directory, "hybrid-ratio.csv");
            var lines = new List<string> { "pattern,seed,steps,seq,batch,tokens,train_loss,held_out_loss,seconds,load_avg_start,load_avg_end" };
            double[] means = [5.0, 4.6, 4.4, 4.0];
            for (int p = 0; p < 4; p++)
                foreach (var (seed, offset) in new[] { (0, -0.1), (1, 0.1) })
                    lines.Add($"{HybridStudy.Patterns[p]},{seed},10,8,1,80,5.5,{means[p] + offset},60,0.1,0.2");
            File.WriteAllLines(path, lines);
            var runs = HybridStudy.LoadRuns(path);
            var summary = HybridStudy.Summary(runs);
            Assert.Equal(4.6, (double)summary["held_out_mean"][1], 12);
            Assert.Equal(Math.Sqrt(0.02), (double)summary["held_out_std"][1], 12);                 // sample std of 4.5, 4.7
            var comparison = HybridStudy.Comparison(runs, HybridStudy.Published(Path.Combine(Data, "published-convergence.csv")));
            Assert.Equal(0.4, (double)comparison["ours_gap_closed"][1], 12);                       // (5.0 - 4.6) / (5.0 - 4.0)
            Assert.Equal((2.892 - 2.824) / (2.892 - 2.759), (double)comparison["paper_gap_closed"][1], 12);
            Assert.Equal("NNNN < LNLN < LLLN < LLLL", HybridStudy.Order(HybridStudy.Patterns.ToDictionary(p => p, p => means[HybridStudy.Patterns.ToList().IndexOf(p)]), HybridStudy.Patterns));

            File.WriteAllLines(path, lines.Take(lines.Count - 1));                                  // NNNN seed 1 missing
            var error = Assert.Throws<InvalidDataException>(() => HybridStudy.LoadRuns(path));
            Assert.Contains("NNNN 1", error.Message);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }
}
