using Lasp2.Reference;
using Lasp2.Research.Comm;
using static TorchSharp.torch;

namespace Lasp2.Research.Attention;

/// <summary>
/// One attention layer's projections: Query [D, H Dk], Key [D, Hkv Dk], Value [D, Hkv Dv], Output [H Dv, D].
/// Linear layers have Hkv = H.
/// </summary>
public sealed record HybridLayer(Tensor Query, Tensor Key, Tensor Value, Tensor Output, int Heads, int KvHeads);

/// <summary>
/// A hybrid layer stack (LASP-2 paper, Sec. 3.3, LASP-2H): a pattern over {L, N}, e.g. "LLLN" (the paper's
/// Linear-Llama3 repeats it 4 times): L is a linear-attention layer run by LASP-2, N a softmax layer run by
/// AllGather-CP (Alg. 7). Layer l, pre-norm as in Llama: h = RMSNorm(x) (no gain), x &lt;- x + Attention_l(h W_q,
/// h W_k, h W_v) W_o on hidden states [B, C, D] sharded along the sequence (the norm is per token, so local). Every layer uses the same layout, so tokens are never re-ordered
/// between layers (docs/algorithms.md, "Layouts"). Communication: the sum of the layers' (see CommModel).
/// <see cref="Reference"/> is the single-device twin (reference attention on the whole sequence) it is
/// verified against.
/// </summary>
public sealed class HybridStack
{
    /// <summary>
    /// <paramref name="pattern"/>: one character per layer, L (linear, <paramref name="linear"/>, default lasp2) or
    /// N (softmax, <paramref name="softmax"/>, default allgather-cp). <paramref name="options"/> holds the one layout
    /// and mask of every layer; its decay applies to the linear layers only.
    /// </summary>
    public HybridStack(string pattern, AttentionOptions options, string linear = "lasp2", string softmax = "allgather-cp")
    {
        ArgumentNullException.ThrowIfNull(options);
        Pattern = Validate(pattern);
        Options = options;
        Linear = Kind(MethodRegistry.Get(linear), AttentionKind.Linear, nameof(linear));
        Softmax = Kind(MethodRegistry.Get(softmax), AttentionKind.Softmax, nameof(softmax));
    }

    /// <summary>The validated pattern.</summary>
    public string Pattern { get; }

    /// <summary>Mask, layout, decay (linear layers) and block size of every layer.</summary>
    public AttentionOptions Options { get; }

    /// <summary>The method of the L layers.</summary>
    public ISequenceParallelAttention Linear { get; }

    /// <summary>The method of the N layers.</summary>
    public ISequenceParallelAttention Softmax { get; }

    /// <summary>Throws unless <paramref name="pattern"/> is a non-empty string of L and N; returns it.</summary>
    public static string Validate(string pattern)
    {
        ArgumentNullException.ThrowIfNull(pattern);
        if (pattern.Length == 0)
            throw new ArgumentException("pattern is empty; give one character per layer, L (linear) or N (softmax), e.g. \"LLLN\".", nameof(pattern));
        int bad = pattern.AsSpan().IndexOfAnyExcept("LN");
        if (bad >= 0)
            throw new ArgumentException(
                $"pattern \"{pattern}\" has '{pattern[bad]}' at position {bad}; only L (linear) and N (softmax) are allowed.", nameof(pattern));
        return pattern;
    }

    /// <summary>Random projections for every layer (scaled 1/sqrt(fan-in)); N layers get <paramref name="kvHeads"/> KV heads.</summary>
    public IReadOnlyList<HybridLayer> InitLayers(int modelDim, int heads, int kvHeads, int dimK, int dimV, Generator generator,
                                                 ScalarType dtype = ScalarType.Float64)
    {
        Guards.AtLeast(modelDim, 1, nameof(modelDim));
        Guards.AtLeast(kvHeads, 1, nameof(kvHeads));
        if (heads % kvHeads != 0)
            throw new ArgumentException($"heads = {heads} is not a multiple of kvHeads = {kvHeads}.", nameof(kvHeads));
        Tensor Weight(long rows, long columns) => randn([rows, columns], dtype: dtype, generator: generator).Over(Math.Sqrt(rows));
        return Pattern.Select(layer =>
        {
            int kv = layer == 'L' ? heads : kvHeads;
            return new HybridLayer(Weight(modelDim, heads * dimK), Weight(modelDim, kv * dimK), Weight(modelDim, kv * dimV),
                                   Weight(heads * dimV, modelDim), heads, kv);
        }).ToList();
    }

    /// <summary>This rank's hidden states x [B, C, D] (sequence shard in <see cref="AttentionOptions.Layout"/>) through every layer.</summary>
    public Tensor Forward(IProcessGroup group, Tensor x, IReadOnlyList<HybridLayer> layers) =>
        Run(x, layers, (layer, q, k, v) => (layer == 'L' ? Linear : Softmax).Forward(group, q, k, v, LayerOptions(layer)));

    /// <summary>The single-device twin: the same stack on the whole sequence x [B, N, D] with the reference attention.</summary>
    public Tensor Reference(Tensor x, IReadOnlyList<HybridLayer> layers) =>
        Run(x, layers, (layer, q, k, v) => layer == 'L'
            ? LinearAttention.Quadratic(q, k, v, Options.Causal, Options.Decay)
            : SoftmaxAttention.Forward(q, k, v, Options.Causal));

    Tensor Run(Tensor x, IReadOnlyList<HybridLayer> layers, Func<char, Tensor, Tensor, Tensor, Tensor> attention)
    {
        ArgumentNullException.ThrowIfNull(layers);
        if (layers.Count != Pattern.Length)
            throw new ArgumentException($"{layers.Count} layers given for pattern \"{Pattern}\" of {Pattern.Length}.", nameof(layers));
        if (x.dim() != 3)
            throw new ArgumentException($"x must be [batch, seq, modelDim]; got {Guards.Shape(x)}.", nameof(x));
        for (int l = 0; l < layers.Count; l++)
        {
            var layer = layers[l];
            // h = x / sqrt(mean(x^2) + eps): keeps every layer's scores O(1) however the residual stream grows
            var normed = x / (x * x).mean([-1], keepdim: true).Plus(RmsEpsilon).sqrt();       // [B,C,D]
            // Heads(h W): [B,C,D] -> [B,h,C,d]
            Tensor Heads(Tensor weight, int heads) => normed.matmul(weight).view(x.shape[0], x.shape[1], heads, -1).transpose(1, 2);
            var output = attention(Pattern[l], Heads(layer.Query, layer.Heads), Heads(layer.Key, layer.KvHeads),
                                   Heads(layer.Value, layer.KvHeads));                  // [B,H,C,Dv]
            // x <- x + O W_o (residual)
            x = x.Plus(output.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1).matmul(layer.Output)); // [B,C,D]
        }
        return x;
    }

    /// <summary>The RMSNorm epsilon (Llama's 1e-6).</summary>
    public const double RmsEpsilon = 1e-6;

    AttentionOptions LayerOptions(char layer) => layer == 'L' ? Options : Options with { Decay = null };

    static ISequenceParallelAttention Kind(ISequenceParallelAttention method, AttentionKind kind, string name) =>
        method.Supports.Kind == kind ? method
            : throw new ArgumentException($"{method.Name} computes {method.Supports.Kind} attention; the {name} layers need {kind}.", name);
}
