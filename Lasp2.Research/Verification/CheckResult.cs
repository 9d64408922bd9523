using Lasp2.Reference;

namespace Lasp2.Research.Verification;

/// <summary>One line of a verification table: what was compared, its error, the tolerance, the verdict.</summary>
public sealed record CheckResult(string Name, string Quantity, ErrorStats Error, double Tolerance)
{
    /// <summary>True when the relative error is within tolerance (never for NaN).</summary>
    public bool Passed => Error.Within(Tolerance);
}
