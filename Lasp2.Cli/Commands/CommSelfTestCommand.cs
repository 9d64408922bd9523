using System.ComponentModel;
using Lasp2.Reference;
using Lasp2.Research.Comm;
using Spectre.Console;
using Spectre.Console.Cli;
using static TorchSharp.torch;

namespace Lasp2.Cli.Commands;

/// <summary>
/// `lasp2 comm-selftest` (hidden): every collective on every rank, checked (see <see cref="CommSelfTest"/>).
/// Under mpirun / `lasp2 launch` each process is one MPI rank; with --in-process N the ranks are threads.
/// --fail-rank, --hang-rank and --mismatch-rank inject the faults the tests need. Exit code 0 when every rank passed.
/// </summary>
public sealed class CommSelfTestCommand : Command<CommSelfTestCommand.Settings>
{
    public sealed class Settings : RankSettings
    {
        [CommandOption("--fail-rank <R>"), OptionRange(0), Description("Rank R (>= 0, below the world size) throws in the middle of a series of AllGathers (fault test).")]
        public int? FailRank { get; init; }

        [CommandOption("--hang-rank <R>"), OptionRange(0), Description("Rank R (>= 0, below the world size) never arrives at an AllGather (timeout test).")]
        public int? HangRank { get; init; }

        [CommandOption("--mismatch-rank <R>"), OptionRange(0), Description("Rank R (>= 0, below the world size) passes a different shape to an AllGather (agreement test).")]
        public int? MismatchRank { get; init; }

        [CommandOption("--timeout <SECONDS>"), OptionRange(0, MinimumExclusive = true), Description("Per-call timeout in seconds (> 0). Default: LASP2_COMM_TIMEOUT or 300.")]
        public double? Timeout { get; init; }

        public override ValidationResult Validate() => Lasp2App.Validate(() =>
        {
            if (InProcess is not int worldSize) return;                                    // under MPI the job size is known only at run time
            foreach (var (rank, name) in new[] { (FailRank, "--fail-rank"), (HangRank, "--hang-rank"), (MismatchRank, "--mismatch-rank") })
                if (rank is int r) Guards.InRange(r, 0, worldSize - 1, name);
        });
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken) =>
        settings.RunRanks(group => RankMain(group, settings), settings.Timeout is double s ? TimeSpan.FromSeconds(s) : null);

    static int RankMain(IProcessGroup group, Settings settings)
    {
        if (settings.FailRank is not null || settings.HangRank is not null || settings.MismatchRank is not null)
        {
            InjectFault(group, settings);
            return 0;
        }
        if (group is MpiProcessGroup mpi && group.Rank == 0)
            Console.WriteLine($"{mpi.LibraryVersion.Split('\n')[0]}; thread level provided: {MpiProcessGroup.ThreadLevel}");
        var (failures, checks) = CommSelfTest.Run(group);
        foreach (var failure in failures) Console.Error.WriteLine($"FAIL {failure}");
        Console.WriteLine($"rank {group.Rank} of {group.WorldSize}: {checks - failures.Count} of {checks} checks passed");
        // Every rank's accounting, gathered through the group itself; rank 0 prints the totals per kind.
        var report = CommReport.Aggregate(CommReport.PerRank(CommReport.Gather(group)));
        if (group.Rank == 0) Console.WriteLine(CommReport.ToText(report));
        return failures.Count == 0 ? 0 : 1;
    }

    /// <summary>Five AllGathers; at the fourth (#3) the chosen rank throws, never arrives, or passes 17 elements instead of 16.</summary>
    static void InjectFault(IProcessGroup group, Settings settings)
    {
        using var scope = NewDisposeScope();
        for (int step = 0; step < 5; step++)
        {
            bool now = step == 3;
            if (now && group.Rank == settings.FailRank)
                throw new InvalidOperationException($"injected failure on rank {group.Rank} at step {step}");
            if (now && group.Rank == settings.HangRank)
                Thread.Sleep(System.Threading.Timeout.Infinite);
            group.AllGather(ones(now && group.Rank == settings.MismatchRank ? 17 : 16));
        }
    }
}
