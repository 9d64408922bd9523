using Lasp2.Reference;
using static TorchSharp.torch;

namespace Lasp2.Research.Model;

/// <summary>
/// AdamW (Loshchilov and Hutter), written here rather than taken from torch.optim: its state (m, v, t) is
/// saved beside the weights in checkpoints, and every constant goes to libtorch through
/// <see cref="Scalars"/> (torch.optim's C# code makes implicit Scalars, which rank threads must not).
/// Step t (from 1), gradient g, for each parameter p:
///   m &lt;- b1 m + (1 - b1) g;   v &lt;- b2 v + (1 - b2) g^2
///   p &lt;- p (1 - lr wd)   (decoupled weight decay; matrices only, not norm gains)
///   p &lt;- p - lr / (1 - b1^t) * m / (sqrt(v / (1 - b2^t)) + eps)
/// </summary>
public sealed class AdamW : IDisposable
{
    readonly IReadOnlyList<Tensor> parameters;
    readonly bool[] decays;

    /// <summary>State for <paramref name="parameters"/> (zero moments, t = 0).</summary>
    public AdamW(ModelParameters parameters, double beta1 = 0.9, double beta2 = 0.95, double epsilon = 1e-8, double weightDecay = 0.1)
    {
        if (!(beta1 >= 0 && beta1 < 1)) throw new ArgumentOutOfRangeException(nameof(beta1), beta1, "beta1 must be in [0, 1).");
        if (!(beta2 >= 0 && beta2 < 1)) throw new ArgumentOutOfRangeException(nameof(beta2), beta2, "beta2 must be in [0, 1).");
        if (!(epsilon > 0)) throw new ArgumentOutOfRangeException(nameof(epsilon), epsilon, "epsilon must be > 0.");
        if (!(weightDecay >= 0)) throw new ArgumentOutOfRangeException(nameof(weightDecay), weightDecay, "weightDecay must be >= 0.");
        (Beta1, Beta2, Epsilon, WeightDecay) = (beta1, beta2, epsilon, weightDecay);
        this.parameters = parameters.Tensors;
        decays = this.parameters.Select(p => p.dim() >= 2).ToArray();
        First = this.parameters.Select(p => zeros_like(p).requires_grad_(false)).ToList();
        Second = this.parameters.Select(p => zeros_like(p).requires_grad_(false)).ToList();
    }

    public double Beta1 { get; }
    public double Beta2 { get; }
    public double Epsilon { get; }
    public double WeightDecay { get; }

    /// <summary>Steps taken, t.</summary>
    public long Steps { get; set; }

    /// <summary>First moments m, one per parameter (same order).</summary>
    public IReadOnlyList<Tensor> First { get; }

    /// <summary>Second moments v, one per parameter (same order).</summary>
    public IReadOnlyList<Tensor> Second { get; }

    /// <summary>One update with learning rate <paramref name="learningRate"/> from the parameters' current gradients.</summary>
    public void Step(double learningRate)
    {
        Steps++;
        double correction1 = 1 - Math.Pow(Beta1, Steps), correction2 = 1 - Math.Pow(Beta2, Steps);
        using var noGrad = no_grad();
        for (int i = 0; i < parameters.Count; i++)
        {
            using var scope = NewDisposeScope();
            var (p, m, v, g) = (parameters[i], First[i], Second[i], parameters[i].grad ?? zeros_like(parameters[i]));
            m.TimesInPlace(Beta1).PlusScaledInPlace(g, 1 - Beta1);                      // m <- b1 m + (1 - b1) g
            v.TimesInPlace(Beta2).PlusProductInPlace(g, g, 1 - Beta2);                  // v <- b2 v + (1 - b2) g^2
            if (decays[i]) p.TimesInPlace(1 - learningRate * WeightDecay);              // p <- p (1 - lr wd)
            var denominator = v.sqrt().TimesInPlace(1 / Math.Sqrt(correction2)).Plus(Epsilon); // sqrt(v / (1 - b2^t)) + eps
            p.PlusQuotientInPlace(m, denominator, -learningRate / correction1);         // p <- p - lr/(1 - b1^t) m / denominator
        }
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var t in First.Concat(Second)) t.Dispose();
    }
}
