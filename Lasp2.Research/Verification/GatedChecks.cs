using Lasp2.Reference;
using Lasp2.Research.Attention;
using Lasp2.Research.Comm;
using TorchSharp;
using static TorchSharp.torch;

namespace Lasp2.Research.Verification;

/// <summary>
/// One distributed check of a recurrence: method, recurrence, world size, layout, dtype, shape, block, where the
/// gates sit, seed. Causal always (every recurrence is). Defaults are awkward: N = 112 gives pieces that are not
/// multiples of the block for W = 2, 4, 8; Dk != Dv.
/// </summary>
public sealed record GatedCheckConfig(
    string Method, Recurrence Recurrence, int WorldSize = 4, Layout Layout = Layout.Contiguous,
    ScalarType Dtype = ScalarType.Float64, int Batch = 2, int Heads = 4, int Seq = 112, int DimK = 16, int DimV = 12,
    int BlockSize = 16, GateRegime Regime = GateRegime.Wide, long Seed = 20250211)
{
    /// <summary>Short label for tables and dumps.</summary>
    public string Label =>
        $"{Method} {Recurrence.Name} W={WorldSize} {Layout.ToString().ToLowerInvariant()} {Dtype.ToString().ToLowerInvariant()} N={Seq}";
}

/// <summary>A method's global results for a recurrence: O and the gradients of q, k, v, the log-gates and beta.</summary>
/// <param name="Config">What ran.</param>
/// <param name="Checks">Each quantity against the recurrent reference (identical on every rank).</param>
/// <param name="Comm">This rank's collectives during the method's forward + backward only.</param>
/// <param name="Tensors">Every global tensor (inputs, results, reference) when asked for (--dump).</param>
public sealed record GatedReport(GatedCheckConfig Config, IReadOnlyList<CheckResult> Checks, IReadOnlyList<CommRecord> Comm,
                                 IReadOnlyDictionary<string, Tensor>? Tensors);

/// <summary>
/// Runs a registered method on a recurrence over W ranks and compares O, dQ, dK, dV, dG (learned gates) and dBeta
/// with the per-token recurrent reference (<see cref="GatedLinearAttention.Recurrent"/>) under a random dO. Methods
/// that list the recurrence in <see cref="ISequenceParallelAttention.Recurrences"/> get it through
/// <see cref="AttentionOptions.Gates"/>; the constant decay also runs on every causal linear method with a decay,
/// through <see cref="AttentionOptions.Decay"/>.
/// </summary>
public static class GatedChecks
{
    /// <summary>
    /// True when <paramref name="method"/> runs <paramref name="recurrence"/>: it lists it in its recurrences, or it
    /// is the constant decay and the method is a causal linear method with a decay.
    /// </summary>
    public static bool Supports(ISequenceParallelAttention method, Recurrence recurrence)
    {
        var s = method.Supports;
        return method.Recurrences.Contains(recurrence)
            || (recurrence == Recurrence.Decay && s.Kind == AttentionKind.Linear && s.Causal && s.Decay);
    }

    /// <summary>Why <paramref name="method"/> cannot run <paramref name="recurrence"/>, or null if it can.</summary>
    public static string? Unsupported(ISequenceParallelAttention method, Recurrence recurrence)
    {
        if (Supports(method, recurrence)) return null;
        var supported = Recurrence.All.Where(r => Supports(method, r)).Select(r => r.Name).ToList();
        return $"{method.Name} does not support the {recurrence.Name} recurrence (supported: {(supported.Count == 0 ? "none" : string.Join(", ", supported))})";
    }

    /// <summary>Runs <paramref name="config"/> on W in-process ranks; every rank's report (tensors on rank 0 if asked).</summary>
    public static GatedReport[] RunInProcess(GatedCheckConfig config, bool keepTensors = false, int threadsPerRank = 1) =>
        ProcessGroups.RunInProcess(config.WorldSize, group => Run(group, config, keepTensors && group.Rank == 0), threadsPerRank: threadsPerRank);

    /// <summary>This rank's part of the check; every rank of <paramref name="group"/> calls it with the same config.</summary>
    public static GatedReport Run(IProcessGroup group, GatedCheckConfig config, bool keepTensors = false)
    {
        if (config.WorldSize != group.WorldSize)
            throw new ArgumentException($"config.WorldSize = {config.WorldSize} but the group has {group.WorldSize} ranks.", nameof(config));
        var method = MethodRegistry.Get(config.Method);
        if (Unsupported(method, config.Recurrence) is { } reason) throw new ArgumentException(reason + ".", nameof(config));
        SequenceLayout.CheckDivisible(config.Seq, config.WorldSize, config.Layout);
        var recurrence = config.Recurrence;
        using var scope = NewDisposeScope();
        var lambda = GatedInputs.DefaultDecay(config.Heads);
        var inputs = GatedInputs.Random(recurrence, config.Batch, config.Heads, config.Seq, config.DimK, config.DimV,
                                        config.Dtype, config.Seed, config.Regime, lambda);
        var names = new[] { "q", "k", "v", "g", "beta" }.Where(inputs.ContainsKey).ToArray();
        var (layout, worldSize, rank) = (config.Layout, group.WorldSize, group.Rank);
        var leaves = names.Select(n => SequenceLayout.ShardOf(inputs[n], worldSize, rank, layout)
                                                     .requires_grad_(n != "g" || recurrence.LearnedGate)).ToArray();
        var options = method.Recurrences.Contains(recurrence)
            ? new AttentionOptions(Causal: true, Layout: layout, BlockSize: config.BlockSize, Gates: Gates.Of(recurrence, leaves[3..]))
            : new AttentionOptions(Causal: true, Decay: lambda, Layout: layout, BlockSize: config.BlockSize);
        group.Stats.Reset();
        var output = method.Forward(group, leaves[0], leaves[1], leaves[2], options);
        output.backward([SequenceLayout.ShardOf(inputs["dO"], worldSize, rank, layout)]);
        var comm = group.Stats.Snapshot();
        Tensor Global(Tensor shard) => SequenceLayout.Unshard(group.AllGather(shard.detach().contiguous()).unbind(0), layout);
        var results = new Dictionary<string, Tensor>(inputs) { ["o"] = Global(output) };
        var (expected, grads) = Autograd.ForwardBackward(
            x => GatedLinearAttention.Recurrent(x[0], x[1], x[2], Gates.Of(recurrence, x[3..])).Output,
            inputs["dO"], names.Select(n => inputs[n]).ToArray());
        results["ref_o"] = expected;
        var checkedNames = names.Where(n => n != "g" || recurrence.LearnedGate).ToArray();
        for (int i = 0; i < names.Length; i++)
        {
            if (!checkedNames.Contains(names[i])) continue;
            results["d" + names[i]] = Global(leaves[i].grad!);
            results["ref_d" + names[i]] = grads[i];
        }
        double tolerance = Compare.ToleranceFor(config.Dtype);
        var checks = new[] { "o" }.Concat(checkedNames.Select(n => "d" + n))
            .Select(n => CheckResult.Of(config.Label, Quantity(n), results["ref_" + n], results[n], tolerance))
            .ToList();
        if (keepTensors) foreach (var t in results.Values) t.MoveToOuterDisposeScope();
        return new GatedReport(config, checks, comm, keepTensors ? results : null);
    }

    /// <summary>Display names: O, dQ, dK, dV, dG, dBeta.</summary>
    public static string Quantity(string name) => name switch
    {
        "o" => "O",
        "dbeta" => "dBeta",
        _ => "d" + char.ToUpperInvariant(name[1]) + name[2..],
    };

    /// <summary>Writes every tensor of a report (gates and beta included) as &lt;dir&gt;/&lt;label&gt;/&lt;name&gt;.npy; returns the folder.</summary>
    public static string Dump(GatedReport report, string directory)
    {
        if (report.Tensors is null)
            throw new ArgumentException("the report holds no tensors; run with keepTensors: true.", nameof(report));
        var c = report.Config;
        string folder = Path.Combine(directory,
            $"{c.Method}_{c.Recurrence.Name}_W{c.WorldSize}_{c.Layout.ToString().ToLowerInvariant()}_{c.Dtype.ToString().ToLowerInvariant()}_N{c.Seq}");
        Directory.CreateDirectory(folder);
        foreach (var (name, tensor) in report.Tensors)
            Npy.Write(Path.Combine(folder, name + ".npy"), tensor);
        return folder;
    }
}
