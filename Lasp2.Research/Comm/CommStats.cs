namespace Lasp2.Research.Comm;

/// <summary>Names of the collective kinds recorded by <see cref="CommStats"/>.</summary>
public static class CommKind
{
    public const string AllGather = "AllGather";
    public const string AllReduce = "AllReduce";
    public const string ReduceScatter = "ReduceScatter";
    public const string AllToAll = "AllToAll";
    public const string Broadcast = "Broadcast";
    public const string Send = "Send";
    public const string Recv = "Recv";
    public const string SendRecv = "SendRecv";
    public const string Barrier = "Barrier";

    /// <summary>Every kind, in a fixed order (the layout <see cref="CommReport.Gather"/> exchanges).</summary>
    public static readonly IReadOnlyList<string> All =
        [AllGather, AllReduce, ReduceScatter, AllToAll, Broadcast, Send, Recv, SendRecv, Barrier];
}

/// <summary>Totals for one collective kind on one rank.</summary>
public readonly record struct CommRecord(string Kind, long Calls, long BytesSent, long BytesReceived, TimeSpan Wait);

/// <summary>
/// Per-rank communication accounting: calls, bytes this rank puts on / takes off the wire, and time
/// spent waiting, per collective kind. Thread-safe.
/// </summary>
public sealed class CommStats
{
    readonly object gate = new();
    readonly Dictionary<string, CommRecord> records = new();

    /// <summary>Adds one call of <paramref name="kind"/>.</summary>
    public void Record(string kind, long bytesSent, long bytesReceived, TimeSpan wait)
    {
        Add(new CommRecord(kind, 1, bytesSent, bytesReceived, wait));
    }

    /// <summary>Adds totals recorded elsewhere (e.g. another rank's, gathered for a report).</summary>
    public void Add(CommRecord totals)
    {
        lock (gate)
        {
            var r = records.GetValueOrDefault(totals.Kind, new CommRecord(totals.Kind, 0, 0, 0, TimeSpan.Zero));
            records[totals.Kind] = r with
            {
                Calls = r.Calls + totals.Calls,
                BytesSent = r.BytesSent + totals.BytesSent,
                BytesReceived = r.BytesReceived + totals.BytesReceived,
                Wait = r.Wait + totals.Wait,
            };
        }
    }

    /// <summary>Totals of one kind (zero if never called).</summary>
    public CommRecord this[string kind]
    {
        get { lock (gate) return records.GetValueOrDefault(kind, new CommRecord(kind, 0, 0, 0, TimeSpan.Zero)); }
    }

    /// <summary>All kinds recorded so far, by name.</summary>
    public IReadOnlyList<CommRecord> Snapshot()
    {
        lock (gate) return records.Values.OrderBy(r => r.Kind, StringComparer.Ordinal).ToList();
    }

    /// <summary>Forgets everything recorded.</summary>
    public void Reset()
    {
        lock (gate) records.Clear();
    }
}
