namespace Lasp2.Research.Comm.Mpi;

/// <summary>
/// Nonblocking MPI requests in flight, with the status each one completed with (kept: once MPI_Test has
/// completed a request it becomes MPI_REQUEST_NULL, and testing that again yields an empty status).
/// Polls MPI_Test under <see cref="MpiRuntime.CallGate"/>, releasing it between polls so other threads can
/// make progress; never sleeps a whole millisecond.
/// </summary>
sealed unsafe class MpiRequests(MpiNative mpi, int count)
{
    readonly nint[] handles = GC.AllocateArray<nint>(count, pinned: true);   // MPI writes them: they must not move
    readonly bool[] done = new bool[count];

    /// <summary>The status of request <c>i</c> once it has completed (a buffer large enough for either ABI).</summary>
    public byte[][] Statuses { get; } =
        Enumerable.Range(0, count).Select(_ => GC.AllocateArray<byte>(MpiNative.StatusBytes, pinned: true)).ToArray();

    /// <summary>Where MPI stores request <paramref name="i"/>'s handle when it is posted (call under the gate).</summary>
    public nint* Slot(int i)
    {
        fixed (nint* handle = &handles[i]) return handle;   // pinned-object heap: the address stays valid
    }

    /// <summary>True once every request has completed; drives MPI progress.</summary>
    public bool TestAll()
    {
        bool all = true;
        for (int i = 0; i < handles.Length; i++) all &= TestOne(i);
        return all;
    }

    /// <summary>Blocks (polling) until every request has completed.</summary>
    public void WaitAll()
    {
        var spin = new SpinWait();
        while (!TestAll()) spin.SpinOnce(sleep1Threshold: -1);
    }

    bool TestOne(int i)
    {
        if (done[i]) return true;
        int flag;
        lock (MpiRuntime.CallGate)
            fixed (nint* handle = &handles[i])
            fixed (byte* status = Statuses[i])
                MpiNative.Check(mpi.Test(handle, &flag, status), "MPI_Test");
        return done[i] = flag != 0;
    }
}
