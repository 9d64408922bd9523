using Lasp2.Reference;
using Lasp2.Research.Attention;
using Lasp2.Research.Comm;
using TorchSharp;
using static TorchSharp.torch;

namespace Lasp2.Research.Model;

/// <summary>
/// A Linear-Llama3 hybrid (LASP-2 paper, Sec. 4, Table 2): token embedding; for each layer l of the pattern,
/// pre-norm attention and a SwiGLU MLP, both residual:
///   h = x + Attention_l(RMSNorm(x) g_attn),   x' = h + W_down(silu(W_gate u) * (W_up u)),  u = RMSNorm(h) g_mlp;
/// a final RMSNorm and the LM head. Attention_l is linear attention (L: phi(q), phi(k), the configured
/// recurrence, then a per-head RMS normalization of its output) or softmax grouped-query attention with RoPE (N).
/// <see cref="Forward"/> runs one sequence-parallel rank's shard through the registered methods;
/// with no group it is the single-device twin (the reference attention on the whole sequence, same parameters).
/// Every number meets a tensor through <see cref="Scalars"/>, so rank threads can run it concurrently.
/// </summary>
public sealed class LinearLlama : IDisposable
{
    readonly ISequenceParallelAttention linear, softmax;
    readonly AttentionOptions linearOptions, softmaxOptions;

    /// <summary>The model for <paramref name="config"/> (validated).</summary>
    public LinearLlama(ModelConfig config)
    {
        Config = config.Validate();
        linear = MethodRegistry.Get(config.LinearMethod);
        softmax = MethodRegistry.Get(config.SoftmaxMethod);
        linearOptions = new AttentionOptions(Causal: true, config.Decay, config.Layout, config.BlockSize);
        softmaxOptions = linearOptions with { Decay = null };
    }

    /// <summary>The model's shape and methods.</summary>
    public ModelConfig Config { get; }

    /// <summary>The RMSNorm epsilon (Llama's 1e-6).</summary>
    public const double RmsEpsilon = 1e-6;

    /// <summary>
    /// Logits [B, C, V] of this rank's tokens [B, C] (int64) at global <paramref name="positions"/> [C] (int64;
    /// from <see cref="SequenceLayout.Positions"/>). <paramref name="sequenceGroup"/>: the ranks sharing these
    /// sequences in <see cref="ModelConfig.Layout"/>; null runs the single-device twin (C = N, positions 0..N-1).
    /// <paramref name="documents"/>: the packed documents of each of the B rows over the whole sequence (global
    /// positions), required when <see cref="ModelConfig.SeparateDocuments"/> and ignored otherwise.
    /// </summary>
    public Tensor Forward(ModelParameters parameters, Tensor tokens, Tensor positions, IProcessGroup? sequenceGroup,
                          IReadOnlyList<DocumentBoundaries>? documents = null)
    {
        if (tokens.dim() != 2 || tokens.dtype != ScalarType.Int64)
            throw new ArgumentException($"tokens must be int64 [batch, seq]; got {tokens.dtype} {Guards.Shape(tokens)}.", nameof(tokens));
        if (positions.numel() != tokens.shape[1])
            throw new ArgumentException($"positions has {positions.numel()} entries for {tokens.shape[1]} tokens.", nameof(positions));
        if (Config.SeparateDocuments && documents?.Count != tokens.shape[0])
            throw new ArgumentException(
                $"the model keeps packed documents apart: documents needs one entry per row ({tokens.shape[0]}); got {documents?.Count.ToString() ?? "null"}.", nameof(documents));
        var rowDocuments = Config.SeparateDocuments ? documents : null;
        var embed = parameters["embed.weight"];
        long batch = tokens.shape[0], seq = tokens.shape[1];
        var x = embed.index_select(0, tokens.flatten()).view(batch, seq, -1);             // [B,C,D]
        var (cos, sin) = Config.Pattern.Contains('N')
            ? Rope.Tables(positions, Config.HeadDim, Config.RopeBase, embed.dtype) : (null, null);
        for (int l = 0; l < Config.Pattern.Length; l++)
        {
            string p = $"layers.{l}.";
            bool isLinear = Config.Pattern[l] == 'L';
            int kvHeads = isLinear ? Config.Heads : Config.KvHeads;
            var h = Norm(x, parameters[p + "attn_norm.weight"]);                           // [B,C,D]
            // Heads(h W^T): [B,C,D] -> [B,heads,C,d]
            Tensor Heads(string name, int heads) =>
                nn.functional.linear(h, parameters[p + name]).view(batch, seq, heads, -1).transpose(1, 2);
            var (q, k, v) = (Heads("attn.q.weight", Config.Heads), Heads("attn.k.weight", kvHeads), Heads("attn.v.weight", kvHeads));
            Tensor o;                                                                      // [B,H,C,d]
            if (isLinear)
            {
                var (phiQ, phiK) = (Config.FeatureMap.Apply(q), Config.FeatureMap.Apply(k));
                if (Config.Learned is { } learned)
                {
                    var gates = LearnedGates(learned, parameters, p, h);
                    // the delta rule needs unit-norm keys (||k||^2 beta < 2 keeps I - beta k^T k a contraction); queries alike, as DeltaNet
                    if (learned.Beta) (phiQ, phiK) = (UnitNorm(phiQ), UnitNorm(phiK));
                    o = sequenceGroup is null
                        ? GatedLinearAttention.Chunked(phiQ, phiK, v, gates, Config.BlockSize).Output
                        : linear.Forward(sequenceGroup, phiQ, phiK, v, linearOptions with { Gates = gates });
                }
                else
                    o = ByRow(rowDocuments, phiQ, phiK, v, (q, k, v, d) => sequenceGroup is null
                        ? LinearAttention.Quadratic(q, k, v, causal: true, Config.Decay, documents: d)
                        : linear.Forward(sequenceGroup, q, k, v, linearOptions with { Documents = d }));
                // o_h / rms(o_h): the state sums up to N outer products; this keeps each head's output O(1) whatever N
                o = RmsNormalized(o);
            }
            else
            {
                var (rq, rk) = (Rope.Apply(q, cos!, sin!), Rope.Apply(k, cos!, sin!));
                o = ByRow(rowDocuments, rq, rk, v, (q, k, v, d) => sequenceGroup is null
                    ? SoftmaxAttention.Forward(q, k, v, causal: true, documents: d)
                    : softmax.Forward(sequenceGroup, q, k, v, softmaxOptions with { Documents = d }));
            }
            // x <- x + O W_o^T
            x = x.Plus(nn.functional.linear(o.transpose(1, 2).reshape(batch, seq, -1), parameters[p + "attn.o.weight"])); // [B,C,D]
            var u = Norm(x, parameters[p + "mlp_norm.weight"]);
            // x <- x + W_down(silu(W_gate u) * W_up u)
            var gated = nn.functional.silu(nn.functional.linear(u, parameters[p + "mlp.gate.weight"]))
                        * nn.functional.linear(u, parameters[p + "mlp.up.weight"]);        // [B,C,F]
            x = x.Plus(nn.functional.linear(gated, parameters[p + "mlp.down.weight"]));
        }
        return nn.functional.linear(Norm(x, parameters["norm.weight"]), parameters["lm_head.weight"]); // [B,C,V]
    }

    /// <summary>
    /// Sum of the next-token cross-entropies of <paramref name="logits"/> [B, C, V] against <paramref name="targets"/>
    /// [B, C] (int64; <see cref="NoTarget"/> where a token has no target). The loss of a step is this sum over every
    /// rank divided by the global count of targets, not a mean of per-rank means.
    /// </summary>
    public static Tensor LossSum(Tensor logits, Tensor targets) =>
        nn.functional.cross_entropy(logits.reshape(-1, logits.shape[2]), targets.reshape(-1),
                                    ignore_index: NoTarget, reduction: nn.Reduction.Sum);

    /// <summary>Target id of a token without a target (the last token of a document, padding).</summary>
    public const long NoTarget = -1;

    /// <summary>
    /// attention(q, k, v, documents) on the whole batch without documents; with them, row by row [1,H,C,d], since a
    /// method call takes one list of boundaries and packed rows differ. Every rank of a sequence group runs the same
    /// rows in the same order, so the collectives of the calls match.
    /// </summary>
    static Tensor ByRow(IReadOnlyList<DocumentBoundaries>? documents, Tensor q, Tensor k, Tensor v,
                        Func<Tensor, Tensor, Tensor, DocumentBoundaries?, Tensor> attention) =>
        documents is null
            ? attention(q, k, v, null)
            : cat(documents.Select((d, b) => attention(q.narrow(0, b, 1), k.narrow(0, b, 1), v.narrow(0, b, 1), d)).ToList(), 0); // [B,H,C,d]

    /// <summary>
    /// The gates of a learned recurrence from the layer input h [B,C,D], per token, so each rank computes its own shard:
    /// log a_t = logsigmoid(h W_gate^T) / 16 (GLA's normaliser: gates start near 1, memory long) and beta_t = sigmoid(h W_beta^T).
    /// </summary>
    Gates LearnedGates(Lasp2.Reference.Recurrence learned, ModelParameters parameters, string layer, Tensor h)
    {
        long batch = h.shape[0], seq = h.shape[1];
        Tensor? logGate = learned.Gate == GateShape.None ? null
            : nn.functional.logsigmoid(nn.functional.linear(h, parameters[layer + "attn.gate.weight"])).Over(GateNormaliser)
                .view(batch, seq, Config.Heads, -1).transpose(1, 2);                       // [B,H,C,1|d]
        if (learned.Gate == GateShape.PerHead) logGate = logGate!.squeeze(-1);             // [B,H,C]
        Tensor? beta = learned.Beta
            ? nn.functional.sigmoid(nn.functional.linear(h, parameters[layer + "attn.beta.weight"])).transpose(1, 2) // [B,H,C]
            : null;
        return new Gates(learned, logGate?.contiguous(), beta?.contiguous());
    }

    /// <summary>The log-gate divisor of <see cref="LearnedGates"/>.</summary>
    public const double GateNormaliser = 16;

    // x / ||x|| over the last dimension
    static Tensor UnitNorm(Tensor x) => nn.functional.normalize(x, p: 2, dim: -1);

    // RMSNorm with gain: x / sqrt(mean(x^2) + eps) * g (per token, so local to every rank)
    static Tensor Norm(Tensor x, Tensor gain) => RmsNormalized(x) * gain;

    // x / sqrt(mean(x^2) + eps) over the last dimension
    static Tensor RmsNormalized(Tensor x) => x.div((x * x).mean([-1], keepdim: true).Plus(RmsEpsilon).sqrt());

    /// <inheritdoc/>
    public void Dispose() { }
}
