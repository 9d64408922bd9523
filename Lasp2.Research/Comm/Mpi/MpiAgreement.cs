using static TorchSharp.torch;

namespace Lasp2.Research.Comm.Mpi;

/// <summary>
/// The cross-rank check that turns mismatched programs into a clear error on MPI: before a collective, the
/// ranks exchange (call, arguments, dtype, shape) in one small MPI_Allgather / MPI_Iallgather of 16 int64,
/// and every rank compares them. A mismatch throws a <see cref="CommException"/> naming each rank's call,
/// which aborts the job (a mismatched collective would otherwise truncate, hang or give a silent wrong answer).
/// These bytes are not counted in <see cref="CommStats"/>. On by default; LASP2_MPI_CHECK=0 turns it off.
/// </summary>
sealed unsafe class MpiAgreement
{
    const int Fields = 16;   // kind, arguments hash, dtype, dims, numel, shape hash, first 10 extents
    const int MaxListedDims = Fields - 6;

    readonly string name;
    readonly MpiNative mpi;
    readonly long[] all;        // pinned (pinned object heap): MPI may write it after Start returns
    readonly long[] mine;
    bool nonblocking;
    readonly MpiRequests request;

    MpiAgreement(string name, MpiNative mpi, long[] mine, long[] all)
    {
        this.name = name;
        this.mpi = mpi;
        this.mine = mine;
        this.all = all;
        request = new MpiRequests(mpi, 1);
    }

    /// <summary>
    /// Starts the exchange for one call: blocking (MPI_Allgather, done on return) or nonblocking
    /// (MPI_Iallgather, completed in <see cref="Verify"/>) for the asynchronous forms.
    /// </summary>
    public static MpiAgreement Start(MpiNative mpi, nint comm, int worldSize, string name, string kind, string arguments,
        ScalarType dtype, long[] shape, bool nonblocking)
    {
        var mine = GC.AllocateArray<long>(Fields, pinned: true);
        mine[0] = CommKind.All.ToList().IndexOf(kind);
        mine[1] = Fnv(arguments);
        mine[2] = (long)dtype;
        mine[3] = shape.Length;
        mine[4] = shape.Aggregate(1L, (n, extent) => n * extent);
        mine[5] = shape.Aggregate(Fnv(""), (hash, extent) => (hash ^ extent) * 1099511628211L);
        for (int d = 0; d < Math.Min(shape.Length, MaxListedDims); d++) mine[6 + d] = shape[d];
        var check = new MpiAgreement(name, mpi, mine, GC.AllocateArray<long>(Fields * worldSize, pinned: true));
        check.nonblocking = nonblocking;
        fixed (long* send = check.mine, receive = check.all)
            lock (MpiRuntime.CallGate)
                MpiNative.Check(nonblocking
                    ? mpi.Iallgather(send, Fields * sizeof(long), mpi.Byte, receive, Fields * sizeof(long), mpi.Byte, comm, check.request.Slot(0))
                    : mpi.Allgather(send, Fields * sizeof(long), mpi.Byte, receive, Fields * sizeof(long), mpi.Byte, comm),
                    "MPI_Allgather (agreement check)");
        return check;
    }

    /// <summary>Waits for the exchange; throws unless every rank made the same call with the same arguments, dtype and shape.</summary>
    public void Verify()
    {
        if (nonblocking) request.WaitAll();
        int worldSize = all.Length / Fields;
        var each = Enumerable.Range(0, worldSize).Select(r => all.AsSpan(r * Fields, Fields).ToArray()).ToArray();
        if (each.All(fields => fields.AsSpan().SequenceEqual(mine))) return;
        var calls = each.Select((fields, rank) => $"rank {rank}: {Describe(fields)}");
        throw new CommException($"{name}: ranks disagree on the call, its arguments, dtype or shape: {string.Join("; ", calls)}.");
    }

    static string Describe(long[] fields)
    {
        string kind = fields[0] >= 0 && fields[0] < CommKind.All.Count ? CommKind.All[(int)fields[0]] : "?";
        var extents = fields.Skip(6).Take((int)Math.Min(fields[3], MaxListedDims));
        string more = fields[3] > MaxListedDims ? ",..." : "";
        return $"{kind} {(ScalarType)fields[2]} [{string.Join(",", extents)}{more}] (arguments #{fields[1] & 0xFFFF:x4})";
    }

    static long Fnv(string text) => text.Aggregate(unchecked((long)14695981039346656037UL), (hash, c) => (hash ^ c) * 1099511628211L);
}
