using System.ComponentModel;
using System.Globalization;
using Lasp2.Research;
using Lasp2.Research.Attention;
using Lasp2.Research.Bench;
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

        [CommandOption("--world <W>"), Description("In-process ranks. Default 4.")]
        public int World { get; init; } = 4;

        [CommandOption("--seq <N>"), Description("Sequence length. Default 65536.")]
        public int Seq { get; init; } = 65536;

        [CommandOption("--heads <H>"), Description("Heads. Default 8.")]
        public int Heads { get; init; } = 8;

        [CommandOption("--dim <D>"), Description("d_k = d_v. Default 64.")]
        public int Dim { get; init; } = 64;

        [CommandOption("--block <L>"), Description("Kernel block size. Default 64.")]
        public int Block { get; init; } = 64;

        [CommandOption("--dtype <DTYPE>"), Description("float32 (default) or float64.")]
        public string Dtype { get; init; } = "float32";

        [CommandOption("--mask <MASK>"), Description("causal (default) or none.")]
        public string Mask { get; init; } = "causal";

        [CommandOption("--repeats <R>"), Description("Timed repeats after one warm-up. Default 3.")]
        public int Repeats { get; init; } = 3;

        [CommandOption("--kernel-threads <T>"), Description("Torch threads of the single-device kernel. Default: all cores.")]
        public int? KernelThreads { get; init; }

        [CommandOption("--rank-threads <T>"), Description("Torch threads per in-process rank. Default: cores / W (at least 1).")]
        public int? RankThreads { get; init; }
    }

    public override int Execute(CommandContext context, Settings s, CancellationToken cancellationToken)
    {
        if (Console.IsOutputRedirected) AnsiConsole.Profile.Width = Math.Max(AnsiConsole.Profile.Width, 240); // logs: no wrapping
        var config = new LayerTimingConfig(1, s.Heads, s.Seq, s.Dim, s.Block, s.Mask == "causal", VerifyCommand.ParseDtype(s.Dtype),
                                           Warmup: 1, Repeats: s.Repeats);
        int cores = Environment.ProcessorCount;
        double start = ProcStatus.LoadAverage();
        var kernel = LayerTiming.TimeKernel(config, s.KernelThreads ?? cores);
        var method = LayerTiming.TimeInProcess(MethodRegistry.Get(s.Method), s.World, config, s.RankThreads ?? Math.Max(1, cores / s.World));
        var table = new Table()
            .Title($"one layer fwd+bwd: B=1 H={s.Heads} N={s.Seq} d={s.Dim} block={s.Block} {s.Dtype} {s.Mask}, {cores} cores")
            .AddColumns("run", "median", "min", "CPU/iteration", "system/iteration", "minor faults/iteration", "AllGather hidden", "vs single device");
        foreach (var r in new[] { kernel, method })
            table.AddRow(Markup.Escape(r.Name), $"{r.Median.TotalMilliseconds:0.0} ms", $"{r.Min.TotalMilliseconds:0.0} ms",
                $"{r.CpuPerIteration.TotalMilliseconds:0} ms", $"{r.SystemPerIteration.TotalMilliseconds:0} ms", $"{r.FaultsPerIteration:0}",
                r.Overlap is { } o ? $"{o.HiddenFraction.ToString("P1", CultureInfo.InvariantCulture)} (compute {o.Compute.TotalMilliseconds:0.0} ms, wait {o.Wait.TotalMilliseconds:0.0} ms, {o.Calls} gathers)" : "-",
                $"{kernel.Median / r.Median:0.00}x");
        table.Caption($"native heap: {NativeHeap.State}; load average {ProcStatus.LoadAverage():0.00} at the end ({start:0.00} at the start)");
        AnsiConsole.Write(table);
        return 0;
    }
}
