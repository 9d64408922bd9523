using System.ComponentModel;
using System.Globalization;
using Lasp2.Reference;
using Lasp2.Research.Attention;
using Lasp2.Research.Verification;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Lasp2.Cli.Commands;

/// <summary>
/// `lasp2 time-layer` (hidden; the benchmark suite is `lasp2 bench`): one linear-attention layer forward +
/// backward, a method on W in-process ranks against the single-device chunked kernel, with the overlap.
/// </summary>
public sealed class TimeLayerCommand : Command<TimeLayerCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandOption("--method <NAME>"), Description("Registered method. Default lasp2.")]
        public string Method { get; init; } = "lasp2";

        [CommandOption("--world <W>"), OptionRange(1, 1024), Description("In-process ranks (1 to 1024). Default 4.")]
        public int World { get; init; } = 4;

        [CommandOption("--seq <N>"), OptionRange(1), Description("Sequence length (>= 1, divisible by --world). Default 65536.")]
        public int Seq { get; init; } = 65536;

        [CommandOption("--heads <H>"), OptionRange(1), Description("Heads (>= 1). Default 8.")]
        public int Heads { get; init; } = 8;

        [CommandOption("--dim <D>"), OptionRange(1), Description("d_k = d_v (>= 1). Default 64.")]
        public int Dim { get; init; } = 64;

        [CommandOption("--block <L>"), OptionRange(1), Description("Kernel block size (>= 1). Default 64.")]
        public int Block { get; init; } = 64;

        [CommandOption("--dtype <DTYPE>"), Description("float32 (default) or float64.")]
        public string Dtype { get; init; } = "float32";

        [CommandOption("--mask <MASK>"), Description("causal (default) or none.")]
        public string Mask { get; init; } = "causal";

        [CommandOption("--repeats <R>"), OptionRange(1), Description("Timed repeats after one warm-up (>= 1). Default 3.")]
        public int Repeats { get; init; } = 3;

        [CommandOption("--kernel-threads <T>"), OptionRange(1), Description("Torch threads of the single-device kernel (>= 1). Default: all cores.")]
        public int? KernelThreads { get; init; }

        [CommandOption("--rank-threads <T>"), OptionRange(1), Description("Torch threads per in-process rank (>= 1). Default: cores / W (at least 1).")]
        public int? RankThreads { get; init; }

        public override ValidationResult Validate() => Lasp2App.Validate(() =>
        {
            Guards.OneOf(Method, MethodRegistry.Names, "--method");
            Guards.OneOf(Dtype, ["float32", "float64"], "--dtype");
            Guards.OneOf(Mask, ["causal", "none"], "--mask");
            if (Seq % World != 0) throw new ArgumentException($"--seq = {Seq} must be divisible by --world = {World}.", "--seq");
        });
    }

    public override int Execute(CommandContext context, Settings s, CancellationToken cancellationToken)
    {
        if (Console.IsOutputRedirected) AnsiConsole.Profile.Width = Math.Max(AnsiConsole.Profile.Width, 240); // logs: no wrapping
        var config = new LayerTimingConfig(1, s.Heads, s.Seq, s.Dim, s.Block, s.Mask == "causal", VerifyCommand.ParseDtype(s.Dtype),
                                           Warmup: 1, Repeats: s.Repeats);
        int cores = Environment.ProcessorCount;
        var kernel = LayerTiming.TimeKernel(config, s.KernelThreads ?? cores);
        var method = LayerTiming.TimeInProcess(MethodRegistry.Get(s.Method), s.World, config, s.RankThreads ?? Math.Max(1, cores / s.World));
        var table = new Table()
            .Title($"one layer fwd+bwd: B=1 H={s.Heads} N={s.Seq} d={s.Dim} block={s.Block} {s.Dtype} {s.Mask}, {cores} cores")
            .AddColumns("run", "median", "min", "CPU/iteration", "AllGather hidden", "vs single device");
        foreach (var r in new[] { kernel, method })
            table.AddRow(Markup.Escape(r.Name), $"{r.Median.TotalMilliseconds:0.0} ms", $"{r.Min.TotalMilliseconds:0.0} ms",
                $"{r.CpuPerIteration.TotalMilliseconds:0} ms",
                r.Overlap is { } o ? $"{o.HiddenFraction.ToString("P1", CultureInfo.InvariantCulture)} (compute {o.Compute.TotalMilliseconds:0.0} ms, wait {o.Wait.TotalMilliseconds:0.0} ms, {o.Calls} gathers)" : "-",
                $"{kernel.Median / r.Median:0.00}x");
        AnsiConsole.Write(table);
        return 0;
    }
}
