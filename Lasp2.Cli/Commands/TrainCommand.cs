using System.Text.Json;
using System.ComponentModel;
using System.Globalization;
using Lasp2.Charts;
using Lasp2.Reference;
using Lasp2.Research.Attention;
using Lasp2.Research.Comm;
using Lasp2.Research.Model;
using Spectre.Console;
using Spectre.Console.Cli;
using TorchSharp;
using Layout = Lasp2.Reference.Layout;

namespace Lasp2.Cli.Commands;

/// <summary>
/// `lasp2 train`: a Linear-Llama3 hybrid on Debian's fortunes (GPT-2 BPE, a derived vocabulary), sequence x data
/// parallel on in-process ranks or as every rank of an MPI job; a progress bar, a CSV log, a loss chart and a
/// checkpoint in the run folder; --resume continues from a checkpoint at any SP x DP.
/// </summary>
public sealed class TrainCommand : Command<TrainCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandOption("--pattern <PATTERN>"), Description("Layers: L (linear attention) or N (softmax GQA), e.g. LLLN (default). From the checkpoint with --resume.")]
        public string? Pattern { get; init; }

        [CommandOption("--recurrence <KIND>"), Description("Recurrence of the L layers: basic (default), retention (fixed per-head decay), or learned gates: scalar-gate, gla, delta, gated-delta (with --method lasp2-affine or all-scan and --documents joined).")]
        public string? Recurrence { get; init; }

        [CommandOption("--feature-map <PHI>"), Description("phi of the L layers: identity (default), elu or swish.")]
        public string? FeatureMap { get; init; }

        [CommandOption("--method <NAME>"), Description("Sequence-parallel method of the L layers (a linear method: lasp2 (default), lasp1, ring-linear, ulysses-linear).")]
        public string? Method { get; init; }

        [CommandOption("--softmax-method <NAME>"), Description("Method of the N layers: allgather-cp (default), ring-softmax or ulysses-softmax.")]
        public string? SoftmaxMethod { get; init; }

        [CommandOption("--layout <LAYOUT>"), Description("contiguous (default) or zigzag.")]
        public string? Layout { get; init; }

        [CommandOption("--documents <MODE>"), Description("Packed documents: separate (default: attention and the linear state stay inside each document) or joined (attention runs across a window's documents).")]
        public string? Documents { get; init; }

        [CommandOption("--model-dim <D>"), OptionRange(2), Description("Hidden size (default 64; a multiple of --heads with an even head dimension).")]
        public int? ModelDim { get; init; }

        [CommandOption("--heads <H>"), OptionRange(1), Description("Attention heads (default 4).")]
        public int? Heads { get; init; }

        [CommandOption("--kv-heads <HKV>"), OptionRange(1), Description("KV heads of the softmax layers (default 2; divides --heads).")]
        public int? KvHeads { get; init; }

        [CommandOption("--mlp-dim <F>"), OptionRange(1), Description("SwiGLU width (default 3 x model dim).")]
        public int? MlpDim { get; init; }

        [CommandOption("--vocab <K>"), OptionRange(3), Description("Vocabulary: the K - 2 most frequent GPT-2 tokens of the training split, <unk> and end-of-document (default 4096, >= 3).")]
        public int? Vocab { get; init; }

        [CommandOption("--sp <N>"), OptionRange(1, 1024), Description("Sequence-parallel ranks (>= 1, default 1).")]
        public int Sp { get; init; } = 1;

        [CommandOption("--dp <N>"), OptionRange(1, 1024), Description("Data-parallel ranks (>= 1, default 1). The run uses sp x dp ranks.")]
        public int Dp { get; init; } = 1;

        [CommandOption("--seq <N>"), OptionRange(1), Description("Tokens per sequence (default 256, with --resume the checkpoint's; divisible by sp, or 2 sp for zigzag).")]
        public int? Seq { get; init; }

        [CommandOption("--batch <B>"), OptionRange(1), Description("Sequences per step over all data-parallel ranks (default dp, with --resume the checkpoint's; a multiple of dp).")]
        public int? Batch { get; init; }

        [CommandOption("--steps <N>"), OptionRange(1), Description("Train until this step (>= 1, default 100; with --resume the run continues up to it).")]
        public int Steps { get; init; } = 100;

        [CommandOption("--lr <RATE>"), OptionRange(0, MinimumExclusive = true), Description("Peak learning rate (> 0, default 3e-3); warm-up then cosine to a tenth of it.")]
        public double Lr { get; init; } = 3e-3;

        [CommandOption("--warmup <N>"), OptionRange(0), Description("Warm-up steps (>= 0, default steps / 10).")]
        public int? Warmup { get; init; }

        [CommandOption("--clip <NORM>"), OptionRange(0, MinimumExclusive = true), Description("Clip gradients to this global norm (> 0, default 1).")]
        public double Clip { get; init; } = 1.0;

        [CommandOption("--dtype <DTYPE>"), Description("float32 (default, speed) or float64 (exact).")]
        public string Dtype { get; init; } = "float32";

        [CommandOption("--seed <SEED>"), Description("Seed of the initial parameters (default 0).")]
        public long Seed { get; init; }

        [CommandOption("--data <PATH>"), Description("A fortune file or folder (default /usr/share/games/fortunes: apt-get install fortunes). data/fortunes-sample.txt is a small committed sample.")]
        public string Data { get; init; } = "/usr/share/games/fortunes";

        [CommandOption("--eval-every <N>"), OptionRange(0), Description("Held-out loss every N steps and after the last (>= 0, default 50; 0: only after the last).")]
        public int EvalEvery { get; init; } = 50;

        [CommandOption("--eval-batches <N>"), OptionRange(1), Description("Held-out batches per evaluation (>= 1, default 4).")]
        public int EvalBatches { get; init; } = 4;

        [CommandOption("--out <DIR>"), Description("Run folder for log.csv, loss.html and the checkpoint (default runs/train-PATTERN-spS-dpD-TIME).")]
        public string? Out { get; init; }

        [CommandOption("--save <DIR>"), Description("Checkpoint folder (default OUT/checkpoint).")]
        public string? Save { get; init; }

        [CommandOption("--resume <DIR>"), Description("Continue from this checkpoint (model from its config.json; any sp x dp).")]
        public string? Resume { get; init; }

        [CommandOption("--threads <N>"), OptionRange(1, 1024), Description("libtorch threads per rank (default: cores / ranks, at least 1).")]
        public int? Threads { get; init; }

        [CommandOption("--backend <BACKEND>"), Description("inproc (sp x dp threads, default) or mpi (this process is one rank of lasp2 launch -n SPxDP -- train ...).")]
        public string Backend { get; init; } = "inproc";

        public override ValidationResult Validate() => Lasp2App.Validate(() =>
        {
            if (Pattern is not null)
                try { HybridStack.Validate(Pattern); }
                catch (ArgumentException e) { throw new ArgumentException($"--pattern: {Lasp2App.OneLine(e)}", "--pattern"); }
            if (Recurrence is not null) Guards.OneOf(Recurrence, ModelConfig.Recurrences.ToList(), "--recurrence");
            if (FeatureMap is not null) Guards.OneOf(FeatureMap, ["identity", "elu", "swish"], "--feature-map");
            if (Method is not null) Guards.OneOf(Method, Methods(AttentionKind.Linear), "--method");
            if (SoftmaxMethod is not null) Guards.OneOf(SoftmaxMethod, Methods(AttentionKind.Softmax), "--softmax-method");
            if (Layout is not null) Guards.OneOf(Layout, ["contiguous", "zigzag"], "--layout");
            if (Documents is not null) Guards.OneOf(Documents, ["separate", "joined"], "--documents");
            if (Batch is int b && b % Dp != 0) throw new ArgumentException($"--batch = {b} must be a multiple of --dp = {Dp}.", "--batch");
            Guards.OneOf(Dtype, ["float32", "float64"], "--dtype");
            Guards.OneOf(Backend, ["inproc", "mpi"], "--backend");
            if (Resume is not null && !Directory.Exists(Resume)) throw new ArgumentException($"--resume = '{Resume}' is not a checkpoint folder.", "--resume");
            if (Resume is null && (KvHeads ?? 2) is var kv && (Heads ?? 4) % kv != 0)
                throw new ArgumentException($"--kv-heads = {kv} must divide --heads = {Heads ?? 4}.", "--kv-heads");
            if (Resume is null) CheckSequence(Seq ?? DefaultSeq, Sp, Layout == "zigzag" ? Lasp2.Reference.Layout.Zigzag : Lasp2.Reference.Layout.Contiguous);
            if (!File.Exists(Data) && !Directory.Exists(Data))
                throw new ArgumentException($"--data = '{Data}' does not exist; install Debian's fortunes (apt-get install fortunes) or pass data/fortunes-sample.txt.", "--data");
        });

        /// <summary>Throws naming --seq unless the sequence splits over sp ranks in the layout.</summary>
        public static void CheckSequence(int seq, int sp, Layout layout)
        {
            try { SequenceLayout.CheckDivisible(seq, sp, layout); }
            catch (ArgumentException e) { throw new ArgumentException($"--seq = {seq}: {Lasp2App.OneLine(e)}", "--seq"); }
        }

        static string[] Methods(AttentionKind kind) => MethodRegistry.All.Where(m => m.Supports.Kind == kind).Select(m => m.Name).ToArray();
    }
    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        if (Console.IsOutputRedirected || ProcessGroups.LaunchedByMpi) AnsiConsole.Profile.Width = Math.Max(AnsiConsole.Profile.Width, 160);
        var (config, vocabulary) = Model(settings);
        var corpus = TextCorpus.Build(TextCorpus.ReadFortunes(settings.Data), config.Vocab, vocabulary);
        config = config with { Vocab = corpus.Vocabulary.Size };
        if (config.Unsupported(settings.Sp) is { } reason) throw new ArgumentException($"--sp = {settings.Sp}: {reason}.", "--sp");
        var (seq, batch) = DataShape(settings);
        Settings.CheckSequence(seq, settings.Sp, config.Layout);
        var options = new TrainOptions(new LearningRate(settings.Lr, settings.Lr / 10, settings.Warmup ?? settings.Steps / 10, settings.Steps).Validate(),
                                       settings.Clip, Seed: settings.Seed,
                                       Dtype: settings.Dtype == "float64" ? torch.ScalarType.Float64 : torch.ScalarType.Float32);
        string folder = settings.Out ?? Path.Combine("runs", $"train-{config.Pattern}-sp{settings.Sp}-dp{settings.Dp}-{DateTime.UtcNow:yyyyMMdd-HHmmss}");
        var plan = new RunPlan(settings.Sp, settings.Dp, settings.Steps, settings.EvalEvery, settings.EvalBatches,
                               Path.Combine(folder, "log.csv"), settings.Save ?? Path.Combine(folder, "checkpoint"), settings.Resume);
        var train = corpus.Batches(batch, seq);
        var validation = corpus.Batches(batch, seq, heldOut: true);
        int ranks = settings.Sp * settings.Dp;

        IReadOnlyList<LogRow> RunRank(IProcessGroup world, ProgressTask? progress) =>
            TrainingRun.Run(world, config, options, plan, train, validation, progress is null ? null : row =>
            {
                progress.Value = row.Step + 1;
                progress.Description = $"step {row.Step + 1}/{settings.Steps}  loss {row.Loss:F3}  {row.TokensPerSecond:F0} tok/s";
                if (row.ValidationLoss is double held)
                    AnsiConsole.MarkupLine($"step {row.Step + 1}: train loss {row.Loss:F4}, held-out loss {held:F4}, {row.ResidentMiB:F0} MiB resident");
            });

        IReadOnlyList<LogRow> WithProgress(Func<ProgressTask, IReadOnlyList<LogRow>> run) =>
            AnsiConsole.Progress().AutoClear(false)
                .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(),
                         new ElapsedTimeColumn(), new RemainingTimeColumn())
                .Start(ctx =>
                {
                    var task = ctx.AddTask($"training {config.Pattern} on {ranks} rank(s)", maxValue: settings.Steps);
                    return run(task);
                });

        Describe(settings, config, corpus, batch, seq, ranks);
        if (settings.Backend == "inproc")
        {
            var rows = WithProgress(task => ProcessGroups.RunInProcess(ranks, world => RunRank(world, world.Rank == 0 ? task : null),
                                                                       threadsPerRank: ThreadsPerRank(settings, ranks))[0]);
            return Finish(folder, plan, corpus, rows, seq, batch);
        }
        return ProcessGroups.RunMpi(world =>
        {
            if (world.WorldSize != ranks)
                throw new ArgumentException($"--sp {settings.Sp} x --dp {settings.Dp} = {ranks} ranks, but the MPI job has {world.WorldSize}.", "--sp");
            torch.set_num_threads(ThreadsPerRank(settings, ranks));
            if (world.Rank != 0)
            {
                RunRank(world, null);
                return 0;
            }
            return Finish(folder, plan, corpus, WithProgress(task => RunRank(world, task)), seq, batch);
        });
    }

    static int ThreadsPerRank(Settings s, int ranks) => s.Threads ?? Math.Max(1, Environment.ProcessorCount / ranks);

    static void Describe(Settings s, ModelConfig config, TextCorpus corpus, int batch, int seq, int ranks)
    {
        long parameters = config.Vocab * (long)config.ModelDim * 2
                          + config.Pattern.Sum(l => (l == 'L' ? 4L : 2L + 2L * config.KvHeads / config.Heads) * config.ModelDim * config.ModelDim
                                                    + 3L * config.ModelDim * config.MlpDim);
        AnsiConsole.MarkupLine(Markup.Escape(
            $"model {config.Pattern}: D={config.ModelDim} H={config.Heads} Hkv={config.KvHeads} F={config.MlpDim} V={config.Vocab} (~{parameters / 1e6:F2}M parameters), " +
            $"L={config.LinearMethod}/{config.Recurrence}/{config.FeatureMap}, N={config.SoftmaxMethod}, {config.Layout}, documents {(config.SeparateDocuments ? "separate" : "joined")}; " +
            $"sp {s.Sp} x dp {s.Dp} = {ranks} rank(s) ({s.Backend}), batch {batch} x {seq} tokens, {s.Dtype}"));
        AnsiConsole.MarkupLine(Markup.Escape(
            $"data {s.Data}: {corpus.Documents} documents, {corpus.Train.Tokens.Length} training / {corpus.Validation.Tokens.Length} held-out tokens, " +
            $"<unk> {corpus.UnknownRate:P1} of training tokens"));
    }

    /// <summary>Rank 0: the vocabulary beside the checkpoint, the loss chart, a summary.</summary>
    static int Finish(string folder, RunPlan plan, TextCorpus corpus, IReadOnlyList<LogRow> rows, int seq, int batch)
    {
        corpus.Vocabulary.Save(Path.Combine(plan.Save!, "vocab.json"));
        File.WriteAllText(Path.Combine(plan.Save!, DataFile), JsonSerializer.Serialize(new DataShapeFile(seq, batch)));
        var steps = rows.Select(r => (double)r.Step + 1).ToArray();
        var held = rows.Where(r => r.ValidationLoss is not null).ToArray();
        Chart.Line("Training loss", "step", "cross-entropy (nats)",
                   ("train", steps, rows.Select(r => r.Loss).ToArray()),
                   ("held-out", held.Select(r => (double)r.Step + 1).ToArray(), held.Select(r => r.ValidationLoss!.Value).ToArray()))
             .SaveHtml(Path.Combine(folder, "loss.html"));
        var last = rows[^1];
        var tokens = rows.Skip(Math.Min(5, rows.Count - 1)).Select(r => r.TokensPerSecond).Order().ToArray();
        AnsiConsole.MarkupLine(Markup.Escape(
            $"done: step {last.Step + 1}, train loss {last.Loss:F4}, held-out {held.LastOrDefault()?.ValidationLoss:F4}, " +
            $"median {tokens[tokens.Length / 2]:F0} tok/s, {last.Seconds:F1} s, resident {last.ResidentMiB:F0} MiB"));
        // resident memory after this run's first 100 steps (the allocator's working set has settled by then)
        if (rows.Count > 101 && rows[100] is var settled)
            AnsiConsole.MarkupLine($"resident memory from step {settled.Step + 1} to {last.Step + 1}: {settled.ResidentMiB:F0} -> {last.ResidentMiB:F0} MiB ({(last.ResidentMiB / settled.ResidentMiB - 1):+0.0%;-0.0%})");
        AnsiConsole.MarkupLine(Markup.Escape($"log {plan.LogPath}, chart {Path.Combine(folder, "loss.html")}, checkpoint {plan.Save}"));
        return 0;
    }

    const int DefaultSeq = 256;
    const string DataFile = "data.json";

    /// <summary>The windows a run cut the corpus into (beside the checkpoint: the batch of a step depends on them).</summary>
    sealed record DataShapeFile(int Seq, int Batch);

    /// <summary>
    /// Tokens per sequence and sequences per step: as given, else the checkpoint's when resuming (so the resumed run sees
    /// the batches the interrupted one would have), else 256 and dp.
    /// </summary>
    static (int Seq, int Batch) DataShape(Settings s)
    {
        var saved = s.Resume is not null && File.Exists(Path.Combine(s.Resume, DataFile))
            ? JsonSerializer.Deserialize<DataShapeFile>(File.ReadAllText(Path.Combine(s.Resume, DataFile)))
            : null;
        int batch = s.Batch ?? saved?.Batch ?? s.Dp;
        if (batch % s.Dp != 0)
            throw new ArgumentException($"--batch = {batch} (the checkpoint's) must be a multiple of --dp = {s.Dp}; give --batch.", "--batch");
        return (s.Seq ?? saved?.Seq ?? DefaultSeq, batch);
    }

    /// <summary>The model: from the options (defaults filled in), or from the checkpoint when resuming (options must agree with it).</summary>
    static (ModelConfig Config, Vocabulary? Vocabulary) Model(Settings s)
    {
        var requested = new ModelConfig(s.Vocab ?? 4096, s.ModelDim ?? 64, s.Pattern ?? "LLLN", s.Heads ?? 4, s.KvHeads ?? 2,
            s.MlpDim ?? 3 * (s.ModelDim ?? 64), s.Method ?? "lasp2", s.SoftmaxMethod ?? "allgather-cp",
            s.FeatureMap switch { "elu" => Lasp2.Reference.FeatureMap.EluPlusOne, "swish" => Lasp2.Reference.FeatureMap.Swish, _ => Lasp2.Reference.FeatureMap.Identity },
            s.Recurrence ?? "basic",
            s.Layout == "zigzag" ? Layout.Zigzag : Layout.Contiguous, SeparateDocuments: s.Documents != "joined");
        if (s.Resume is null) return (requested.Validate(), null);
        var saved = Checkpoint.ReadConfig(s.Resume);
        void Agree<T>(T? given, T stored, string option)
        {
            if (given is not null && !EqualityComparer<T>.Default.Equals(given, stored))
                throw new ArgumentException($"{option} = {given} differs from the checkpoint's {stored}; omit it when resuming.", option);
        }
        Agree(s.Pattern, saved.Pattern, "--pattern");
        Agree(s.ModelDim, saved.ModelDim, "--model-dim");
        Agree(s.Heads, saved.Heads, "--heads");
        Agree(s.KvHeads, saved.KvHeads, "--kv-heads");
        Agree(s.MlpDim, saved.MlpDim, "--mlp-dim");
        Agree(s.Vocab, saved.Vocab, "--vocab");
        Agree(s.Recurrence, saved.Recurrence, "--recurrence");
        Agree(s.FeatureMap is null ? null : requested.FeatureMap.ToString(), saved.FeatureMap.ToString(), "--feature-map");
        Agree(s.Documents, saved.SeparateDocuments ? "separate" : "joined", "--documents");
        // the methods and the layout may change on resume: they compute the same model
        var config = saved with { LinearMethod = s.Method ?? saved.LinearMethod, SoftmaxMethod = s.SoftmaxMethod ?? saved.SoftmaxMethod,
                                  Layout = s.Layout is null ? saved.Layout : requested.Layout };
        var vocabularyPath = Path.Combine(s.Resume, "vocab.json");
        return (config.Validate(), File.Exists(vocabularyPath) ? Vocabulary.Load(vocabularyPath) : null);
    }
}
