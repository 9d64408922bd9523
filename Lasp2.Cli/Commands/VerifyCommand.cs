using System.ComponentModel;
using Lasp2.Reference;
using Lasp2.Research.Verification;
using Spectre.Console;
using Spectre.Console.Cli;
using TorchSharp;

namespace Lasp2.Cli.Commands;

/// <summary>`lasp2 verify`: the reference forms against each other, as a table with a verdict per line.</summary>
public sealed class VerifyCommand : Command<VerifyCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandOption("--dtype <DTYPE>"), Description("float64 (exact checks, tolerance 1e-10) or float32 (tolerance 1e-4). Default float64.")]
        public string Dtype { get; init; } = "float64";

        [CommandOption("--seq <N>"), Description("Sequence length N (>= 1). Default 97.")]
        public int Seq { get; init; } = 97;

        [CommandOption("--heads <H>"), Description("Query heads H (>= 1, a multiple of --kv-heads). Default 4.")]
        public int Heads { get; init; } = 4;

        [CommandOption("--kv-heads <HKV>"), Description("KV heads for the softmax GQA check. Default 2.")]
        public int KvHeads { get; init; } = 2;

        [CommandOption("--dim <D>"), Description("Head dimension d_k = d_v (>= 1). Default 16.")]
        public int Dim { get; init; } = 16;

        [CommandOption("--batch <B>"), Description("Batch size (>= 1). Default 2.")]
        public int Batch { get; init; } = 2;

        [CommandOption("--decay <LAMBDA>"), Description("Largest per-head decay lambda in (0, 1]. Default 0.9.")]
        public double Decay { get; init; } = 0.9;

        [CommandOption("--seed <SEED>"), Description("Random seed. Default 20250211.")]
        public long Seed { get; init; } = 20250211;

        public override ValidationResult Validate() =>
            Dtype is "float64" or "float32" ? ValidationResult.Success()
                : ValidationResult.Error($"--dtype must be float64 or float32; got '{Dtype}'.");
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        var config = new ReferenceCheckConfig(settings.Batch, settings.Heads, settings.KvHeads, settings.Seq,
            settings.Dim, settings.Dim, settings.Decay, ParseDtype(settings.Dtype), settings.Seed);
        var results = ReferenceChecks.Run(config);
        AnsiConsole.Write(ResultTable.Build("Reference forms", results));
        return ResultTable.Summarize(results);
    }

    internal static torch.ScalarType ParseDtype(string dtype) =>
        dtype == "float32" ? torch.ScalarType.Float32 : torch.ScalarType.Float64;
}
