using Lasp2.Reference;
using Lasp2.Research.Attention;
using Lasp2.Research.Comm;
using TorchSharp;
using static TorchSharp.torch;

namespace Lasp2.Research.Verification;

/// <summary>
/// One distributed verification: method, world size, mask, decay, layout, dtype, shape, block, seed.
/// Defaults are awkward on purpose: N = 112 gives shards of 112/W tokens that are not multiples of the
/// block (16) for W = 2, 4, 8, and Dk != Dv. <paramref name="Documents"/>: packed documents over the Seq tokens, or null.
/// </summary>
public sealed record DistributedCheckConfig(
    string Method = "lasp2", int WorldSize = 4, bool Causal = true, double Decay = 0.9, Layout Layout = Layout.Contiguous,
    ScalarType Dtype = ScalarType.Float64, int Batch = 2, int Heads = 4, int KvHeads = 4, int Seq = 112, int DimK = 16,
    int DimV = 12, int BlockSize = 16, long Seed = 20250211, DocumentBoundaries? Documents = null)
{
    /// <summary>Per-head decays lambda_h = Decay^(1 + h/H) (heads differ), or null without decay (Decay = 1 or unmasked).</summary>
    public double[]? HeadDecays() =>
        !Causal || Decay == 1.0 ? null : Enumerable.Range(0, Heads).Select(h => Math.Pow(Decay, 1.0 + (double)h / Heads)).ToArray();

    /// <summary>Method options of this configuration.</summary>
    public AttentionOptions Options => new(Causal, HeadDecays(), Layout, BlockSize, Documents: Documents);

    /// <summary>Short label for tables.</summary>
    public string Label =>
        $"{Method} W={WorldSize} {(Causal ? "causal" : "no mask")} decay={(HeadDecays() is null ? "1" : Decay.ToString("0.###"))} " +
        $"{Layout.ToString().ToLowerInvariant()} {Dtype.ToString().ToLowerInvariant()} N={Seq}" +
        (Documents is { } d ? $" documents={d.Count}" : "");
}

/// <summary>Global tensors of one run (inputs, the method's unsharded results, the reference's).</summary>
public sealed record DistributedTensors(IReadOnlyDictionary<string, Tensor> ByName);

/// <summary>A method's global (unsharded) output and gradients, and one rank's collectives during forward + backward.</summary>
public sealed record MethodRun(Tensor O, Tensor DQ, Tensor DK, Tensor DV, IReadOnlyList<CommRecord> Comm);

/// <summary>Result of one distributed verification on one rank.</summary>
/// <param name="Config">What ran.</param>
/// <param name="Checks">O, dQ, dK, dV of the method against the reference (identical on every rank).</param>
/// <param name="Comm">This rank's collectives during the method's forward + backward only.</param>
/// <param name="Tensors">All global tensors, when asked for (for --dump).</param>
public sealed record DistributedReport(DistributedCheckConfig Config, IReadOnlyList<CheckResult> Checks,
                                       IReadOnlyList<CommRecord> Comm, DistributedTensors? Tensors);

/// <summary>
/// Runs a registered method on W ranks (in-process threads or the ranks of an MPI job), unshards its
/// outputs and gradients and compares O, dQ, dK, dV with the single-device reference of
/// <see cref="Lasp2.Reference"/> under a random dO. Every rank builds the same global inputs from the seed,
/// runs the method on its shard, then all shards are gathered (after the method's collectives were counted)
/// so every rank compares the same global tensors and reaches the same verdict.
/// </summary>
public static class DistributedChecks
{
    /// <summary>Sequence length above which the reference is the chunked form (itself checked against the quadratic one).</summary>
    public const int QuadraticReferenceLimit = 2048;

    /// <summary>Why <paramref name="config"/> cannot run <paramref name="method"/>, or null if it can.</summary>
    public static string? Unsupported(ISequenceParallelAttention method, DistributedCheckConfig config)
    {
        var s = method.Supports;
        if (config.Causal ? !s.Causal : !s.Unmasked) return $"{method.Name} has no {(config.Causal ? "causal" : "unmasked")} form";
        if (config.HeadDecays() is not null && !s.Decay) return $"{method.Name} has no decay";
        if (!s.Layouts.Contains(config.Layout)) return $"{method.Name} has no {config.Layout} layout";
        if (config.Documents is not null && !s.SupportsDocuments(config.Causal))
            return $"{method.Name} has no packed documents{(config.Causal ? "" : " without the causal mask")}";
        if (config.KvHeads != config.Heads && !s.GroupedKv) return $"{method.Name} needs KvHeads = Heads";
        if (method.Unsupported(config.WorldSize, config.Heads, s.Kind == AttentionKind.Softmax ? config.KvHeads : config.Heads)
            is { } shape) return shape;
        return null;
    }

    /// <summary>Runs <paramref name="config"/> on W in-process ranks; returns every rank's report (tensors on rank 0 if asked).</summary>
    public static DistributedReport[] RunInProcess(DistributedCheckConfig config, bool keepTensors = false, int threadsPerRank = 1) =>
        ProcessGroups.RunInProcess(config.WorldSize,
            group => Run(group, config, keepTensors && group.Rank == 0), threadsPerRank: threadsPerRank);

    /// <summary>
    /// This rank's part of the check; every rank of <paramref name="group"/> must call it with the same
    /// config (its WorldSize must equal the group's).
    /// </summary>
    public static DistributedReport Run(IProcessGroup group, DistributedCheckConfig config, bool keepTensors = false)
    {
        if (config.WorldSize != group.WorldSize)
            throw new ArgumentException(
                $"config.WorldSize = {config.WorldSize} but the group has {group.WorldSize} ranks.", nameof(config));
        var method = MethodRegistry.Get(config.Method);
        if (Unsupported(method, config) is { } reason) throw new ArgumentException(reason + ".", nameof(config));
        SequenceLayout.CheckDivisible(config.Seq, config.WorldSize, config.Layout);
        using var scope = NewDisposeScope();
        var inputs = Inputs(config, method.Supports.Kind);
        var run = RunMethod(group, method, inputs["q"], inputs["k"], inputs["v"], inputs["dO"], config.Options);
        var results = new Dictionary<string, Tensor>(inputs) { ["o"] = run.O, ["dq"] = run.DQ, ["dk"] = run.DK, ["dv"] = run.DV };
        var (referenceOutput, referenceGrads) = Autograd.ForwardBackward(
            x => Reference(x, config, method.Supports.Kind), inputs["dO"], inputs["q"], inputs["k"], inputs["v"]);
        (results["ref_o"], results["ref_dq"], results["ref_dk"], results["ref_dv"]) =
            (referenceOutput, referenceGrads[0], referenceGrads[1], referenceGrads[2]);
        double tolerance = Compare.ToleranceFor(config.Dtype);
        var checks = new[] { "O", "dQ", "dK", "dV" }
            .Select(q => CheckResult.Of(config.Label, q, results["ref_" + q.ToLowerInvariant()], results[q.ToLowerInvariant()], tolerance))
            .ToList();
        DistributedTensors? tensors = null;
        if (keepTensors)
        {
            foreach (var t in results.Values) t.MoveToOuterDisposeScope();
            tensors = new DistributedTensors(results);
        }
        return new DistributedReport(config, checks, run.Comm, tensors);
    }

    /// <summary>
    /// Runs <paramref name="method"/> on this rank's shard of the global q, k, v (laid out by
    /// <paramref name="options"/>), back-propagates this rank's shard of dO, and returns the unsharded global
    /// output and gradients (gathered from every rank, identical everywhere) and this rank's collectives during
    /// the method's forward + backward only (the gathering afterwards is not counted).
    /// </summary>
    public static MethodRun RunMethod(IProcessGroup group, ISequenceParallelAttention method, Tensor q, Tensor k, Tensor v,
                                      Tensor dO, AttentionOptions options)
    {
        var (layout, worldSize, rank) = (options.Layout, group.WorldSize, group.Rank);
        using var scope = NewDisposeScope();
        var leaves = new[] { q, k, v }
            .Select(x => SequenceLayout.ShardOf(x.detach(), worldSize, rank, layout).requires_grad_(true)).ToArray();
        group.Stats.Reset();
        var output = method.Forward(group, leaves[0], leaves[1], leaves[2], options);
        output.backward([SequenceLayout.ShardOf(dO, worldSize, rank, layout)]);
        var comm = group.Stats.Snapshot();
        Tensor Global(Tensor shard) =>
            SequenceLayout.Unshard(group.AllGather(shard.detach().contiguous()).unbind(0), layout).MoveToOuterDisposeScope();
        return new MethodRun(Global(output), Global(leaves[0].grad!), Global(leaves[1].grad!), Global(leaves[2].grad!), comm);
    }

    /// <summary>Writes every tensor of a report as &lt;dir&gt;/&lt;label&gt;/&lt;name&gt;.npy; returns the folder.</summary>
    public static string Dump(DistributedReport report, string directory)
    {
        if (report.Tensors is null)
            throw new ArgumentException("the report holds no tensors; run with keepTensors: true.", nameof(report));
        var c = report.Config;
        string folder = Path.Combine(directory,
            $"{c.Method}_W{c.WorldSize}_{(c.Causal ? "causal" : "nomask")}_decay{(c.HeadDecays() is null ? "1" : c.Decay.ToString("0.###"))}" +
            $"_{c.Layout.ToString().ToLowerInvariant()}_{c.Dtype.ToString().ToLowerInvariant()}_N{c.Seq}" +
            (c.Documents is { } d ? $"_docs{d.Count}" : ""));
        Directory.CreateDirectory(folder);
        foreach (var (name, tensor) in report.Tensors.ByName)
            Npy.Write(Path.Combine(folder, name + ".npy"), tensor);
        if (c.HeadDecays() is { } decay)
            using (var lambda = tensor(decay, dtype: float64)) Npy.Write(Path.Combine(folder, "decay.npy"), lambda);
        if (c.Documents is { } documents)
            using (var cuSeqlens = tensor(documents.CuSeqlens.ToArray(), dtype: int64)) Npy.Write(Path.Combine(folder, "cu_seqlens.npy"), cuSeqlens);
        return folder;
    }

    /// <summary>The same global q, k, v, dO on every rank, from the seed.</summary>
    static Dictionary<string, Tensor> Inputs(DistributedCheckConfig c, AttentionKind kind)
    {
        using var generator = new Generator((ulong)c.Seed);  // using: alive until the last randn returned (TorchSharp does not keep it alive across the native call)
        Tensor Random(long heads, long dim) => randn([c.Batch, heads, c.Seq, dim], dtype: c.Dtype, generator: generator);
        long kvHeads = kind == AttentionKind.Softmax ? c.KvHeads : c.Heads;
        long dimV = kind == AttentionKind.Softmax ? c.DimK : c.DimV;                           // softmax: d_v = d_k
        var q = Random(c.Heads, c.DimK);
        var k = Random(kvHeads, c.DimK);
        var v = Random(kvHeads, dimV);
        return new() { ["q"] = q, ["k"] = k, ["v"] = v, ["dO"] = Random(c.Heads, dimV) };
    }

    static Tensor Reference(Tensor[] x, DistributedCheckConfig c, AttentionKind kind) => kind switch
    {
        AttentionKind.Softmax => SoftmaxAttention.Forward(x[0], x[1], x[2], c.Causal, documents: c.Documents),
        _ when c.Seq <= QuadraticReferenceLimit => LinearAttention.Quadratic(x[0], x[1], x[2], c.Causal, c.HeadDecays(), documents: c.Documents),
        _ => LinearAttention.Chunked(x[0], x[1], x[2], 64, c.Causal, c.HeadDecays(), documents: c.Documents),
    };
}
