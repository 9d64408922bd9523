using System.ComponentModel;
using Lasp2.Research.Comm;
using Spectre.Console.Cli;
using static TorchSharp.torch;

namespace Lasp2.Cli.Commands;

/// <summary>
/// Settings of a command that runs as every rank of a group: the MPI job it was launched in (mpirun /
/// `lasp2 launch`), or --in-process N threads.
/// </summary>
public class RankSettings : CommandSettings
{
    [CommandOption("--in-process <N>"), OptionRange(1, 1024), Description("Run N in-process ranks (threads, 1 to 1024) instead of MPI ranks.")]
    public int? InProcess { get; init; }

    /// <summary>Runs <paramref name="rankMain"/> on every rank (one torch thread each) and returns the worst exit code.</summary>
    public int RunRanks(Func<IProcessGroup, int> rankMain, TimeSpan? timeout = null, bool? checkAgreement = null)
    {
        if (InProcess is int worldSize)
            return ProcessGroups.RunInProcess(worldSize, rankMain, timeout, threadsPerRank: 1).Max();
        set_num_threads(1);
        return ProcessGroups.RunMpi(rankMain, timeout, checkAgreement);
    }
}
