using System.Globalization;
using Lasp2.Charts;
using Lasp2.Research.Bench;
using Microsoft.Data.Analysis;

namespace Lasp2.Research.Model;

/// <summary>
/// The hybrid-ratio study of data/run-hybrid-study.sh (the paper's Table 2 / Table 4 at toy scale): every pattern
/// trained with the same token budget and several seeds; its results (data/hybrid-ratio.csv, one row per run, and
/// data/hybrid-ratio-curves.csv, one row per step) as a summary, two charts and the comparison with the paper.
/// </summary>
public static class HybridStudy
{
    /// <summary>The patterns, from pure linear to all softmax.</summary>
    public static IReadOnlyList<string> Patterns { get; } = ["LLLL", "LLLN", "LNLN", "NNNN"];

    /// <summary>One run's end: the last step's training loss and the held-out loss after it.</summary>
    public sealed record Run(string Pattern, int Seed, long Tokens, double TrainLoss, double HeldOut, double Seconds);

    /// <summary>One evaluation of a run: held-out loss after 1-based <paramref name="Step"/>.</summary>
    public sealed record Evaluation(string Pattern, int Seed, long Step, double HeldOut);

    /// <summary>The runs of data/hybrid-ratio.csv; throws unless every pattern has the same number (&gt;= 2) of seeds.</summary>
    public static IReadOnlyList<Run> LoadRuns(string path)
    {
        var runs = Load(path).Rows.Select(r => new Run(BenchFrame.Text(r, "pattern"), (int)BenchFrame.Number(r, "seed"),
            (long)BenchFrame.Number(r, "tokens"), BenchFrame.Number(r, "train_loss"), BenchFrame.Number(r, "held_out_loss"),
            BenchFrame.Number(r, "seconds"))).ToList();
        var seeds = Patterns.Select(p => runs.Count(r => r.Pattern == p)).Distinct().ToList();
        if (seeds.Count != 1 || seeds[0] < 2 || runs.Any(r => !double.IsFinite(r.HeldOut)))
            throw new InvalidDataException($"{path}: every pattern of {string.Join(", ", Patterns)} needs the same number (>= 2) of finished seeds; " +
                                           $"found {string.Join(", ", Patterns.Select(p => $"{p} {runs.Count(r => r.Pattern == p)}"))}.");
        return runs;
    }

    /// <summary>The held-out evaluations of data/hybrid-ratio-curves.csv (steps without one are skipped).</summary>
    public static IReadOnlyList<Evaluation> LoadCurves(string path) =>
        Load(path).Rows.Where(r => double.IsFinite(BenchFrame.Number(r, "val_loss")))
            .Select(r => new Evaluation(BenchFrame.Text(r, "pattern"), (int)BenchFrame.Number(r, "seed"), (long)BenchFrame.Number(r, "step") + 1,
                                        BenchFrame.Number(r, "val_loss"))).ToList();

    /// <summary>A CSV with its text columns as strings and every other column as double (LoadCsv would guess float32 and round the losses).</summary>
    static DataFrame Load(string path)
    {
        string[] header = File.ReadLines(path).First().Split(',');
        return DataFrame.LoadCsv(path, dataTypes: header.Select(c => c is "pattern" or "attention" ? typeof(string) : typeof(double)).ToArray());
    }

    /// <summary>Per pattern: seeds, held-out mean, sample standard deviation, min and max, training loss mean, minutes per run.</summary>
    public static DataFrame Summary(IReadOnlyList<Run> runs)
    {
        var groups = Patterns.Select(p => runs.Where(r => r.Pattern == p).ToList()).ToList();
        static double Std(IReadOnlyList<double> x)
        {
            double mean = x.Average();
            return Math.Sqrt(x.Sum(v => (v - mean) * (v - mean)) / (x.Count - 1));
        }
        return new DataFrame(
            new StringDataFrameColumn("pattern", Patterns),
            new StringDataFrameColumn("softmax_layers", Patterns.Select(p => $"{p.Count(c => c == 'N')} of {p.Length}")),
            new Int32DataFrameColumn("seeds", groups.Select(g => g.Count)),
            new DoubleDataFrameColumn("held_out_mean", groups.Select(g => g.Average(r => r.HeldOut))),
            new DoubleDataFrameColumn("held_out_std", groups.Select(g => Std(g.Select(r => r.HeldOut).ToList()))),
            new DoubleDataFrameColumn("held_out_min", groups.Select(g => g.Min(r => r.HeldOut))),
            new DoubleDataFrameColumn("held_out_max", groups.Select(g => g.Max(r => r.HeldOut))),
            new DoubleDataFrameColumn("train_mean", groups.Select(g => g.Average(r => r.TrainLoss))),
            new DoubleDataFrameColumn("minutes_per_run", groups.Select(g => g.Average(r => r.Seconds) / 60)));
    }

    /// <summary>Held-out loss against the step, the mean over seeds, one line per pattern.</summary>
    public static Figure Curves(IReadOnlyList<Evaluation> evaluations) =>
        Chart.Line("Held-out loss during training (mean over seeds)", "step", "cross-entropy (nats)",
            Patterns.Select(p => evaluations.Where(e => e.Pattern == p).GroupBy(e => e.Step).OrderBy(g => g.Key).ToList())
                    .Select((steps, i) => (Series)(Patterns[i], steps.Select(g => (double)g.Key).ToArray(), steps.Select(g => g.Average(e => e.HeldOut)).ToArray()))
                    .ToArray());

    /// <summary>The final held-out loss of every run: one marker per seed over the patterns.</summary>
    public static Figure Finals(IReadOnlyList<Run> runs) =>
        Chart.Scatter("Final held-out loss of every run", "pattern", "cross-entropy (nats)",
            runs.Select(r => r.Seed).Distinct().Order().Select(seed => Series.Categorical($"seed {seed}", [.. Patterns],
                Patterns.Select(p => runs.Single(r => r.Pattern == p && r.Seed == seed).HeldOut).ToArray())).ToArray());

    /// <summary>
    /// The paper's final losses for basic linear attention (Table 2 / Table 4, Linear-Llama3, 50B SlimPajama tokens):
    /// pure and 1/4 hybrid from data/published-convergence.csv, all softmax (Llama3) 2.759; it has no 1/2 hybrid (NaN).
    /// </summary>
    public static IReadOnlyDictionary<string, double> Published(string publishedConvergenceCsv)
    {
        var basic = Load(publishedConvergenceCsv).Rows.Single(r => BenchFrame.Text(r, "attention") == "basic linear attention");
        return new Dictionary<string, double>
        {
            ["LLLL"] = BenchFrame.Number(basic, "pure_loss"),
            ["LLLN"] = BenchFrame.Number(basic, "hybrid_quarter_softmax_loss"),
            ["LNLN"] = double.NaN,
            ["NNNN"] = PublishedSoftmax,
        };
    }

    /// <summary>The paper's Llama3 (all softmax) final loss, the same table.</summary>
    public const double PublishedSoftmax = 2.759;

    /// <summary>The share of the pure-linear to all-softmax gap that <paramref name="pattern"/> closes: 0 = as LLLL, 1 = as NNNN.</summary>
    public static double GapClosed(IReadOnlyDictionary<string, double> loss, string pattern) =>
        (loss["LLLL"] - loss[pattern]) / (loss["LLLL"] - loss["NNNN"]) + 0.0;   // + 0.0: no "-0" for LLLL itself

    /// <summary>The mean held-out loss of each pattern over its seeds.</summary>
    public static IReadOnlyDictionary<string, double> HeldOutMeans(IReadOnlyList<Run> runs) =>
        Patterns.ToDictionary(p => p, p => runs.Where(r => r.Pattern == p).Average(r => r.HeldOut));

    /// <summary>Ours next to the paper: held-out mean, the gap it closes, the paper's loss and its gap closed.</summary>
    public static DataFrame Comparison(IReadOnlyList<Run> runs, IReadOnlyDictionary<string, double> published)
    {
        var ours = HeldOutMeans(runs);
        return new DataFrame(
            new StringDataFrameColumn("pattern", Patterns),
            new DoubleDataFrameColumn("ours_held_out", Patterns.Select(p => ours[p])),
            new DoubleDataFrameColumn("ours_gap_closed", Patterns.Select(p => GapClosed(ours, p))),
            new DoubleDataFrameColumn("paper_loss", Patterns.Select(p => published[p])),
            new DoubleDataFrameColumn("paper_gap_closed", Patterns.Select(p => double.IsNaN(published[p]) ? double.NaN : GapClosed(published, p))));
    }

    /// <summary>Patterns ordered by <paramref name="loss"/>, best first: "NNNN &lt; LLLN &lt; LLLL".</summary>
    public static string Order(IReadOnlyDictionary<string, double> loss, IEnumerable<string> patterns) =>
        string.Join(" < ", patterns.OrderBy(p => loss[p]));
}
