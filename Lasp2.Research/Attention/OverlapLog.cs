using System.Diagnostics;
using Lasp2.Research.Comm;
using static TorchSharp.torch;

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

/// <summary>
/// One asynchronous collective of one rank and the computation placed beside it, the single way a method
/// reports overlap: <see cref="Issue"/> starts the collective, each <see cref="Computing"/> block is a phase
/// (told to the group when it implements <see cref="IComputePhases"/>, so a recording group sees it between the
/// collective's issue and its wait), and <see cref="Wait"/> adds compute = time since the issue and wait = time
/// blocked in Wait to the <see cref="OverlapLog"/> under the window's direction.
/// </summary>
public sealed class OverlapWindow
{
    readonly IProcessGroup group;
    readonly OverlapLog? log;
    readonly string direction;
    readonly Stopwatch sinceIssue;
    readonly ICommHandle handle;

    OverlapWindow(IProcessGroup group, OverlapLog? log, string direction, Func<IProcessGroup, ICommHandle> issue)
    {
        (this.group, this.log, this.direction) = (group, log, direction);
        sinceIssue = Stopwatch.StartNew();
        handle = issue(group);
    }

    /// <summary>Issues a collective with <paramref name="issue"/>(<paramref name="group"/>) and opens its window.</summary>
    public static OverlapWindow Issue(IProcessGroup group, OverlapLog? log, string direction, Func<IProcessGroup, ICommHandle> issue)
    {
        ArgumentNullException.ThrowIfNull(group);
        ArgumentNullException.ThrowIfNull(issue);
        return new OverlapWindow(group, log, direction, issue);
    }

    /// <summary>Marks the computation <paramref name="phase"/> until the returned object is disposed (use with <c>using</c>).</summary>
    public IDisposable Computing(string phase) => new Phase(group as IComputePhases, phase);

    /// <summary>Waits for the collective's result and records the overlap.</summary>
    public Tensor Wait()
    {
        var computed = sinceIssue.Elapsed;
        var waiting = Stopwatch.StartNew();
        var result = handle.Wait();
        log?.Record(direction, computed, waiting.Elapsed);
        return result;
    }

    sealed class Phase : IDisposable
    {
        readonly IComputePhases? listener;
        readonly string name;

        public Phase(IComputePhases? listener, string name)
        {
            (this.listener, this.name) = (listener, name);
            listener?.PhaseBegan(name);
        }

        public void Dispose() => listener?.PhaseEnded(name);
    }
}

/// <summary>A method that overlaps its collectives with computation and accounts for it.</summary>
public interface IOverlapReporting
{
    /// <summary>The method's overlap accounting (shared by all in-process ranks using this instance).</summary>
    OverlapLog Overlap { get; }
}
