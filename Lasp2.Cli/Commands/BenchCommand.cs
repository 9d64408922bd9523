using System.ComponentModel;
using System.Diagnostics;
using System.Globalization;
using Lasp2.Reference;
using Lasp2.Research.Bench;
using Lasp2.Research.Verification;
using Microsoft.Data.Analysis;
using Spectre.Console;
using Spectre.Console.Cli;
using TorchSharp;

namespace Lasp2.Cli.Commands;

/// <summary>
/// `lasp2 bench`: every method side by side against the machine's measured matmul ceiling. Measures
/// the ceiling, sweeps the plan with a progress display, appends the rows to a CSV in data/, prints a
/// summary table and the targets, and writes the Plotly charts from the whole CSV.
/// Under MPI (`lasp2 launch -n W -- bench --backend mpi ...`) every rank runs the sweep; rank 0 reports.
/// </summary>
public sealed class BenchCommand : Command<BenchCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandOption("--methods <LIST>"), Description("Comma-separated method names, or 'all'. Default all.")]
        public string Methods { get; init; } = "all";

        [CommandOption("--seq <LIST>"), Description("Sequence lengths: a list (1K,4K) or a doubling range (1K..64K); K = 1024, M = 1048576. Default 1K..64K.")]
        public string Seq { get; init; } = "1K..64K";

        [CommandOption("--world <LIST>"), Description("World sizes W (>= 1). Default 1,2,4,8 (in-process); the MPI world size under MPI.")]
        public string? World { get; init; }

        [CommandOption("--backend <BACKEND>"), Description("inproc (ranks as threads) or mpi (inside `lasp2 launch`). Default inproc.")]
        public string Backend { get; init; } = "inproc";

        [CommandOption("--mask <LIST>"), Description("causal, none, or both (comma-separated). Default causal.")]
        public string Mask { get; init; } = "causal";

        [CommandOption("--dtype <LIST>"), Description("float32, float64 (comma-separated). Default float32.")]
        public string Dtype { get; init; } = "float32";

        [CommandOption("--batch <B>"), OptionRange(1), Description("Batch size (>= 1). Default 1.")]
        public int Batch { get; init; } = 1;

        [CommandOption("--heads <H>"), OptionRange(1), Description("Query heads (>= 1). Default 2.")]
        public int Heads { get; init; } = 2;

        [CommandOption("--kv-heads <HKV>"), OptionRange(1), Description("KV heads of softmax methods (divides --heads). Default = --heads.")]
        public int? KvHeads { get; init; }

        [CommandOption("--dim <D>"), OptionRange(1), Description("Head dimension d_k = d_v (>= 1). Default 64.")]
        public int Dim { get; init; } = 64;

        [CommandOption("--block <L>"), OptionRange(1), Description("Block length of chunked kernels (>= 1). Default max(64, --dim).")]
        public int? BlockOption { get; init; }

        /// <summary>
        /// The block length: L &gt;= d by default, so the block states [nb,d,d] are at most one [C,d] tensor. Measured, chunked
        /// kernel fwd+bwd, N = 64K, 2 threads: d = 128 (h = 1) L = 64 0.273 s, L = 128 0.273 s (fraction of peak 0.35 -> 0.41,
        /// half the state memory), L = 256 0.384 s; d = 64 (h = 8) L = 64 0.745 s, L = 128 0.899 s.
        /// </summary>
        public int Block => BlockOption ?? Math.Max(64, Dim);

        [CommandOption("--docs <DOCS>"), Description("Packed documents at every N: 'equal:K' (K equal documents), 'random' (from a fixed seed) or lengths summing to N. Methods without documents under the mask are left out. Default: one document.")]
        public string? Docs { get; init; }

        [CommandOption("--decay <LAMBDA>"), OptionRange(0, 1, MinimumExclusive = true), Description("One lambda in (0, 1]] for every head of the linear methods; omit for basic linear attention.")]
        public double? Decay { get; init; }

        [CommandOption("--threads <T>"), OptionRange(1), Description("libtorch threads per rank (>= 1). Default: cores / W, at least 1.")]
        public int? Threads { get; init; }

        [CommandOption("--warmup <N>"), OptionRange(0), Description("Untimed iterations per configuration (>= 0). Default 1.")]
        public int Warmup { get; init; } = 1;

        [CommandOption("--iterations <N>"), OptionRange(1), Description("Timed iterations per configuration (>= 1). Default 5.")]
        public int Iterations { get; init; } = 5;

        [CommandOption("--max-seconds <S>"), OptionRange(0, MinimumExclusive = true), Description("Stop a method's N sweep when an iteration is predicted to take longer (> 0). Default 10.")]
        public double MaxSeconds { get; init; } = 10;

        [CommandOption("--memory-gb <GB>"), OptionRange(0, MinimumExclusive = true), Description("Stop a method's N sweep when all ranks together are predicted to need more (> 0). Default 60% of RAM.")]
        public double? MemoryGb { get; init; }

        [CommandOption("--out <CSV>"), Description("CSV to write. Default data/bench.csv.")]
        public string Out { get; init; } = "data/bench.csv";

        [CommandOption("--append"), Description("Append to --out (same schema) instead of replacing it; charts and targets use the whole file.")]
        public bool Append { get; init; }

        [CommandOption("--charts <DIR>"), Description("Directory for the HTML charts; 'none' for no charts. Default: the CSV's directory.")]
        public string? Charts { get; init; }

        [CommandOption("--peak-size <N>"), OptionRange(64), Description("Matrix side of the matmul-peak measurement (>= 64). Default 2048 (512 with --quick).")]
        public int? PeakSize { get; init; }

        [CommandOption("--report"), Description("Run nothing: read --out, print its summary and targets and redraw the charts.")]
        public bool Report { get; init; }

        [CommandOption("--profile"), Description("Run nothing else: profile the chunked kernel's phases (1 thread; first --seq, --heads, --dim, --block, --dtype) and write <out>-kernel-profile.csv.")]
        public bool Profile { get; init; }

        [CommandOption("--quick"), Description("Smoke run in well under 2 minutes: N 1K,2K, W 1,2,4, float32 causal, d 32, 3 iterations (other options still apply on top).")]
        public bool Quick { get; init; }

        [CommandOption("--timeout <S>"), OptionRange(0, MinimumExclusive = true), Description("Seconds a collective may wait before the run fails (> 0). Default 600.")]
        public double Timeout { get; init; } = 600;

        public override ValidationResult Validate() => Lasp2App.Validate(() =>
        {
            Guards.OneOf(Backend, ["inproc", "mpi"], "--backend");
            if (Methods != "all")
            {
                var known = BenchMethods.All().Keys.ToList();
                foreach (var method in SweepArguments.List(Methods)) Guards.OneOf(method, [.. known, "all"], "--methods");
            }
            if (KvHeads is { } kv && Heads % kv != 0) throw new ArgumentException($"--kv-heads = {kv} must divide --heads = {Heads}.", "--kv-heads");
            _ = SweepArguments.Lengths(Seq);
            _ = SweepArguments.Integers(World ?? "1", "--world");
            _ = SweepArguments.Masks(Mask);
            _ = SweepArguments.Dtypes(Dtype);
            if (Docs is not null)
                foreach (long n in SweepArguments.Lengths(Seq)) PackedDocuments.Parse(Docs, n, seed: 20250211);
            if (Report && !File.Exists(Out)) throw new ArgumentException($"--out = '{Out}' does not exist; --report reads it.", "--out");
            if (Directory.Exists(Out)) throw new ArgumentException($"--out = '{Out}' is a directory; it must be a CSV file.", "--out");
        });
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        if (settings.Report) return Report(settings, BenchCsv.Load(settings.Out));
        if (settings.Profile) return Profile(settings);
        var watch = Stopwatch.StartNew();
        using var backend = BenchBackends.Create(settings.Backend, TimeSpan.FromSeconds(settings.Timeout));
        var methods = BenchMethods.All();
        var plan = Plan(settings, methods.Keys, backend);
        bool reporter = backend.IsReporter;

        var peaks = backend.MeasurePeaks([1, 2], settings.PeakSize ?? (settings.Quick ? 512 : 2048), settings.Quick ? 3 : 8);
        // Under MPI the command each rank sees is the part after `lasp2 launch -n W --`.
        string launch = backend.WorldSize is { } w && settings.Backend == "mpi" ? $"lasp2 launch -n {w} -- " : "lasp2 ";
        var runContext = new BenchContext(MachineInfo.Current(), peaks, launch + string.Join(' ', context.Arguments.Select(Quote)), DateTime.UtcNow);
        if (reporter) AnsiConsole.Write(PeakTable(runContext));

        // Rows reach the CSV as they are measured: a run that dies keeps what it measured.
        if (reporter) BenchCsv.Write(settings.Out, [], settings.Append);
        BenchSweep Sweep(Action<BenchCase, int, int>? progress) => new(backend, methods, runContext)
        {
            Progress = progress,
            Measured = reporter ? row => BenchCsv.Write(settings.Out, [row], append: true) : null,
        };
        IReadOnlyList<BenchRow> rows = [];
        if (reporter && !Console.IsOutputRedirected)
            AnsiConsole.Progress().Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
                .Start(progress =>
                {
                    var task = progress.AddTask("bench");
                    rows = Sweep((c, done, total) => { task.MaxValue = total; task.Value = done; task.Description = Markup.Escape(c.Label); }).Run(plan);
                    task.Value = task.MaxValue;
                });
        else
            rows = Sweep(reporter ? (c, done, total) => Console.WriteLine($"[{done + 1}/{total}] {c.Label}") : null).Run(plan);
        if (!reporter) return 0;

        AnsiConsole.Write(FrameTables.Of("This run", BenchFrame.Summary(BenchFrame.From(rows))));
        AnsiConsole.MarkupLine($"wrote {rows.Count} rows to [bold]{Markup.Escape(settings.Out)}[/] in {watch.Elapsed.TotalSeconds:0.0} s");
        return Report(settings, BenchCsv.Load(settings.Out), summary: false);
    }

    static int Report(Settings settings, DataFrame frame, bool summary = true)
    {
        if (summary) AnsiConsole.Write(FrameTables.Of(settings.Out, BenchFrame.Summary(frame)));
        var targets = new Table().Title("Targets (benchmark outputs, not tests; medians)").AddColumns("target", "measured", "bound", "verdict", "basis");
        foreach (var t in BenchTargets.Evaluate(frame))
            targets.AddRow(Markup.Escape(t.Name), t.Value.ToString("0.000", CultureInfo.InvariantCulture),
                (t.AtLeast ? ">= " : "<= ") + t.Limit.ToString("0.00", CultureInfo.InvariantCulture),
                t.Verdict switch { "met" => "[green]met[/]", "missed" => "[red]missed[/]", _ => "[grey]not measured[/]" },
                Markup.Escape(t.Basis));
        AnsiConsole.Write(targets);
        var versus = BenchTargets.Lasp2VersusLasp1(frame);
        AnsiConsole.Write(FrameTables.Of("LASP-2 / LASP-1 per backend, W and N (median times)", versus));
        if (settings.Charts != "none")
        {
            string ratios = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(settings.Out))!, Path.GetFileNameWithoutExtension(settings.Out) + "-lasp2-vs-lasp1.csv");
            DataFrame.SaveCsv(versus, ratios);
            AnsiConsole.MarkupLine($"wrote [bold]{Markup.Escape(ratios)}[/]");
        }
        string charts = settings.Charts ?? Path.GetDirectoryName(Path.GetFullPath(settings.Out))!;
        if (charts != "none")
            foreach (var path in BenchCharts.Save(frame, charts))
                AnsiConsole.MarkupLine($"chart [bold]{Markup.Escape(path)}[/]");
        return 0;
    }

    static int Profile(Settings s)
    {
        torch.set_num_threads(1);
        long n = SweepArguments.Lengths(s.Seq)[0];
        var profile = KernelProfile.Run(s.Batch, s.Heads, n, s.Dim, s.Block, SweepArguments.Dtypes(s.Dtype)[0]);
        AnsiConsole.Write(FrameTables.Of($"chunked kernel phases, B={s.Batch} H={s.Heads} N={n} d={s.Dim} L={s.Block} {s.Dtype}, 1 thread (memory in [B,H,N,d] tensors)", profile));
        string path = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(s.Out))!, Path.GetFileNameWithoutExtension(s.Out) + "-kernel-profile.csv");
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        DataFrame.SaveCsv(profile, path);
        AnsiConsole.MarkupLine($"wrote [bold]{Markup.Escape(path)}[/]");
        return 0;
    }

    static Table PeakTable(BenchContext run)
    {
        var m = run.Machine;
        var table = new Table().Title($"{Markup.Escape(m.Cpu)}, {m.Cores} cores, {m.MemoryBytes / (1L << 30)} GiB; {Markup.Escape(m.Os)}; {Markup.Escape(m.DotNet)}; TorchSharp {m.TorchSharp}, libtorch {m.LibTorch}")
            .AddColumns("dtype", "threads", "n", "libtorch matmul peak GFLOP/s");
        foreach (var p in run.Peaks) table.AddRow(p.Dtype.ToString(), p.Threads.ToString(CultureInfo.InvariantCulture), p.Size.ToString(CultureInfo.InvariantCulture), p.GflopsPerSecond.ToString("0.0", CultureInfo.InvariantCulture));
        return table;
    }

    static string Quote(string argument) => argument.Contains(' ') ? $"\"{argument}\"" : argument;

    // The plan: the options as given, with --quick's small defaults where an option was left at its default.
    static SweepPlan Plan(Settings s, IEnumerable<string> known, IBenchBackend backend)
    {
        bool quick = s.Quick;
        var methods = s.Methods == "all" ? known.ToList() : SweepArguments.List(s.Methods);
        string world = s.World ?? (s.Backend == "mpi" ? backend.WorldSize?.ToString(CultureInfo.InvariantCulture) ?? "1" : quick ? "1,2,4" : "1,2,4,8");
        return new SweepPlan(methods,
            SweepArguments.Lengths(quick && s.Seq == "1K..64K" ? "1K,2K" : s.Seq),
            SweepArguments.Integers(world, "--world"),
            SweepArguments.Masks(s.Mask), SweepArguments.Dtypes(s.Dtype),
            s.Batch, s.Heads, s.KvHeads ?? s.Heads, quick && s.Dim == 64 ? 32 : s.Dim, s.Block, s.Threads,
            s.Warmup, quick && s.Iterations == 5 ? 3 : s.Iterations, s.MaxSeconds,
            (s.MemoryGb ?? 0.6 * MachineInfo.Current().MemoryBytes / 1e9) * 1e9,
            s.Decay is { } d ? Enumerable.Repeat(d, s.Heads).ToArray() : null, s.Docs);
    }
}
