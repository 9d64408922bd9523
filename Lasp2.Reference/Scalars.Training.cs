using TorchSharp;
using static TorchSharp.torch;

namespace Lasp2.Reference;

/// <summary>The in-place updates of a training step (AdamW, clipping), each with its Scalar owned here.</summary>
public static partial class Scalars
{
    /// <summary>x &lt;- x * factor, in place.</summary>
    public static Tensor TimesInPlace(this Tensor x, double factor)
    {
        using var s = factor.ToScalar();
        return x.mul_(s);
    }

    /// <summary>x &lt;- x + alpha * other, in place.</summary>
    public static Tensor PlusScaledInPlace(this Tensor x, Tensor other, double alpha)
    {
        using var s = alpha.ToScalar();
        return x.add_(other, s);
    }

    /// <summary>x &lt;- x + value * a * b, in place.</summary>
    public static Tensor PlusProductInPlace(this Tensor x, Tensor a, Tensor b, double value)
    {
        using var s = value.ToScalar();
        return x.addcmul_(a, b, s);
    }

    /// <summary>x &lt;- x + value * a / b, in place.</summary>
    public static Tensor PlusQuotientInPlace(this Tensor x, Tensor a, Tensor b, double value)
    {
        using var s = value.ToScalar();
        return x.addcdiv_(a, b, s);
    }
}
