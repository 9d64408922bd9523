namespace Lasp2.Research.Attention;

/// <summary>
/// Totals of one overlapped collective direction: the computation done while the collective was in
/// flight and the time then spent blocked in Wait. If the collective finished during the computation,
/// Wait is ~0 and all of it was hidden; otherwise it lasted Compute + Wait, of which Compute was hidden.
/// </summary>
public readonly record struct OverlapTotals(long Calls, TimeSpan Compute, TimeSpan Wait)
{
    /// <summary>Fraction of the collective hidden behind computation: Compute / (Compute + Wait) (1 when both are 0).</summary>
    public double HiddenFraction => Compute + Wait == TimeSpan.Zero ? 1.0 : Compute / (Compute + Wait);

    /// <summary>Component-wise sum.</summary>
    public OverlapTotals Add(OverlapTotals other) => new(Calls + other.Calls, Compute + other.Compute, Wait + other.Wait);
}

/// <summary>
/// Thread-safe overlap accounting of a method (all ranks of an in-process run add to the same log):
/// one entry per direction ("forward", "backward"), fixed size however long it runs.
/// </summary>
public sealed class OverlapLog
{
    readonly object gate = new();
    readonly Dictionary<string, OverlapTotals> totals = new();

    /// <summary>Adds one overlapped collective.</summary>
    public void Record(string direction, TimeSpan compute, TimeSpan wait)
    {
        lock (gate) totals[direction] = this[direction].Add(new OverlapTotals(1, compute, wait));
    }

    /// <summary>Totals of one direction (zero if none recorded).</summary>
    public OverlapTotals this[string direction]
    {
        get { lock (gate) return totals.GetValueOrDefault(direction); }
    }

    /// <summary>Totals over every direction.</summary>
    public OverlapTotals All
    {
        get { lock (gate) return totals.Values.Aggregate(default(OverlapTotals), (a, b) => a.Add(b)); }
    }

    /// <summary>Forgets everything recorded.</summary>
    public void Reset()
    {
        lock (gate) totals.Clear();
    }
}

/// <summary>A method that overlaps its collectives with computation and accounts for it.</summary>
public interface IOverlapReporting
{
    /// <summary>The method's overlap accounting (shared by all in-process ranks using this instance).</summary>
    OverlapLog Overlap { get; }
}
