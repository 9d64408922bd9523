using Lasp2.Reference;
using TorchSharp;
using static TorchSharp.torch;

namespace Lasp2.Research.Model;

/// <summary>
/// The named parameters of a <see cref="LinearLlama"/>, in one fixed order (the order of initialization, of the
/// gradient buffer and of checkpoints). Linear weights are [out, in] as in PyTorch's nn.Linear. Owns its tensors.
/// </summary>
public sealed class ModelParameters : IDisposable
{
    readonly List<(string Name, Tensor Value)> entries;
    readonly Dictionary<string, Tensor> byName;

    /// <summary>Parameters from (name, tensor) pairs; takes ownership of the tensors.</summary>
    public ModelParameters(IEnumerable<(string Name, Tensor Value)> entries)
    {
        this.entries = entries.ToList();
        byName = this.entries.ToDictionary(e => e.Name, e => e.Value);
    }

    /// <summary>The names in order.</summary>
    public IReadOnlyList<string> Names => entries.Select(e => e.Name).ToList();

    /// <summary>The tensors in order.</summary>
    public IReadOnlyList<Tensor> Tensors => entries.Select(e => e.Value).ToList();

    /// <summary>(name, tensor) pairs in order.</summary>
    public IReadOnlyList<(string Name, Tensor Value)> Entries => entries;

    /// <summary>The parameter called <paramref name="name"/>.</summary>
    public Tensor this[string name] => byName.TryGetValue(name, out var t) ? t
        : throw new ArgumentException($"no parameter '{name}'.", nameof(name));

    /// <summary>Total number of scalar parameters.</summary>
    public long Count => entries.Sum(e => e.Value.numel());

    /// <summary>
    /// Fresh parameters of <paramref name="config"/> in <paramref name="dtype"/>, from one generator seeded with
    /// <paramref name="seed"/> and created here: call it on the thread that will use the model (a Generator is a
    /// native object and is never shared between rank threads). Same seed, same values on every rank.
    /// Linear weights ~ N(0, 1/fan_in); embedding ~ N(0, 1); norm gains 1.
    /// </summary>
    public static ModelParameters Init(ModelConfig config, long seed, ScalarType dtype = ScalarType.Float64)
    {
        config.Validate();
        using var generator = new Generator((ulong)seed);
        var list = new List<(string, Tensor)>();
        void Weight(string name, long rows, long columns)
        {
            using var raw = randn([rows, columns], dtype: dtype, generator: generator);
            list.Add((name, raw.Times(1.0 / Math.Sqrt(columns)).requires_grad_(true)));
        }
        void Gain(string name) => list.Add((name, ones(config.ModelDim, dtype: dtype).requires_grad_(true)));

        int d = config.HeadDim;
        list.Add(("embed.weight", randn([config.Vocab, config.ModelDim], dtype: dtype, generator: generator).requires_grad_(true)));
        for (int l = 0; l < config.Pattern.Length; l++)
        {
            int kv = config.Pattern[l] == 'L' ? config.Heads : config.KvHeads;
            string p = $"layers.{l}.";
            Gain(p + "attn_norm.weight");
            Weight(p + "attn.q.weight", config.Heads * d, config.ModelDim);
            Weight(p + "attn.k.weight", kv * d, config.ModelDim);
            Weight(p + "attn.v.weight", kv * d, config.ModelDim);
            Weight(p + "attn.o.weight", config.ModelDim, config.Heads * d);
            if (config.Pattern[l] == 'L' && config.Learned is { } learned)
            {
                // a learned recurrence reads its gates from the layer input: one log-gate per head (or per head and key), one beta per head
                if (learned.Gate != GateShape.None) Weight(p + "attn.gate.weight", learned.Gate == GateShape.PerKey ? config.Heads * d : config.Heads, config.ModelDim);
                if (learned.Beta) Weight(p + "attn.beta.weight", config.Heads, config.ModelDim);
            }
            Gain(p + "mlp_norm.weight");
            Weight(p + "mlp.gate.weight", config.MlpDim, config.ModelDim);
            Weight(p + "mlp.up.weight", config.MlpDim, config.ModelDim);
            Weight(p + "mlp.down.weight", config.ModelDim, config.MlpDim);
        }
        Gain("norm.weight");
        Weight("lm_head.weight", config.Vocab, config.ModelDim);
        return new ModelParameters(list);
    }

    /// <summary>A deep copy (new leaves with requires_grad, no gradients).</summary>
    public ModelParameters Clone() =>
        new(entries.Select(e => (e.Name, e.Value.detach().clone().requires_grad_(true))));

    /// <summary>Gradients in order (zeros where a parameter has none yet).</summary>
    public IReadOnlyList<Tensor> Gradients => entries.Select(e => e.Value.grad ?? zeros_like(e.Value)).ToList();

    /// <summary>Zeroes every gradient in place (the buffers are reused from step to step).</summary>
    public void ZeroGradients()
    {
        foreach (var (_, value) in entries)
            value.grad?.zero_();
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var (_, value) in entries)
            value.Dispose();
    }
}
