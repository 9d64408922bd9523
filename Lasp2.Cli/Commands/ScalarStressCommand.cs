using System.ComponentModel;
using Lasp2.Research.Verification;
using Spectre.Console.Cli;

namespace Lasp2.Cli.Commands;

/// <summary>
/// `lasp2 scalar-stress` (hidden): the softmax methods at W = 8, concurrent masked fills and AllGather-CP forwards on
/// ranks without a dispose scope, under forced garbage collections (<see cref="ScalarStress"/>). Exits 1 on any failure. Run it with DOTNET_TieredCompilation=0:
/// only fully optimised code lets a collection free a Scalar or tensor that native code is still reading.
/// </summary>
public sealed class ScalarStressCommand : Command<ScalarStressCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandOption("--repeats <K>"), OptionRange(1), Description("Runs of each softmax method at W = 8 (>= 1). Default 2.")]
        public int Repeats { get; init; } = 2;

        [CommandOption("--masked-fills <M>"), OptionRange(1), Description("Masked fills of a 2048 x 2048 tensor per thread, 2 threads (>= 1). Default 40.")]
        public int MaskedFills { get; init; } = 40;

        [CommandOption("--unscoped-runs <U>"), OptionRange(1), Description("Runs of 8 ranks doing 10 AllGather-CP forwards each without a dispose scope (>= 1). Default 20.")]
        public int UnscopedRuns { get; init; } = 20;
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        var result = ScalarStress.Run(settings.Repeats, settings.MaskedFills, settings.UnscopedRuns);
        Console.WriteLine($"{result.Checks} checks of {string.Join(", ", ScalarStress.SoftmaxMethods)} at W = 8, " +
                          $"{result.MaskedFills} masked fills and {result.UnscopedRuns} unscoped AllGather-CP runs under forced collections: " +
                          $"{result.Failures.Count} failed");
        foreach (var failure in result.Failures.Take(10)) Console.WriteLine("FAILED " + failure);
        return result.Failures.Count == 0 && result.Checks > 0 ? 0 : 1;
    }
}
