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
        lock (gate)
        {
            var r = records.GetValueOrDefault(kind, new CommRecord(kind, 0, 0, 0, TimeSpan.Zero));
            records[kind] = r with
            {
                Calls = r.Calls + 1,
                BytesSent = r.BytesSent + bytesSent,
                BytesReceived = r.BytesReceived + bytesReceived,
                Wait = r.Wait + wait,
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
