using System.Diagnostics;
using System.Globalization;
using Lasp2.Research.Bench;
using Lasp2.Research.Comm;

namespace Lasp2.Research.Model;

/// <summary>One line of a training log.</summary>
/// <param name="Step">0-based step.</param>
/// <param name="Loss">Global mean training loss of the step's batch (before the update).</param>
/// <param name="ValidationLoss">Held-out loss after the step, on evaluation steps.</param>
/// <param name="LearningRate">Rate used by the step.</param>
/// <param name="GradNorm">Global gradient norm before clipping.</param>
/// <param name="TokensPerSecond">Tokens of the global batch / wall time of the step.</param>
/// <param name="ResidentMiB">Resident set size of this process after the step.</param>
/// <param name="Seconds">Wall time since the run started.</param>
public sealed record LogRow(long Step, double Loss, double? ValidationLoss, double LearningRate, double GradNorm,
                            double TokensPerSecond, double ResidentMiB, double Seconds)
{
    /// <summary>CSV header of <see cref="ToCsv"/>.</summary>
    public const string CsvHeader = "step,loss,val_loss,lr,grad_norm,tokens_per_s,rss_mib,elapsed_s";

    /// <summary>The row as CSV (invariant culture; an empty val_loss when not evaluated).</summary>
    public string ToCsv() => string.Join(',', new[]
    {
        Step.ToString(CultureInfo.InvariantCulture), Loss.ToString("R", CultureInfo.InvariantCulture),
        ValidationLoss?.ToString("R", CultureInfo.InvariantCulture) ?? "", LearningRate.ToString("R", CultureInfo.InvariantCulture),
        GradNorm.ToString("R", CultureInfo.InvariantCulture), TokensPerSecond.ToString("F1", CultureInfo.InvariantCulture),
        ResidentMiB.ToString("F1", CultureInfo.InvariantCulture), Seconds.ToString("F3", CultureInfo.InvariantCulture),
    });
}

/// <summary>What a training run does beyond the model and optimizer.</summary>
/// <param name="Sp">Sequence-parallel ranks.</param>
/// <param name="Dp">Data-parallel ranks.</param>
/// <param name="Steps">Train until this many steps have been taken (a resumed run continues up to it).</param>
/// <param name="EvalEvery">Held-out loss every this many steps (and after the last); 0: only after the last.</param>
/// <param name="EvalBatches">Held-out batches per evaluation.</param>
/// <param name="LogPath">CSV log written by rank 0 (null: none).</param>
/// <param name="Save">Checkpoint folder written by rank 0 at the end (null: none).</param>
/// <param name="Resume">Checkpoint folder to start from (null: fresh parameters).</param>
public sealed record RunPlan(int Sp, int Dp, int Steps, int EvalEvery, int EvalBatches, string? LogPath, string? Save, string? Resume);

/// <summary>
/// The training loop of one rank: a step per batch (each in its own dispose scope, so native memory stays flat),
/// held-out evaluations, a CSV log and a checkpoint from rank 0. Every rank of the world calls
/// <see cref="Run"/> with the same arguments.
/// </summary>
public static class TrainingRun
{
    /// <summary>Runs <paramref name="plan"/>; rank 0 gets every log row (and <paramref name="onRow"/> sees them as they come), other ranks an empty list.</summary>
    public static IReadOnlyList<LogRow> Run(IProcessGroup world, ModelConfig config, TrainOptions options, RunPlan plan,
                                            IBatchSource train, IBatchSource? validation, Action<LogRow>? onRow = null)
    {
        using var trainer = new Trainer(config, options, world, plan.Sp, plan.Dp);
        if (plan.Resume is not null) Checkpoint.Load(plan.Resume, trainer);
        if (trainer.Step >= plan.Steps)
            throw new ArgumentException($"the checkpoint is at step {trainer.Step}; --steps {plan.Steps} leaves nothing to train (give a larger --steps).", nameof(plan));
        bool lead = world.Rank == 0;
        using var log = lead && plan.LogPath is not null ? CreateLog(plan.LogPath) : null;
        var rows = new List<LogRow>();
        var clock = Stopwatch.StartNew();
        while (trainer.Step < plan.Steps)
        {
            double started = clock.Elapsed.TotalSeconds;
            StepResult result;
            long tokens;
            using (var batch = train.Get(trainer.Step))
            {
                result = trainer.TrainStep(batch);
                tokens = batch.Rows * batch.Length;
            }
            double seconds = clock.Elapsed.TotalSeconds;
            bool evaluate = validation is not null && (trainer.Step == plan.Steps || (plan.EvalEvery > 0 && trainer.Step % plan.EvalEvery == 0));
            double? held = evaluate ? Evaluate(trainer, validation!, plan.EvalBatches) : null;
            var row = new LogRow(result.Step, result.Loss, held, result.LearningRate, result.GradNorm, tokens / Math.Max(seconds - started, 1e-9),
                                 ProcStatus.ResidentBytes() / 1048576.0, clock.Elapsed.TotalSeconds);
            if (!lead) continue;
            rows.Add(row);
            log?.WriteLine(row.ToCsv());
            log?.Flush();
            onRow?.Invoke(row);
        }
        if (plan.Save is not null)
        {
            if (lead) Checkpoint.Save(plan.Save, trainer);
            world.Barrier();
        }
        return rows;
    }

    /// <summary>Mean held-out loss over batches 0..count-1 of <paramref name="validation"/> (a fixed set, comparable across steps and runs).</summary>
    public static double Evaluate(Trainer trainer, IBatchSource validation, int count)
    {
        double sum = 0;
        for (int b = 0; b < count; b++)
        {
            using var batch = validation.Get(b);
            sum += trainer.Evaluate(batch);
        }
        return sum / count;
    }

    static StreamWriter CreateLog(string path)
    {
        var directory = Path.GetDirectoryName(Path.GetFullPath(path));
        if (directory is not null) Directory.CreateDirectory(directory);
        var writer = new StreamWriter(path);
        writer.WriteLine(LogRow.CsvHeader);
        return writer;
    }
}
