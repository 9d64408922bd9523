using System.ComponentModel;
using Lasp2.Research.Comm;
using Spectre.Console.Cli;
using static TorchSharp.torch;

namespace Lasp2.Cli.Commands;

/// <summary>
/// `lasp2 comm-selftest` (hidden): every collective on every rank, checked (see <see cref="CommSelfTest"/>).
/// Under mpirun / `lasp2 launch` each process is one MPI rank; with --in-process N the ranks are threads.
/// --fail-rank and --hang-rank inject the faults the tests need. Exit code 0 when every rank passed.
/// </summary>
public sealed class CommSelfTestCommand : Command<CommSelfTestCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandOption("--in-process <N>"), Description("Run N in-process ranks (threads) instead of MPI ranks.")]
        public int? InProcess { get; init; }

        [CommandOption("--fail-rank <R>"), Description("Rank R throws in the middle of a series of AllGathers (fault test).")]
        public int? FailRank { get; init; }

        [CommandOption("--hang-rank <R>"), Description("Rank R never arrives at an AllGather (timeout test).")]
        public int? HangRank { get; init; }

        [CommandOption("--timeout <SECONDS>"), Description("Per-call timeout in seconds (> 0). Default: LASP2_COMM_TIMEOUT or 300.")]
        public double? Timeout { get; init; }
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        TimeSpan? timeout = settings.Timeout is double s ? TimeSpan.FromSeconds(s) : null;
        if (settings.InProcess is int worldSize)
        {
            var codes = ProcessGroups.RunInProcess(worldSize, group => RankMain(group, settings), timeout, threadsPerRank: 1);
            return codes.Max();
        }
        set_num_threads(1);
        return ProcessGroups.RunMpi(group => RankMain(group, settings), timeout);
    }

    static int RankMain(IProcessGroup group, Settings settings)
    {
        if (settings.FailRank is not null || settings.HangRank is not null)
        {
            InjectFault(group, settings.FailRank, settings.HangRank);
            return 0;
        }
        var (failures, checks) = CommSelfTest.Run(group);
        foreach (var failure in failures) Console.Error.WriteLine($"FAIL {failure}");
        Console.WriteLine($"rank {group.Rank} of {group.WorldSize}: {checks - failures.Count} of {checks} checks passed");
        return failures.Count == 0 ? 0 : 1;
    }

    static void InjectFault(IProcessGroup group, int? failRank, int? hangRank)
    {
        using var scope = NewDisposeScope();
        for (int step = 0; step < 5; step++)
        {
            if (group.Rank == failRank && step == 3)
                throw new InvalidOperationException($"injected failure on rank {group.Rank} at step {step}");
            if (group.Rank == hangRank && step == 3)
                Thread.Sleep(System.Threading.Timeout.Infinite);
            group.AllGather(ones(16));
        }
    }
}
