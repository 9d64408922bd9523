using TorchSharp;
using static TorchSharp.torch;

namespace Lasp2.Reference;

/// <summary>
/// Error between an expected and an actual tensor. Relative error is normwise:
/// max|actual - expected| / max|expected| (max|expected| = 0 falls back to the absolute error).
/// NaN or infinity anywhere makes both errors infinite, so a NaN never passes.
/// </summary>
public readonly record struct ErrorStats(double MaxAbs, double MaxRel)
{
    /// <summary>True when the relative error is at most <paramref name="relativeTolerance"/>.</summary>
    public bool Within(double relativeTolerance) => MaxRel <= relativeTolerance;

    /// <summary>The worse of two error stats (per component).</summary>
    public ErrorStats Max(ErrorStats other) => new(Math.Max(MaxAbs, other.MaxAbs), Math.Max(MaxRel, other.MaxRel));
}

/// <summary>Compares tensors and states the default tolerances.</summary>
public static class Compare
{
    /// <summary>Relative tolerance for float64 equivalence checks (exact up to rounding).</summary>
    public const double Float64Tolerance = 1e-10;

    /// <summary>Relative tolerance for float32 checks.</summary>
    public const double Float32Tolerance = 1e-4;

    /// <summary>The tolerance for a dtype: float64 exact checks, float32 (and below) speed runs.</summary>
    public static double ToleranceFor(ScalarType dtype) => dtype == ScalarType.Float64 ? Float64Tolerance : Float32Tolerance;

    /// <summary>Max absolute and normwise relative error of <paramref name="actual"/> against <paramref name="expected"/>.</summary>
    public static ErrorStats Errors(Tensor expected, Tensor actual)
    {
        if (!expected.shape.SequenceEqual(actual.shape))
            throw new ArgumentException(
                $"shapes differ: expected {Guards.Shape(expected)}, actual {Guards.Shape(actual)}.", nameof(actual));
        using var scope = NewDisposeScope();
        var e = expected.detach().to(float64);
        var a = actual.detach().to(float64).to(e.device);
        if (!a.isfinite().all().item<bool>() || !e.isfinite().all().item<bool>())
            return new ErrorStats(double.PositiveInfinity, double.PositiveInfinity);
        if (e.numel() == 0) return new ErrorStats(0, 0);
        double maxAbs = (a - e).abs().max().item<double>();
        double scale = e.abs().max().item<double>();
        return new ErrorStats(maxAbs, scale > 0 ? maxAbs / scale : maxAbs);
    }
}
