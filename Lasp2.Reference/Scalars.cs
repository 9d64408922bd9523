using TorchSharp;
using static TorchSharp.torch;

namespace Lasp2.Reference;

/// <summary>
/// Tensor operations with a C# number, each with its TorchSharp Scalar kept alive across the native call.
/// Why: TorchSharp turns a number into a native c10::Scalar owned by a managed <see cref="Scalar"/> whose
/// finalizer frees it, and passes only the raw handle to libtorch (no GC.KeepAlive, TorchSharp 0.107).
/// An implicit Scalar (<c>t.masked_fill(mask, 0.0)</c>, <c>t * 0.5</c>, <c>1 - t</c>, <c>arange(n)</c>) is
/// garbage as soon as its handle is read, so a collection started by another rank thread can free it while
/// libtorch still reads it: "Expected false to be true" from c10::Scalar::toDouble, or a wrong value.
/// Here the Scalar is a <c>using</c> local, disposed only after the call returned, or the immortal <see cref="One"/>.
/// Every number that meets a tensor in Lasp2.Reference and Lasp2.Research goes through this class, and so does
/// every tensor <c>a + b</c>, whose alpha = 1 TorchSharp makes implicitly (ImplicitScalarGuardTests checks it).
/// </summary>
public static partial class Scalars
{
    /// <summary>
    /// The integer 1 as a Scalar that is never disposed: a static field keeps it reachable for the life of the
    /// process, so its finalizer never runs. Shared by all rank threads: libtorch only reads a c10::Scalar
    /// (a tagged value, never written after construction), so concurrent reads are safe. Integer, like the
    /// alpha TorchSharp itself passes, because libtorch refuses a floating alpha for integer tensors.
    /// </summary>
    public static readonly Scalar One = 1.ToScalar();

    /// <summary>The integer -1 as a Scalar that is never disposed (see <see cref="One"/>): the alpha of a - b.</summary>
    public static readonly Scalar MinusOne = (-1).ToScalar();

    /// <summary>a - b, element-wise (alpha = <see cref="MinusOne"/>).</summary>
    public static Tensor Minus(this Tensor a, Tensor b) => a.add(b, MinusOne);

    /// <summary>a + b, element-wise (alpha = <see cref="One"/> instead of TorchSharp's implicit alpha).</summary>
    public static Tensor Plus(this Tensor a, Tensor b) => a.add(b, One);

    /// <summary>a += b, in place; returns a.</summary>
    public static Tensor PlusInPlace(this Tensor a, Tensor b) => a.add_(b, One);

    /// <summary>x + value, element-wise.</summary>
    public static Tensor Plus(this Tensor x, double value)
    {
        using var s = value.ToScalar();
        return x.add(s, One);
    }

    /// <summary>value - x, element-wise.</summary>
    public static Tensor Minus(double value, Tensor x)
    {
        using var s = value.ToScalar();
        return x.negative().add(s, One);
    }

    /// <summary>x / divisor.</summary>
    public static Tensor Over(this Tensor x, double divisor)
    {
        using var s = divisor.ToScalar();
        return x.div(s);
    }

    /// <summary>x /= divisor, in place; returns x.</summary>
    public static Tensor OverInPlace(this Tensor x, double divisor)
    {
        using var s = divisor.ToScalar();
        return x.div_(s);
    }

    /// <summary>Sets every element of x to value, in place; returns x.</summary>
    public static Tensor Fill(this Tensor x, double value)
    {
        using var s = value.ToScalar();
        return x.fill_(s);
    }

    /// <summary>elu(x) with alpha = 1 (the Scalars alpha, scale and input scale are all <see cref="One"/>).</summary>
    public static Tensor Elu(this Tensor x) => x.elu(One, One, One);

    /// <summary>x with <paramref name="value"/> where <paramref name="mask"/> is true.</summary>
    public static Tensor MaskedFill(this Tensor x, Tensor mask, double value)
    {
        using var s = value.ToScalar();
        return x.masked_fill(mask, s);
    }

    /// <summary>x * factor.</summary>
    public static Tensor Times(this Tensor x, double factor)
    {
        using var s = factor.ToScalar();
        return x.mul(s);
    }

    /// <summary>max(x, min), element-wise.</summary>
    public static Tensor AtLeast(this Tensor x, double min)
    {
        using var s = min.ToScalar();
        return x.clamp_min(s);
    }

    /// <summary>x &gt;= value, element-wise (bool).</summary>
    public static Tensor IsAtLeast(this Tensor x, double value)
    {
        using var s = value.ToScalar();
        return x.ge(s);
    }

    /// <summary>x == value, element-wise (bool).</summary>
    public static Tensor IsEqualTo(this Tensor x, long value)
    {
        using var s = value.ToScalar();
        return x.eq(s);
    }

    /// <summary>x -= y in place; returns x.</summary>
    public static Tensor SubtractInPlace(this Tensor x, Tensor y) => x.add_(y, MinusOne);

    /// <summary>start, start + step, ... up to (not including) stop, as <paramref name="dtype"/> on <paramref name="device"/>.</summary>
    public static Tensor Range(long start, long stop, ScalarType? dtype = null, Device? device = null, long step = 1)
    {
        using var first = start.ToScalar();
        using var last = stop.ToScalar();
        using var increment = step.ToScalar();
        return arange(first, last, increment, dtype, device);
    }
}
