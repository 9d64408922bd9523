using Lasp2.Reference;
using Lasp2.Research.Comm;
using TorchSharp;
using static TorchSharp.torch;

namespace Lasp2.Research.Model;

/// <summary>Optimizer and schedule of a training run.</summary>
/// <param name="Schedule">Learning-rate schedule.</param>
/// <param name="ClipNorm">Gradients are scaled so their global L2 norm is at most this (&gt; 0).</param>
/// <param name="WeightDecay">AdamW decoupled weight decay (matrices only).</param>
/// <param name="Beta1">AdamW beta1.</param>
/// <param name="Beta2">AdamW beta2.</param>
/// <param name="Seed">Seed of the initial parameters.</param>
/// <param name="Dtype">float64 (exactness) or float32 (speed).</param>
public sealed record TrainOptions(
    LearningRate Schedule,
    double ClipNorm = 1.0,
    double WeightDecay = 0.1,
    double Beta1 = 0.9,
    double Beta2 = 0.95,
    long Seed = 0,
    ScalarType Dtype = ScalarType.Float64);

/// <summary>What one optimizer step did: the global mean loss (before the update), gradient norm (before clipping), rate.</summary>
public readonly record struct StepResult(long Step, double Loss, double GradNorm, double LearningRate, long Targets);

/// <summary>
/// Sequence x data parallel training of a <see cref="LinearLlama"/>, one instance per rank. The world of
/// sp * dp ranks is split into sequence-parallel groups of sp consecutive ranks (they share sequences) and
/// data-parallel groups of the ranks with the same position in their sequence group (they share nothing but
/// gradients). A step, on every rank:
///   1. take this rank's rows (data-parallel group rank d: rows [d B/dp, (d+1) B/dp)) and sequence shard;
///   2. loss_local = sum of its tokens' cross-entropies / T, with T the GLOBAL count of targets;
///   3. backward: each parameter's gradient is a partial sum over this rank's tokens;
///   4. all-reduce the gradients over the sequence group, then over the data group: the gradient of the global mean;
///   5. clip by the global norm; 6. AdamW with the scheduled rate. Every rank then holds the same parameters.
/// With no world, the single-device twin: the whole batch, reference attention, no communication.
/// </summary>
public sealed class Trainer : IDisposable
{
    readonly IProcessGroup? world, sequenceGroup, dataGroup;
    readonly int sp, dp;

    /// <summary>
    /// A rank of an <paramref name="sp"/> x <paramref name="dp"/> run in <paramref name="world"/> (sp * dp ranks),
    /// or the single-device twin when <paramref name="world"/> is null. Parameters come from
    /// <see cref="TrainOptions.Seed"/>, created on the calling thread.
    /// </summary>
    public Trainer(ModelConfig config, TrainOptions options, IProcessGroup? world, int sp = 1, int dp = 1)
    {
        ArgumentNullException.ThrowIfNull(options);
        Guards.AtLeast(sp, 1, nameof(sp));
        Guards.AtLeast(dp, 1, nameof(dp));
        if (!(options.ClipNorm > 0)) throw new ArgumentOutOfRangeException(nameof(options), options.ClipNorm, "ClipNorm must be > 0.");
        options.Schedule.Validate();
        if (world is not null && world.WorldSize != sp * dp)
            throw new ArgumentException($"sp * dp = {sp} * {dp} = {sp * dp} must equal the {world.WorldSize} ranks of the world.", nameof(sp));
        if (world is null && (sp, dp) != (1, 1))
            throw new ArgumentException("the single-device twin (no world) has sp = dp = 1.", nameof(sp));
        config.Validate();
        if (config.Unsupported(sp) is { } reason)
            throw new ArgumentException($"sp = {sp}: {reason}", nameof(sp));
        (Options, this.world, this.sp, this.dp) = (options, world, sp, dp);
        Model = new LinearLlama(config);
        Parameters = ModelParameters.Init(config, options.Seed, options.Dtype);
        Optimizer = new AdamW(Parameters, options.Beta1, options.Beta2, weightDecay: options.WeightDecay);
        if (world is not null)
        {
            // MPI_Comm_split semantics: colour = the group, key = the rank order inside it
            sequenceGroup = world.Split(world.Rank / sp, world.Rank);
            dataGroup = world.Split(world.Rank % sp, world.Rank);
            GradientGroups = [sequenceGroup, dataGroup];
        }
    }

    public LinearLlama Model { get; }
    public ModelParameters Parameters { get; }
    public AdamW Optimizer { get; }
    public TrainOptions Options { get; }

    /// <summary>Steps taken (the 0-based index of the next step).</summary>
    public long Step => Optimizer.Steps;

    /// <summary>The groups gradients are summed over, in order (the sequence group, then the data group); tests plant bugs here.</summary>
    internal IReadOnlyList<IProcessGroup> GradientGroups { get; set; } = [];

    /// <summary>One optimizer step on the global <paramref name="batch"/> (every rank passes the same batch).</summary>
    public StepResult TrainStep(Batch batch)
    {
        using var scope = NewDisposeScope();
        Parameters.ZeroGradients();
        var (lossSum, count) = LocalLossSum(batch);
        // 2. loss_local = sum_local / T, so summing gradients over all ranks gives the gradient of the global mean
        lossSum.div(count).backward();
        var gradients = Parameters.Tensors.Select(p => p.grad!).ToList();
        foreach (var group in GradientGroups) AllReduceInPlace(group, gradients);               // 4.
        double norm = ClipInPlace(gradients, Options.ClipNorm);                                  // 5.
        double rate = Options.Schedule.At(Step);
        Optimizer.Step(rate);                                                                    // 6.
        return new StepResult(Step - 1, GlobalMean(lossSum, count), norm, rate, batch.TargetCount);
    }

    /// <summary>The global mean loss of <paramref name="batch"/> without updating anything.</summary>
    public double Evaluate(Batch batch)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var (sum, count) = LocalLossSum(batch);
        return GlobalMean(sum, count);
    }

    /// <summary>1.-2. This rank's rows and shard through the model: (sum of its tokens' losses, global target count T).</summary>
    (Tensor Sum, Tensor Count) LocalLossSum(Batch batch)
    {
        if (batch.Rows % dp != 0)
            throw new ArgumentException($"batch of {batch.Rows} sequences does not split over dp = {dp} ranks.", nameof(batch));
        var count = tensor((double)batch.TargetCount, dtype: Options.Dtype);
        if (world is null)
        {
            var positions = Scalars.Range(0, batch.Length, ScalarType.Int64);
            var logits = Model.Forward(Parameters, batch.Inputs, positions, null, batch.Documents(0, batch.Rows)); // [B,N,V]
            return (LinearLlama.LossSum(logits, batch.Targets), count);
        }
        long rows = batch.Rows / dp;
        var (inputs, targets) = (batch.Inputs.narrow(0, dataGroup!.Rank * rows, rows), batch.Targets.narrow(0, dataGroup.Rank * rows, rows));
        var layout = Model.Config.Layout;
        Tensor Shard(Tensor t) => SequenceLayout.ShardOf(t, sp, sequenceGroup!.Rank, layout, dim: 1);    // [B/dp, N/sp]
        var local = Model.Forward(Parameters, Shard(inputs), SequenceLayout.Positions(batch.Length, sp, sequenceGroup!.Rank, layout), sequenceGroup,
                                  batch.Documents(dataGroup.Rank * rows, rows));
        return (LinearLlama.LossSum(local, Shard(targets)), count);
    }

    /// <summary>(sum over every rank of <paramref name="lossSum"/>) / T.</summary>
    double GlobalMean(Tensor lossSum, Tensor count)
    {
        var total = lossSum.detach().reshape(1);
        if (world is not null) total = world.AllReduce(total);
        return total.ToDouble() / count.ToDouble();
    }

    /// <summary>Sums <paramref name="gradients"/> over <paramref name="group"/> in one collective on a flat buffer.</summary>
    static void AllReduceInPlace(IProcessGroup group, IReadOnlyList<Tensor> gradients)
    {
        if (group.WorldSize == 1) return;
        using var scope = NewDisposeScope();
        var sum = group.AllReduce(cat(gradients.Select(g => g.flatten()).ToList(), 0));        // [P]
        long offset = 0;
        foreach (var g in gradients)
        {
            g.copy_(sum.narrow(0, offset, g.numel()).view_as(g));
            offset += g.numel();
        }
    }

    /// <summary>5. g &lt;- g min(1, c / (|g| + 1e-6)) with |g| the norm over every parameter; returns |g|.</summary>
    static double ClipInPlace(IReadOnlyList<Tensor> gradients, double clipNorm)
    {
        using var scope = NewDisposeScope();
        double norm = stack(gradients.Select(g => (g * g).sum()).ToList()).sum().sqrt().ToDouble();
        double coefficient = clipNorm / (norm + 1e-6);
        if (coefficient < 1)
            foreach (var g in gradients) g.TimesInPlace(coefficient);
        return norm;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        Optimizer.Dispose();
        Parameters.Dispose();
        Model.Dispose();
        sequenceGroup?.Dispose();
        dataGroup?.Dispose();
    }
}
