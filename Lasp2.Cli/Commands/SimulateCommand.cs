using System.ComponentModel;
using System.Globalization;
using Lasp2.Reference;
using Lasp2.Research.Attention;
using Lasp2.Research.Bench;
using Lasp2.Research.Simulation;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Lasp2.Cli.Commands;

/// <summary>
/// `lasp2 simulate`: predicted training-iteration time, exposed communication, bytes per link class and memory per
/// rank of each method on a stored topology, for up to 128 virtual ranks, from the shapes-only schedules (no tensors
/// run). Writes a CSV and a tokens/s chart.
/// </summary>
public sealed class SimulateCommand : Command<SimulateCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandOption("--method <LIST>"), Description("Comma-separated method names, or 'all'. Default lasp2,lasp1,ring-linear.")]
        public string Method { get; init; } = "lasp2,lasp1,ring-linear";

        [CommandOption("--gpus <LIST>"), Description("World sizes W, comma-separated, each in 1..128. Default 64.")]
        public string Gpus { get; init; } = "64";

        [CommandOption("--seq <LIST>"), Description("Sequence lengths: a list (2K,512K) or a doubling range (2K..2048K); K = 1024, M = 1048576. Default 2K..2048K.")]
        public string Seq { get; init; } = "2K..2048K";

        [CommandOption("--heads <H>"), OptionRange(1), Description("Query heads (>= 1). Default 16.")]
        public int Heads { get; init; } = 16;

        [CommandOption("--kv-heads <HKV>"), OptionRange(1), Description("KV heads of softmax methods (divides --heads). Default = --heads.")]
        public int? KvHeads { get; init; }

        [CommandOption("--dim <D>"), OptionRange(1), Description("Head dimension d_k = d_v (>= 1). Default 128.")]
        public int Dim { get; init; } = 128;

        [CommandOption("--layers <L>"), OptionRange(1), Description("Layers (>= 1). Default 16.")]
        public int Layers { get; init; } = 16;

        [CommandOption("--batch <B>"), OptionRange(1), Description("Batch size (>= 1). Default 1.")]
        public int Batch { get; init; } = 1;

        [CommandOption("--block <L>"), OptionRange(1), Description("Block length of the chunked kernels (>= 1). Default 64.")]
        public int Block { get; init; } = 64;

        [CommandOption("--mask <MASK>"), Description("causal or none. Default causal.")]
        public string Mask { get; init; } = "causal";

        [CommandOption("--layout <LAYOUT>"), Description("contiguous or zigzag. Default contiguous.")]
        public string Layout { get; init; } = "contiguous";

        [CommandOption("--model <NAME>"), Description("Work and memory around attention: linear-llama3-1b (the paper's model) or attention (attention layers only). Default linear-llama3-1b.")]
        public string Model { get; init; } = "linear-llama3-1b";

        [CommandOption("--topology <NAME>"), Description("A stored topology (data/topologies/<name>.json: a100-dgx, h100-dgx, ethernet-100g) or a path to a .json file. Default a100-dgx.")]
        public string Topology { get; init; } = "a100-dgx";

        [CommandOption("--gather-chunks <K>"), OptionRange(1, 1024), Description("lasp2 only: split the state AllGather into K AllGathers (1..1024). Default 1.")]
        public int GatherChunks { get; init; } = 1;

        [CommandOption("--out <CSV>"), Description("CSV to write; the chart goes beside it (.html). Default data/simulate.csv.")]
        public string Out { get; init; } = "data/simulate.csv";

        public override ValidationResult Validate() => Lasp2App.Validate(() =>
        {
            if (KvHeads is { } kv && Heads % kv != 0) throw new ArgumentException($"--kv-heads = {kv} must divide --heads = {Heads}.", "--kv-heads");
            Guards.OneOf(Mask, ["causal", "none"], "--mask");
            Guards.OneOf(Layout, ["contiguous", "zigzag"], "--layout");
            foreach (int w in SweepArguments.Integers(Gpus, "--gpus")) Guards.InRange(w, 1, 128, "--gpus");
            _ = SweepArguments.Lengths(Seq);
            Guards.OneOf(Model, ModelSpec.Presets.Select(p => p.Name).ToList(), "--model");
            foreach (var m in Methods()) Guards.OneOf(m, MethodSchedules.Methods, "--method");
            if (Directory.Exists(Out)) throw new ArgumentException($"--out = '{Out}' is a directory; it must be a CSV file.", "--out");
            _ = ResolveTopology(Topology);
        });

        public IReadOnlyList<string> Methods() =>
            Method == "all" ? MethodSchedules.Methods : SweepArguments.List(Method);
    }

    /// <summary>The stored topology or .json file <paramref name="name"/>; an unknown one is an error naming --topology.</summary>
    internal static Topology ResolveTopology(string name, string option = "--topology")
    {
        try
        {
            return Research.Simulation.Topology.Resolve(name, Directory.GetCurrentDirectory());
        }
        catch (Exception e) when (e is ArgumentException or IOException or InvalidDataException or System.Text.Json.JsonException)
        {
            throw new ArgumentException($"{option} = '{name}': {Lasp2App.OneLine(e)}", option);
        }
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        var topology = ResolveTopology(settings.Topology);
        var model = ModelSpec.Get(settings.Model);
        var layout = settings.Layout == "zigzag" ? Lasp2.Reference.Layout.Zigzag : Lasp2.Reference.Layout.Contiguous;
        bool causal = settings.Mask == "causal";
        var plan = (from method in settings.Methods()
                    from w in SweepArguments.Integers(settings.Gpus, "--gpus")
                    from n in SweepArguments.Lengths(settings.Seq)
                    select (method, w, n)).ToList();
        var results = new List<SimulationResult>();
        var skipped = new List<string>();
        AnsiConsole.Progress().Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
            .Start(progress =>
            {
                var task = progress.AddTask("simulate", maxValue: plan.Count);
                foreach (var (method, w, n) in plan)
                {
                    task.Description = Markup.Escape($"{method} W={w} N={n}");
                    var registered = MethodRegistry.Get(method);
                    int kvHeads = registered.Supports.Kind == AttentionKind.Softmax ? settings.KvHeads ?? settings.Heads : settings.Heads;
                    var shape = new LayerShape(settings.Batch, settings.Heads, kvHeads, n, settings.Dim, settings.Dim, w, settings.Block,
                                               causal, layout, topology.Device.ElementBytes, settings.GatherChunks);
                    if (Unsupported(registered, shape) is { } reason) skipped.Add($"{method} W={w} N={n}: {reason}");
                    else results.Add(Simulator.Run(method, shape, settings.Layers, model, topology));
                    task.Increment(1);
                }
            });
        foreach (var line in skipped.Distinct()) AnsiConsole.MarkupLine($"[yellow]not applicable[/] {Markup.Escape(line)}");
        if (results.Count == 0)
        {
            AnsiConsole.MarkupLine("[red]nothing was simulated[/]: every requested configuration is not applicable.");
            return 1;
        }
        Print(results, topology);
        var frame = SimulationTable.Frame(results);
        SimulationTable.Save(frame, settings.Out);
        var chart = Path.ChangeExtension(settings.Out, ".html");
        SimulationTable.Throughput(results, $"Predicted tokens/s on {topology.Name} ({model.Name}, {settings.Layers} layers, H={settings.Heads}, d={settings.Dim})")
                       .SaveHtml(chart);
        AnsiConsole.MarkupLine($"wrote {results.Count} rows to [bold]{Markup.Escape(settings.Out)}[/] and the chart to [bold]{Markup.Escape(chart)}[/]");
        return 0;
    }

    /// <summary>Why the method cannot run this shape (mask, layout, heads, divisibility), or null.</summary>
    static string? Unsupported(ISequenceParallelAttention method, LayerShape shape)
    {
        var s = method.Supports;
        if (!MethodSchedules.Methods.Contains(method.Name)) return "no schedule for this method";
        if (shape.Causal ? !s.Causal : !s.Unmasked) return $"{method.Name} has no {(shape.Causal ? "causal" : "unmasked")} form";
        if (!s.Layouts.Contains(shape.Layout)) return $"{method.Name} has no {shape.Layout} layout";
        if (shape.GatherChunks > 1 && method.Name != "lasp2") return "--gather-chunks applies to lasp2 only";
        if (method.Unsupported(shape.WorldSize, shape.Heads, shape.KvHeads) is { } reason) return reason;
        long parts = (long)shape.WorldSize * SequenceLayout.PiecesPerRank(shape.Layout);
        return shape.Seq % parts != 0 ? $"N = {shape.Seq} is not divisible by {parts}" : null;
    }

    static void Print(IReadOnlyList<SimulationResult> results, Topology topology)
    {
        var table = new Table().Title($"predicted on {topology.Name} ({topology.Device.Name} at {topology.Device.Efficiency:0.##} of {topology.Device.Precision} peak)");
        foreach (var column in new[] { "method", "W", "N", "iteration s", "tokens/s", "compute s", "exposed s", "intra GB/rank", "inter GB/rank", "memory GB/rank" })
            table.AddColumn(column);
        string F(double x, string format) => x.ToString(format, CultureInfo.InvariantCulture);
        foreach (var r in results)
            table.AddRow(r.Method, r.WorldSize.ToString(CultureInfo.InvariantCulture), r.Seq.ToString(CultureInfo.InvariantCulture),
                F(r.Seconds, "0.0000"), F(r.TokensPerSecond, "0"), F(r.ComputeSeconds, "0.0000"), F(r.ExposedSeconds, "0.0000"),
                F(r.IntraBytes / 1e9, "0.000"), F(r.InterBytes / 1e9, "0.000"), F(r.Memory.Total / 1e9, "0.0") + (r.Fits ? "" : " OOM"));
        AnsiConsole.Write(table);
    }
}
