using Lasp2.Reference;
using Lasp2.Research.Attention;
using static TorchSharp.torch;

namespace Lasp2.Research.Model;

/// <summary>
/// Shape and methods of a Linear-Llama3 hybrid. Layer l is linear attention (pattern[l] = 'L', H heads) or
/// softmax grouped-query attention with RoPE (pattern[l] = 'N', H query heads, <see cref="KvHeads"/> KV heads);
/// every layer is followed by a SwiGLU MLP of width <see cref="MlpDim"/>. Head dimension = ModelDim / Heads.
/// </summary>
/// <param name="Vocab">Vocabulary size V (&gt;= 2).</param>
/// <param name="ModelDim">Hidden size D (a multiple of Heads; D / Heads even, for RoPE).</param>
/// <param name="Pattern">One character per layer, L or N (see <see cref="HybridStack.Validate"/>).</param>
/// <param name="Heads">Query heads H.</param>
/// <param name="KvHeads">KV heads of the softmax layers (H % KvHeads == 0).</param>
/// <param name="MlpDim">SwiGLU hidden width.</param>
/// <param name="LinearMethod">Sequence-parallel method of the L layers (a linear method of <see cref="MethodRegistry"/>).</param>
/// <param name="SoftmaxMethod">Sequence-parallel method of the N layers (a softmax method of <see cref="MethodRegistry"/>).</param>
/// <param name="FeatureMap">phi applied to q and k of the L layers.</param>
/// <param name="Recurrence">
/// Recurrence of the L layers (<see cref="Recurrences"/>): basic (S_t = S_{t-1} + k_t^T v_t, the paper's Linear-Llama3),
/// retention (a fixed per-head decay), or a learned recurrence of <see cref="Lasp2.Reference.Recurrence"/> by its name
/// (scalar-gate, gla, delta, gated-delta), whose gates the layer computes from its input.
/// </param>
/// <param name="Layout">How each sequence is laid out over the sequence-parallel ranks (all layers alike).</param>
/// <param name="BlockSize">Block length of the local chunked kernels.</param>
/// <param name="RopeBase">RoPE base theta.</param>
/// <param name="SeparateDocuments">
/// Every packed document sees only itself: the L layers start their state from zero at each document start and the N
/// layers attend within the document (true, the default); false lets attention run across the documents of a window.
/// </param>
public sealed record ModelConfig(
    int Vocab,
    int ModelDim,
    string Pattern,
    int Heads,
    int KvHeads,
    int MlpDim,
    string LinearMethod = "lasp2",
    string SoftmaxMethod = "allgather-cp",
    FeatureMap FeatureMap = FeatureMap.Identity,
    string Recurrence = "basic",
    Layout Layout = Layout.Contiguous,
    int BlockSize = 64,
    double RopeBase = 10000,
    bool SeparateDocuments = true)
{
    /// <summary>Per-head dimension d = D / H.</summary>
    public int HeadDim => ModelDim / Heads;

    /// <summary>Throws naming the first invalid field and its valid range; returns this config.</summary>
    public ModelConfig Validate()
    {
        Guards.AtLeast(Vocab, 2, nameof(Vocab));
        Guards.AtLeast(Heads, 1, nameof(Heads));
        Guards.AtLeast(KvHeads, 1, nameof(KvHeads));
        Guards.AtLeast(ModelDim, 2, nameof(ModelDim));
        Guards.AtLeast(MlpDim, 1, nameof(MlpDim));
        Guards.AtLeast(BlockSize, 1, nameof(BlockSize));
        HybridStack.Validate(Pattern);
        if (ModelDim % Heads != 0 || HeadDim % 2 != 0)
            throw new ArgumentException($"ModelDim = {ModelDim} must be a multiple of Heads = {Heads} with an even head dimension (RoPE rotates pairs).", nameof(ModelDim));
        if (Heads % KvHeads != 0)
            throw new ArgumentException($"Heads = {Heads} is not a multiple of KvHeads = {KvHeads}.", nameof(KvHeads));
        if (!(RopeBase > 1))
            throw new ArgumentOutOfRangeException(nameof(RopeBase), RopeBase, "RopeBase must be > 1.");
        Guards.OneOf(Recurrence, Recurrences.ToList(), nameof(Recurrence));
        if (MethodRegistry.Get(LinearMethod).Supports.Kind != AttentionKind.Linear)
            throw new ArgumentException($"{LinearMethod} computes softmax attention; the L layers need a linear method.", nameof(LinearMethod));
        if (MethodRegistry.Get(SoftmaxMethod).Supports.Kind != AttentionKind.Softmax)
            throw new ArgumentException($"{SoftmaxMethod} computes linear attention; the N layers need a softmax method.", nameof(SoftmaxMethod));
        if (MethodMismatch() is { } mismatch) throw new ArgumentException(mismatch, nameof(LinearMethod));
        return this;
    }

    /// <summary>Names <see cref="Recurrence"/> takes: basic, retention, then every learned recurrence of <see cref="Lasp2.Reference.Recurrence.All"/>.</summary>
    public static IReadOnlyList<string> Recurrences { get; } =
        ["basic", "retention", .. Lasp2.Reference.Recurrence.All.Where(r => r != Lasp2.Reference.Recurrence.Decay).Select(r => r.Name)];

    /// <summary>Per-head decay of the L layers, retention's lambda_h = 1 - 2^(-5-h) (null: no fixed decay).</summary>
    public double[]? Decay => IsRecurrence("retention")
        ? Enumerable.Range(0, Heads).Select(h => 1.0 - Math.Pow(2.0, -5.0 - h)).ToArray()
        : null;

    /// <summary>The learned recurrence of the L layers (gates from the layer's input), or null for basic and retention.</summary>
    public Lasp2.Reference.Recurrence? Learned =>
        IsRecurrence("basic") || IsRecurrence("retention") ? null : Lasp2.Reference.Recurrence.Get(Recurrence);

    bool IsRecurrence(string name) => string.Equals(Recurrence, name, StringComparison.OrdinalIgnoreCase);

    /// <summary>Why this model cannot run with <paramref name="sp"/> sequence-parallel ranks, or null.</summary>
    public string? Unsupported(int sp) =>
        MethodMismatch()
        ?? (Pattern.Contains('L') ? MethodRegistry.Get(LinearMethod).Unsupported(sp, Heads, Heads) : null)
        ?? (Pattern.Contains('N') ? MethodRegistry.Get(SoftmaxMethod).Unsupported(sp, Heads, KvHeads) : null);

    /// <summary>What the configured methods cannot compute for this model at any rank count (a learned recurrence, packed documents), or null.</summary>
    string? MethodMismatch()
    {
        var linear = MethodRegistry.Get(LinearMethod);
        if (Pattern.Contains('L') && Learned is { } learned && !linear.Recurrences.Contains(learned))
            return $"{LinearMethod} does not run the {learned.Name} recurrence; methods that do: " +
                   string.Join(", ", MethodRegistry.All.Where(m => m.Recurrences.Contains(learned)).Select(m => m.Name)) + ".";
        foreach (var method in new[] { Pattern.Contains('L') ? linear : null, Pattern.Contains('N') ? MethodRegistry.Get(SoftmaxMethod) : null })
            if (SeparateDocuments && method is not null && !method.Supports.SupportsDocuments(causal: true))
                return $"{method.Name} does not run packed documents; keep them apart with another method or join them (SeparateDocuments = false).";
        return null;
    }
}
