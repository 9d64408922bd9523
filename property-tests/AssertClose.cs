using Lasp2.Reference;
using TorchSharp;
using Xunit.Sdk;

namespace Lasp2.PropertyTests;

/// <summary>Tensor assertions that report max-abs and relative error and never pass on NaN.</summary>
public static class AssertClose
{
    /// <summary>
    /// Fails unless the normwise relative error of <paramref name="actual"/> against <paramref name="expected"/>
    /// is at most <paramref name="relativeTolerance"/> (see <see cref="Compare.Errors"/>).
    /// </summary>
    public static void Tensors(string name, torch.Tensor expected, torch.Tensor actual, double relativeTolerance = Compare.Float64Tolerance)
    {
        var error = Compare.Errors(expected, actual);
        if (!error.Within(relativeTolerance))
            throw new XunitException(
                $"{name}: max abs error {error.MaxAbs:0.000e+00}, relative {error.MaxRel:0.000e+00} > tolerance {relativeTolerance:0e+00}");
    }
}
