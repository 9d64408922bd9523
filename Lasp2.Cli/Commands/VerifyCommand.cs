using System.ComponentModel;
using System.Globalization;
using Lasp2.Reference;
using Lasp2.Research.Attention;
using Lasp2.Research.Bench;
using Lasp2.Research.Comm;
using Lasp2.Research.Verification;
using Spectre.Console;
using Spectre.Console.Cli;
using TorchSharp;
using Layout = Lasp2.Reference.Layout;

namespace Lasp2.Cli.Commands;

/// <summary>
/// `lasp2 verify`: the reference forms against each other, then the distributed methods against the
/// reference (O, dQ, dK, dV and the collectives counted), as tables with a verdict per line.
/// Without --method: the reference table plus a representative sweep of every method.
/// </summary>
public sealed class VerifyCommand : Command<VerifyCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandOption("--dtype <DTYPE>"), Description("float64 (exact checks, tolerance 1e-10) or float32 (tolerance 1e-4). Default float64.")]
        public string Dtype { get; init; } = "float64";

        [CommandOption("--seq <N>"), OptionRange(1), Description("Sequence length N (>= 1; divisible by W, or 2W for zigzag). Default 97 (reference), 112 (distributed).")]
        public int? Seq { get; init; }

        [CommandOption("--heads <H>"), OptionRange(1), Description("Query heads H (>= 1, a multiple of --kv-heads). Default 4 (reference), 8 (distributed: Ulysses needs H % W = 0 up to W = 8).")]
        public int? Heads { get; init; }

        [CommandOption("--kv-heads <HKV>"), OptionRange(1), Description("KV heads for the softmax checks (>= 1, divides --heads). Default 2 (reference; 1 for odd H), H (distributed).")]
        public int? KvHeads { get; init; }

        [CommandOption("--dim <D>"), OptionRange(1), Description("Head dimension d_k = d_v (>= 1). Default 16 (reference), d_k 16 / d_v 12 (distributed).")]
        public int? Dim { get; init; }

        [CommandOption("--batch <B>"), OptionRange(1), Description("Batch size (>= 1). Default 2.")]
        public int Batch { get; init; } = 2;

        [CommandOption("--decay <LAMBDA>"), OptionRange(0, 1, MinimumExclusive = true), Description("Largest per-head decay lambda in (0, 1]] (causal only). Default 0.9; the distributed sweep also runs 1.")]
        public double? Decay { get; init; }

        [CommandOption("--seed <SEED>"), Description("Random seed. Default 20250211.")]
        public long Seed { get; init; } = 20250211;

        [CommandOption("--method <NAME>"), Description("A registered method (lasp2, ...) or 'all'. Given: only the distributed checks run.")]
        public string? Method { get; init; }

        [CommandOption("--world <LIST>"), Description("World sizes in [[1, 1024]], comma-separated, e.g. 1,2,4,8 (default). With --backend mpi: the job size.")]
        public string? World { get; init; }

        [CommandOption("--backend <BACKEND>"), Description("inproc (W threads, default) or mpi (this process is one rank of an mpirun / lasp2 launch job).")]
        public string Backend { get; init; } = "inproc";

        [CommandOption("--mask <MASK>"), Description("causal or none. Default both.")]
        public string? Mask { get; init; }

        [CommandOption("--layout <LAYOUT>"), Description("contiguous, zigzag or both comma-separated. Default both.")]
        public string? Layout { get; init; }

        [CommandOption("--block <L>"), OptionRange(1), Description("Block size of the local chunked kernel (>= 1). Default 16.")]
        public int Block { get; init; } = 16;

        [CommandOption("--dump <DIR>"), Description("Write inputs, outputs, gradients and the reference's as .npy files under DIR (one folder per configuration).")]
        public string? Dump { get; init; }

        [CommandOption("--recurrence <NAME>"), Description("decay, scalar-gate, gla, delta, gated-delta, all, or a comma-separated list: " +
            "only the recurrence sweep runs (every method that supports each one, causal, against the per-token recurrent reference, " +
            "gradients of the gates and beta included; N defaults per W to the smallest multiple of 2W >= 97). " +
            "Without --method and --recurrence the default sweep also runs every recurrence on the gated methods.")]
        public string? Recurrence { get; init; }

        [CommandOption("--docs <DOCS>"), Description("Packed documents: lengths (e.g. 7,100,1,20; N is their sum), 'random' (from the seed over N) or 'equal:K'. Each method then runs with document boundaries and is compared with the reference given them.")]
        public string? Docs { get; init; }

        [CommandOption("--comm"), Description("Also print each method's measured communication (rank 0, forward + backward) next to the analytic model (CommModel); a mismatch fails.")]
        public bool Comm { get; init; }

        public override ValidationResult Validate() => Lasp2App.Validate(() =>
        {
            Guards.OneOf(Dtype, ["float64", "float32"], "--dtype");
            Guards.OneOf(Backend, ["inproc", "mpi"], "--backend");
            if (Mask is not null) Guards.OneOf(Mask, ["causal", "none"], "--mask");
            Layouts(this);
            var recurrences = Recurrences(this);
            if (recurrences.Count > 0)
            {
                if (Mask == "none") throw new ArgumentException("--mask = none: every recurrence is causal; omit --mask or pass causal.", "--mask");
                if (Decay is not null) throw new ArgumentException("--decay does not apply to --recurrence (the decay recurrence uses lambda_h = 0.9^(1 + h/H)).", "--decay");
                if (KvHeads is not null) throw new ArgumentException("--kv-heads does not apply to --recurrence (linear layers have H KV heads).", "--kv-heads");
                if (Docs is not null) throw new ArgumentException("--docs does not apply to --recurrence (the recurrence sweep runs one document).", "--docs");
            }
            if (Method is not null) Guards.OneOf(Method, [.. MethodRegistry.Names, "all"], "--method");
            var worlds = Worlds(this);
            if (Docs is not null && PackedDocuments.LengthOf(Docs) is { } sum && Seq is { } seq && seq != sum)
                throw new ArgumentException($"--docs lengths sum to {sum} but --seq = {seq}; omit --seq or make them agree.", "--docs");
            if (Docs is not null) PackedDocuments.Parse(Docs, DistributedSeq(this), Seed);
            if (KvHeads is { } kv)
            {
                int[] headCounts = Method is null ? [Heads ?? 4, Heads ?? 8] : [Heads ?? 8];   // reference and distributed defaults
                foreach (int heads in headCounts)
                    if (heads % kv != 0) throw new ArgumentException($"--kv-heads = {kv} must divide --heads = {heads}.", "--kv-heads");
            }
            if (Backend == "inproc" && (recurrences.Count == 0 || Seq is not null))
                foreach (int w in worlds)
                    foreach (var layout in Layouts(this))
                        try { SequenceLayout.CheckDivisible(DistributedSeq(this), w, layout); }
                        catch (ArgumentException e) { throw new ArgumentException($"--seq = {DistributedSeq(this)}: {Lasp2App.OneLine(e)}", "--seq"); }
            if (Dump is not null && File.Exists(Dump)) throw new ArgumentException($"--dump = '{Dump}' is a file; it must be a directory.", "--dump");
        });
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        if (Console.IsOutputRedirected || ProcessGroups.LaunchedByMpi) AnsiConsole.Profile.Width = Math.Max(AnsiConsole.Profile.Width, 240); // logs: no wrapping
        if (settings.Backend == "inproc") return Run(settings, null);
        // One rank of an MPI job: an exception on any rank aborts the whole job (non-zero exit everywhere).
        return ProcessGroups.RunMpi(group =>
        {
            torch.set_num_threads(Math.Max(1, Environment.ProcessorCount / group.WorldSize));
            return Run(settings, group);
        });
    }

    /// <summary>
    /// The checks on the in-process backend (<paramref name="mpiGroup"/> null) or as one rank of an MPI job:
    /// every rank checks the same global tensors, so all ranks return the same exit code; rank 0 prints.
    /// </summary>
    static int Run(Settings settings, IProcessGroup? mpiGroup)
    {
        var results = new List<CheckResult>();
        bool print = mpiGroup is null || mpiGroup.Rank == 0;
        if (Recurrences(settings) is { Count: > 0 } recurrences)
        {
            results.AddRange(RecurrenceSweep.Run(RecurrenceRequest(settings, recurrences, gatedMethodsOnly: false), mpiGroup));
            return print ? ResultTable.Summarize(results) : CheckResult.AllPassed(results) ? 0 : 1;
        }
        if (settings.Method is null && mpiGroup is null)
        {
            var config = new ReferenceCheckConfig(settings.Batch, settings.Heads ?? 4, settings.KvHeads ?? ((settings.Heads ?? 4) % 2 == 0 ? 2 : 1), settings.Seq ?? 97,
                settings.Dim ?? 16, settings.Dim ?? 16, settings.Decay ?? 0.9, ParseDtype(settings.Dtype), settings.Seed);
            var reference = ReferenceChecks.Run(config);
            AnsiConsole.Write(ResultTable.Build("Reference forms", reference));
            results.AddRange(reference);
        }

        var rows = new List<DistributedRow>();
        var skipped = new List<string>();
        foreach (var config in Sweep(settings, mpiGroup?.WorldSize))
        {
            var method = MethodRegistry.Get(config.Method);
            if (DistributedChecks.Unsupported(method, config) is { } reason)
            {
                skipped.Add($"{config.Label}: {reason}");
                continue;
            }
            (method as IOverlapReporting)?.Overlap.Reset();
            try
            {
                bool keep = settings.Dump is not null;
                var report = mpiGroup is null
                    ? DistributedChecks.RunInProcess(config, keep, Math.Max(1, Environment.ProcessorCount / config.WorldSize))[0]
                    : DistributedChecks.Run(mpiGroup, config, keep && mpiGroup.Rank == 0);
                if (settings.Dump is { } dir && print) DistributedChecks.Dump(report, dir);
                rows.Add(new DistributedRow(config, report, (method as IOverlapReporting)?.Overlap.All, null));
                results.AddRange(report.Checks);
            }
            catch (Exception error) when (mpiGroup is null)
            {
                // In-process: the sweep goes on and the failure is counted. Under MPI a failing rank must take
                // the job down (the backend makes the other ranks fail fast), so it propagates.
                rows.Add(new DistributedRow(config, null, null, Lasp2App.OneLine(error.InnerException ?? error)));
                results.Add(new CheckResult(config.Label, "error", new ErrorStats(double.PositiveInfinity, double.PositiveInfinity), 0, 0));
            }
        }
        if (!print) return CheckResult.AllPassed(results) ? 0 : 1;
        if (rows.Count > 0)
            AnsiConsole.Write(DistributedTable(rows, mpiGroup is null ? "in-process" : $"MPI, {mpiGroup.WorldSize} ranks"));
        foreach (var line in skipped)
            AnsiConsole.MarkupLine($"[yellow]not applicable {Markup.Escape(line)}[/]");
        foreach (var row in rows.Where(r => r.Error is not null))
            AnsiConsole.MarkupLine($"[red]ERROR {Markup.Escape(row.Config.Label)}: {Markup.Escape(row.Error!)}[/]");
        if (settings.Comm && rows.Any(r => r.Report is not null))
        {
            var (commTable, commChecks) = CommTable.Build(rows.Select(r => r.Report).OfType<DistributedReport>(),
                                                          mpiGroup is null ? "in-process" : $"MPI, {mpiGroup.WorldSize} ranks");
            AnsiConsole.Write(commTable);
            results.AddRange(commChecks);
        }
        if (settings.Method is null)
            results.AddRange(RecurrenceSweep.Run(RecurrenceRequest(settings, Lasp2.Reference.Recurrence.All, gatedMethodsOnly: true), mpiGroup));
        if (settings.Dump is { } dumped) AnsiConsole.MarkupLine($"[grey].npy files written under {Markup.Escape(Path.GetFullPath(dumped))}[/]");
        return ResultTable.Summarize(results);
    }

    /// <summary>The configurations selected by the options; unspecified axes take the representative sweep.</summary>
    static IEnumerable<DistributedCheckConfig> Sweep(Settings s, int? mpiWorldSize)
    {
        IReadOnlyList<string> methods = s.Method is null or "all" ? MethodRegistry.Names : [MethodRegistry.Get(s.Method).Name];
        IReadOnlyList<int> worlds = mpiWorldSize is int w ? [w] : Worlds(s);
        if (mpiWorldSize is int size && s.World is not null && Worlds(s).Any(x => x != size))
            throw new ArgumentException($"--world {s.World} does not match the MPI job of {size} ranks; omit --world or pass {size}.", "--world");
        bool[] masks = s.Mask is null ? [true, false] : [s.Mask == "causal"];
        var layouts = Layouts(s);
        long seq = DistributedSeq(s);
        var documents = s.Docs is null ? null : PackedDocuments.Parse(s.Docs, seq, s.Seed);
        // Unspecified axes sweep only what a method supports (masks; decays for causal linear methods); an axis
        // given explicitly is kept, so an unsupported request is reported as not applicable.
        foreach (var method in methods)
        {
            var supports = MethodRegistry.Get(method).Supports;
            // with --docs, an unspecified mask sweeps only the masks the method combines with documents
            var methodMasks = masks.Where(causal => s.Mask is not null
                || ((causal ? supports.Causal : supports.Unmasked) && (documents is null || supports.SupportsDocuments(causal)))).ToList();
            // a method that takes documents with no mask is still requested once, so it is reported as not applicable, never skipped silently
            if (methodMasks.Count == 0) methodMasks = [masks[0]];
            foreach (int worldSize in worlds)
                foreach (bool causal in methodMasks)
                    foreach (double decay in (double[])(s.Decay is { } d ? [d] : causal && supports.Decay ? [0.9, 1.0] : [1.0]))
                        foreach (var layout in layouts)
                            yield return new DistributedCheckConfig(method, worldSize, causal, decay, layout, ParseDtype(s.Dtype),
                                s.Batch, s.Heads ?? 8, s.KvHeads ?? s.Heads ?? 8, (int)seq, s.Dim ?? 16, s.Dim ?? 12, s.Block, s.Seed, documents);
        }
    }

    sealed record DistributedRow(DistributedCheckConfig Config, DistributedReport? Report, OverlapTotals? Overlap, string? Error);

    static Table DistributedTable(IReadOnlyList<DistributedRow> rows, string backend)
    {
        var first = rows[0].Config;
        string shape = $"{first.Dtype.ToString().ToLowerInvariant()}, B={first.Batch} H={first.Heads} N={first.Seq} " +
                       $"Dk={first.DimK} Dv={first.DimV} block={first.BlockSize}" +
                       (first.Documents is { } documents ? $", documents cu_seqlens={Markup.Escape(documents.ToString())}" : "");
        var table = new Table()
            .Title($"Distributed methods vs reference ({backend}; {shape}): max relative error; rank 0's collectives per fwd+bwd")
            .AddColumns("method", "W", "mask", "decay", "layout", "O", "dQ", "dK", "dV", "tol", "collectives", "hidden", "result");
        foreach (var row in rows)
        {
            var c = row.Config;
            string[] config = [c.Method, c.WorldSize.ToString(CultureInfo.InvariantCulture), c.Causal ? "causal" : "none",
                c.HeadDecays() is null ? "1" : c.Decay.ToString("0.###", CultureInfo.InvariantCulture), c.Layout.ToString().ToLowerInvariant()];
            if (row.Report is not { } report)
            {
                table.AddRow([.. config, .. Enumerable.Repeat("", 7), "[red]ERROR[/]"]);
                continue;
            }
            var errors = report.Checks.Select(check => check.Error.MaxRel.ToString("0.0e0", CultureInfo.InvariantCulture));
            string comm = report.Comm.Count == 0 ? "none" : string.Join(", ", report.Comm.Select(r =>
                $"{r.Calls} {r.Kind}, {r.BytesReceived / 1024.0:0.#} KiB in"));
            string hidden = c.WorldSize > 1 && row.Overlap is { Calls: > 0 } o ? // W = 1 sends nothing: nothing to hide
                o.HiddenFraction.ToString("P0", CultureInfo.InvariantCulture) : "-";
            table.AddRow([.. config, .. errors, report.Checks[0].Tolerance.ToString("0e0", CultureInfo.InvariantCulture),
                Markup.Escape(comm), hidden, report.Checks.All(check => check.Passed) ? "[green]pass[/]" : "[red]FAIL[/]"]);
        }
        return table;
    }

    /// <summary>--world as a list of sizes in [1, 1024] (default 1,2,4,8).</summary>
    static List<int> Worlds(Settings s)
    {
        var worlds = SweepArguments.Integers(s.World ?? "1,2,4,8", "--world");
        foreach (int w in worlds) Guards.InRange(w, 1, 1024, "--world");
        return worlds;
    }

    /// <summary>--layout as a list (contiguous, zigzag; default both).</summary>
    static Layout[] Layouts(Settings s)
    {
        if (s.Layout is null) return [Layout.Contiguous, Layout.Zigzag];
        var names = SweepArguments.List(s.Layout);
        if (names.Count == 0) throw new ArgumentException("--layout is empty; pass contiguous, zigzag or both.", "--layout");
        foreach (var name in names) Guards.OneOf(name, ["contiguous", "zigzag"], "--layout");
        return names.Distinct().Select(name => Enum.Parse<Layout>(name, ignoreCase: true)).ToArray();
    }

    /// <summary>--recurrence as recurrences ("all": every one); empty when not given.</summary>
    static IReadOnlyList<Recurrence> Recurrences(Settings s)
    {
        if (s.Recurrence is null) return [];
        var names = SweepArguments.List(s.Recurrence);
        if (names.Count == 0) throw new ArgumentException("--recurrence is empty; pass a recurrence name or all.", "--recurrence");
        foreach (var name in names) Guards.OneOf(name, [.. Lasp2.Reference.Recurrence.All.Select(r => r.Name), "all"], "--recurrence");
        return names.Contains("all") ? Lasp2.Reference.Recurrence.All
                                     : names.Distinct().Select(Lasp2.Reference.Recurrence.Get).ToList();
    }

    /// <summary>The recurrence sweep of these options: --method (or every method; only the gated ones if asked), worlds, layouts, shape.</summary>
    static RecurrenceSweep.Request RecurrenceRequest(Settings s, IReadOnlyList<Recurrence> recurrences, bool gatedMethodsOnly)
    {
        var methods = s.Method is not (null or "all") ? [MethodRegistry.Get(s.Method).Name]
            : MethodRegistry.All.Where(m => !gatedMethodsOnly || m.Recurrences.Count > 0).Select(m => m.Name).ToList();
        return new RecurrenceSweep.Request(methods, s.Method is not (null or "all"), recurrences, [.. Worlds(s)], Layouts(s),
            ParseDtype(s.Dtype), s.Batch, s.Heads ?? 8, s.Seq, s.Dim ?? 16, s.Dim ?? 12, s.Block, s.Seed, s.Dump);
    }

    /// <summary>N of the distributed checks: --seq, else the sum of the --docs lengths, else 112.</summary>
    static long DistributedSeq(Settings s) => s.Seq ?? (s.Docs is null ? null : PackedDocuments.LengthOf(s.Docs)) ?? 112;

    internal static torch.ScalarType ParseDtype(string dtype) =>
        dtype == "float32" ? torch.ScalarType.Float32 : torch.ScalarType.Float64;
}
