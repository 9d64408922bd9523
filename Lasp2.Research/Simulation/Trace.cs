namespace Lasp2.Research.Simulation;

/// <summary>The collectives the cost model prices (the <see cref="Comm.IProcessGroup"/> operations).</summary>
public enum CollectiveKind
{
    AllGather,
    ReduceScatter,
    AllReduce,
    AllToAll,
    Broadcast,
    Barrier,
    /// <summary>Point-to-point: sends to Destination while receiving from Source.</summary>
    SendRecv,
    Send,
    Recv,
}

/// <summary>One step of one rank's schedule: computation, the issue of a collective, or the wait for one.</summary>
public abstract record SimEvent;

/// <summary>Computation of <paramref name="Flops"/> floating-point operations (matrix products, <see cref="Kernels.PhaseFlops"/>).</summary>
public sealed record ComputeEvent(double Flops) : SimEvent;

/// <summary>
/// A collective issued (it starts now; the rank goes on). <paramref name="Bytes"/> is the per-rank block: the
/// AllGather input, one ReduceScatter output block, the AllReduce / AllToAll / Broadcast input, the message.
/// Point-to-point events name their peers (-1 where there is none).
/// </summary>
public sealed record IssueEvent(int Handle, CollectiveKind Kind, long Bytes, int Destination = -1, int Source = -1) : SimEvent
{
    /// <summary>Kinds the whole group takes part in (matched across ranks by call number).</summary>
    public bool IsGroupCollective => Kind is not (CollectiveKind.SendRecv or CollectiveKind.Send or CollectiveKind.Recv);
}

/// <summary>The rank blocks until collective <paramref name="Handle"/> has completed.</summary>
public sealed record WaitEvent(int Handle) : SimEvent;

/// <summary>Builds one rank's schedule: the analytic schedules and the simulated process group both write through it.</summary>
public sealed class TraceBuilder
{
    readonly List<SimEvent> events = new();
    int nextHandle;

    /// <summary>The events so far, consecutive computations merged and empty ones dropped.</summary>
    public IReadOnlyList<SimEvent> Events => events;

    /// <summary>Adds computation (merged into a directly preceding computation).</summary>
    public void Compute(double flops)
    {
        if (flops == 0) return;
        if (events.Count > 0 && events[^1] is ComputeEvent last) events[^1] = new ComputeEvent(last.Flops + flops);
        else events.Add(new ComputeEvent(flops));
    }

    /// <summary>Issues a collective; returns its handle.</summary>
    public int Issue(CollectiveKind kind, long bytes, int destination = -1, int source = -1)
    {
        events.Add(new IssueEvent(nextHandle, kind, bytes, destination, source));
        return nextHandle++;
    }

    /// <summary>Waits for a collective issued earlier.</summary>
    public void Wait(int handle) => events.Add(new WaitEvent(handle));

    /// <summary>A blocking collective: issue, then wait at once.</summary>
    public void Blocking(CollectiveKind kind, long bytes, int destination = -1, int source = -1) =>
        Wait(Issue(kind, bytes, destination, source));

    /// <summary>Appends another rank schedule (its handles renumbered after this one's).</summary>
    public void Append(IReadOnlyList<SimEvent> other)
    {
        int offset = nextHandle;
        foreach (var e in other)
        {
            switch (e)
            {
                case ComputeEvent c: Compute(c.Flops); break;
                case IssueEvent i: events.Add(i with { Handle = i.Handle + offset }); nextHandle = Math.Max(nextHandle, i.Handle + offset + 1); break;
                case WaitEvent w: events.Add(new WaitEvent(w.Handle + offset)); break;
            }
        }
    }
}
