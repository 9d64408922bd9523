namespace Lasp2.Research.Simulation;

/// <summary>
/// The model around the attention layers, for the work and memory that are not attention: per layer the dense
/// parameters (Q, K, V, O projections and the MLP), the hidden size (activations), the vocabulary (LM head and
/// logits) and the total parameter count (weights, gradients, optimizer state).
/// </summary>
/// <param name="Name">Preset name.</param>
/// <param name="DenseParamsPerLayer">Projection + MLP parameters of one layer (0: attention only).</param>
/// <param name="Hidden">Hidden size h (0: attention only).</param>
/// <param name="Vocab">Vocabulary size (0: no LM head).</param>
public sealed record ModelSpec(string Name, long DenseParamsPerLayer, int Hidden, int Vocab)
{
    /// <summary>Attention layers only: no projections, MLP, head or optimizer state.</summary>
    public static ModelSpec AttentionOnly { get; } = new("attention", 0, 0, 0);

    /// <summary>
    /// Linear-Llama3-1B as the paper trains it: hidden 2048, MLP 8192 (SwiGLU, 3 matrices), 16 heads of 128, vocabulary
    /// 128256 with tied embeddings: 4 h^2 + 3 h 8192 = 67.1M parameters per layer.
    /// </summary>
    public static ModelSpec LinearLlama3_1B { get; } = new("linear-llama3-1b", 4L * 2048 * 2048 + 3L * 2048 * 8192, 2048, 128256);

    /// <summary>The presets by name.</summary>
    public static IReadOnlyList<ModelSpec> Presets { get; } = [AttentionOnly, LinearLlama3_1B];

    /// <summary>The preset <paramref name="name"/>; an unknown name is an error listing them.</summary>
    public static ModelSpec Get(string name) =>
        Presets.FirstOrDefault(p => p.Name == name)
        ?? throw new ArgumentException($"unknown model '{name}'; known: {string.Join(", ", Presets.Select(p => p.Name))}.", nameof(name));

    /// <summary>All parameters of <paramref name="layers"/> layers plus the (tied) embedding.</summary>
    public long Parameters(int layers) => layers * DenseParamsPerLayer + (long)Vocab * Hidden;

    /// <summary>Forward flops per token of one layer's dense part (2 per parameter); backward is twice this.</summary>
    public double DenseForwardFlopsPerToken => 2.0 * DenseParamsPerLayer;

    /// <summary>Forward flops per token of the LM head (2 h V); backward is twice this.</summary>
    public double HeadForwardFlopsPerToken => 2.0 * Hidden * Vocab;
}
