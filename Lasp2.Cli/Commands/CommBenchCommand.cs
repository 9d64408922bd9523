using System.ComponentModel;
using System.Globalization;
using Lasp2.Research.Comm;
using Spectre.Console.Cli;
using static TorchSharp.torch;

namespace Lasp2.Cli.Commands;

/// <summary>
/// `lasp2 comm-bench` (hidden): median AllGather latency of one 64x64 float32 state (16 KiB) and of 16 MiB per
/// rank, on MPI (under `lasp2 launch`) or in-process (--in-process N). Rank 0 prints one line per size.
/// </summary>
public sealed class CommBenchCommand : Command<CommBenchCommand.Settings>
{
    public sealed class Settings : RankSettings
    {
        [CommandOption("--iterations <K>"), OptionRange(1), Description("Timed iterations for the 16 KiB state (>= 1); the 16 MiB case uses K/20. Default 2000.")]
        public int Iterations { get; init; } = 2000;

        [CommandOption("--no-check"), Description("MPI: skip the cross-rank agreement check before each collective.")]
        public bool NoCheck { get; init; }
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        string backend = settings.InProcess is not null ? "in-process" : settings.NoCheck ? "mpi (no check)" : "mpi";
        return settings.RunRanks(group => Measure(group, settings, backend), checkAgreement: !settings.NoCheck);
    }

    static int Measure(IProcessGroup group, Settings settings, string backend)
    {
        foreach (var (label, elements, iterations) in new[]
                 { ("64x64 float32 (16 KiB)", 64L * 64, settings.Iterations), ("16 MiB", 4L << 20, Math.Max(settings.Iterations / 20, 5)) })
        {
            double median = CommLatency.AllGather(group, elements, iterations);
            // The result [W, n] is a new tensor each call: its first touch is part of the latency.
            double touch = group.Rank == 0 ? CommLatency.FirstTouch(group.WorldSize * elements, iterations) : 0;
            if (group.Rank == 0)
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{backend,-16} W={group.WorldSize}  AllGather {label,-24} median {median * 1e6,10:0.0} us  " +
                    $"({iterations} iterations; allocating + first touch of the result alone: {touch * 1e6:0.0} us)"));
        }
        return 0;
    }
}
