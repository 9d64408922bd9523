using Lasp2.Reference;
using static TorchSharp.torch;

namespace Lasp2.Research.Verification;

/// <summary>
/// One line of a verification table: what was compared, its error, the tolerance, how many values were
/// compared, the verdict. A check that compared nothing (<see cref="Elements"/> = 0) fails: an empty tensor
/// has no error, and that must never read as a pass.
/// </summary>
public sealed record CheckResult(string Name, string Quantity, ErrorStats Error, double Tolerance, long Elements)
{
    /// <summary>True when values were compared and the relative error is within tolerance (never for NaN).</summary>
    public bool Passed => Elements > 0 && Error.Within(Tolerance);

    /// <summary>Compares <paramref name="actual"/> with <paramref name="expected"/>; the element count is the expected tensor's.</summary>
    public static CheckResult Of(string name, string quantity, Tensor expected, Tensor actual, double tolerance) =>
        new(name, quantity, Compare.Errors(expected, actual), tolerance, expected.numel());

    /// <summary>A run passes when it has checks and every one of them passed (so each compared something).</summary>
    public static bool AllPassed(IReadOnlyCollection<CheckResult> results) => results.Count > 0 && results.All(r => r.Passed);
}
