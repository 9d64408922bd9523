using System.Globalization;
using Lasp2.Reference;
using Lasp2.Research.Attention;
using Lasp2.Research.Comm;
using Lasp2.Research.Verification;
using Spectre.Console;
using TorchSharp;
using Layout = Lasp2.Reference.Layout;

namespace Lasp2.Cli.Commands;

/// <summary>
/// `lasp2 verify --recurrence`: every selected (method, recurrence) pair on every world size and layout against the
/// per-token recurrent reference (O and the gradients of q, k, v, the log-gates and beta), and rank 0's measured
/// communication against the method's model, as one table with a verdict per line.
/// </summary>
static class RecurrenceSweep
{
    /// <summary>What to run. <paramref name="Seq"/> null: per world size the smallest multiple of 2W that is &gt;= 97.</summary>
    public sealed record Request(IReadOnlyList<string> Methods, bool MethodsExplicit, IReadOnlyList<Recurrence> Recurrences,
                                 int[] Worlds, Layout[] Layouts, torch.ScalarType Dtype, int Batch, int Heads, int? Seq,
                                 int DimK, int DimV, int BlockSize, long Seed, string? Dump);

    /// <summary>The default length on <paramref name="worldSize"/> ranks: divisible by 2W (both layouts), not by the block.</summary>
    public static int DefaultSeq(int worldSize) => 2 * worldSize * (int)Math.Ceiling(97.0 / (2 * worldSize));

    /// <summary>Runs the sweep (on the in-process backend, or as one rank of <paramref name="mpiGroup"/>); rank 0 prints.</summary>
    public static IReadOnlyList<CheckResult> Run(Request request, IProcessGroup? mpiGroup)
    {
        bool print = mpiGroup is null || mpiGroup.Rank == 0;
        var results = new List<CheckResult>();
        var rows = new List<Row>();
        var skipped = new List<string>();
        int[] worlds = mpiGroup is null ? request.Worlds : [mpiGroup.WorldSize];
        foreach (var name in request.Methods)
        {
            var method = MethodRegistry.Get(name);
            foreach (var recurrence in request.Recurrences)
            {
                if (GatedChecks.Unsupported(method, recurrence) is { } reason)
                {
                    // a pair nobody asked for by name is simply not part of the sweep
                    if (request.MethodsExplicit) skipped.Add(reason);
                    continue;
                }
                foreach (int worldSize in worlds)
                    foreach (var layout in request.Layouts)
                    {
                        var config = new GatedCheckConfig(method.Name, recurrence, worldSize, layout, request.Dtype, request.Batch,
                            request.Heads, request.Seq ?? DefaultSeq(worldSize), request.DimK, request.DimV, request.BlockSize,
                            Seed: request.Seed);
                        if (method.Unsupported(worldSize, config.Heads, config.Heads) is { } shape)
                        {
                            skipped.Add($"{config.Label}: {shape}");
                            continue;
                        }
                        rows.Add(RunOne(config, mpiGroup, request.Dump is not null, print ? request.Dump : null, results));
                    }
            }
        }
        if (!print) return results;
        if (rows.Count > 0) AnsiConsole.Write(Table(rows, mpiGroup is null ? "in-process" : $"MPI, {mpiGroup.WorldSize} ranks"));
        foreach (var line in skipped) AnsiConsole.MarkupLine($"[yellow]not applicable {Markup.Escape(line)}[/]");
        foreach (var row in rows.Where(r => r.Error is not null))
            AnsiConsole.MarkupLine($"[red]ERROR {Markup.Escape(row.Config.Label)}: {Markup.Escape(row.Error!)}[/]");
        return results;
    }

    sealed record Row(GatedCheckConfig Config, GatedReport? Report, bool CommMatches, string? Error);

    static Row RunOne(GatedCheckConfig config, IProcessGroup? mpiGroup, bool keep, string? dump, List<CheckResult> results)
    {
        try
        {
            var report = mpiGroup is null
                ? GatedChecks.RunInProcess(config, keep, Math.Max(1, Environment.ProcessorCount / config.WorldSize))[0]
                : GatedChecks.Run(mpiGroup, config, keep && mpiGroup.Rank == 0);
            if (dump is not null) GatedChecks.Dump(report, dump);
            bool matches = CommMatches(report, mpiGroup?.Rank ?? 0);
            results.AddRange(report.Checks);
            results.Add(new CheckResult(config.Label, "comm",
                matches ? new ErrorStats(0, 0) : new ErrorStats(double.PositiveInfinity, double.PositiveInfinity), 0, Elements: 1));
            return new Row(config, report, matches, null);
        }
        catch (Exception error) when (mpiGroup is null)
        {
            // In-process: the sweep goes on and the failure is counted; under MPI a failing rank takes the job down.
            results.Add(new CheckResult(config.Label, "error", new ErrorStats(double.PositiveInfinity, double.PositiveInfinity), 0, 0));
            return new Row(config, null, false, Lasp2App.OneLine(error.InnerException ?? error));
        }
    }

    /// <summary>True when this rank's calls and bytes per kind equal the model's (forward + backward).</summary>
    static bool CommMatches(GatedReport report, int rank)
    {
        var c = report.Config;
        var shape = new CommShape(c.Batch, c.Heads, c.Heads, c.Seq, c.DimK, c.DimV, c.WorldSize,
                                  c.Dtype == torch.ScalarType.Float64 ? 8 : 4, c.Layout, Causal: true, c.Recurrence);
        var prediction = CommModel.Predict(c.Method, shape, rank);
        var predicted = prediction.Forward.Calls.Concat(prediction.Backward.Calls).GroupBy(x => x.Kind)
            .ToDictionary(g => g.Key, g => (g.Sum(x => x.Calls), g.Sum(x => x.BytesSent), g.Sum(x => x.BytesReceived)));
        var measured = report.Comm.Where(r => r.Calls > 0).ToDictionary(r => r.Kind, r => (r.Calls, r.BytesSent, r.BytesReceived));
        return predicted.Count == measured.Count && predicted.All(p => measured.TryGetValue(p.Key, out var m) && m == p.Value);
    }

    static Table Table(IReadOnlyList<Row> rows, string backend)
    {
        var first = rows[0].Config;
        var table = new Table()
            .Title($"Recurrences across ranks vs the recurrent reference ({backend}; {first.Dtype.ToString().ToLowerInvariant()}, " +
                   $"B={first.Batch} H={first.Heads} Dk={first.DimK} Dv={first.DimV} block={first.BlockSize}): max relative error; " +
                   "rank 0's collectives per fwd+bwd against the model")
            .AddColumns("method", "recurrence", "W", "layout", "N", "O", "dQ", "dK", "dV", "dG", "dBeta", "tol", "collectives", "comm", "result");
        foreach (var row in rows)
        {
            var c = row.Config;
            string[] config = [c.Method, c.Recurrence.Name, Number(c.WorldSize), c.Layout.ToString().ToLowerInvariant(), Number(c.Seq)];
            if (row.Report is not { } report)
            {
                table.AddRow([.. config, .. Enumerable.Repeat("", 9), "[red]ERROR[/]"]);
                continue;
            }
            string Error(string quantity) => report.Checks.FirstOrDefault(x => x.Quantity == quantity) is { } check
                ? check.Error.MaxRel.ToString("0.0e0", CultureInfo.InvariantCulture) : "-";
            string comm = report.Comm.Count == 0 ? "none" : string.Join(", ", report.Comm.Select(r =>
                $"{r.Calls} {r.Kind}, {r.BytesReceived / 1024.0:0.#} KiB in"));
            bool passed = report.Checks.All(x => x.Passed) && row.CommMatches;
            table.AddRow([.. config, .. new[] { "O", "dQ", "dK", "dV", "dG", "dBeta" }.Select(Error),
                report.Checks[0].Tolerance.ToString("0e0", CultureInfo.InvariantCulture), Markup.Escape(comm),
                row.CommMatches ? "[green]match[/]" : "[red]MISMATCH[/]", passed ? "[green]pass[/]" : "[red]FAIL[/]"]);
        }
        return table;
    }

    static string Number(long value) => value.ToString(CultureInfo.InvariantCulture);
}
