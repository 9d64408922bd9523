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
/// Here the Scalar is a <c>using</c> local, disposed only after the call returned. Every number that meets a
/// tensor in Lasp2.Reference and Lasp2.Research goes through this class (ImplicitScalarGuardTests checks it).
/// </summary>
public static class Scalars
{
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

    /// <summary>x += y in place (Tensor.add_ makes its alpha = 1 Scalar implicitly; here it is kept alive).</summary>
    public static Tensor AddInPlace(this Tensor x, Tensor y)
    {
        using var one = 1.0.ToScalar();
        return x.add_(y, one);
    }

    /// <summary>x &gt;= value, element-wise (bool).</summary>
    public static Tensor IsAtLeast(this Tensor x, double value)
    {
        using var s = value.ToScalar();
        return x.ge(s);
    }

    /// <summary>start, start + step, ... up to (not including) stop, as <paramref name="dtype"/> on <paramref name="device"/>.</summary>
    public static Tensor Range(long start, long stop, ScalarType? dtype = null, Device? device = null, long step = 1)
    {
        using var first = start.ToScalar();
        using var last = stop.ToScalar();
        using var increment = step.ToScalar();
        return arange(first, last, increment, dtype, device);
    }
}
