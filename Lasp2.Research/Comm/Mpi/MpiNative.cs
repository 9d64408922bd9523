using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

[assembly: InternalsVisibleTo("Lasp2.PropertyTests")]

namespace Lasp2.Research.Comm.Mpi;

/// <summary>The two MPI ABIs in use on Linux.</summary>
public enum MpiAbi
{
    /// <summary>Open MPI (libmpi.so.40): handles are pointers to exported globals; MPI_Status is 24 bytes.</summary>
    OpenMpi,
    /// <summary>MPICH family (libmpi.so.12: MPICH, Intel MPI, MVAPICH): handles are 32-bit ints; MPI_Status is 20 bytes.</summary>
    Mpich,
}

/// <summary>
/// Our binding to the system MPI library (MPI.NET is Windows-only). The library is found with
/// NativeLibrary.TryLoad and every function is called through a <c>delegate* unmanaged</c> pointer from
/// NativeLibrary.GetExport. The ABI is detected at run time from the exports. Every handle (communicator,
/// datatype, op, request) is held as <see cref="nint"/>: an Open MPI pointer, or an MPICH int zero-extended
/// (on x86-64 a 32-bit int argument is the low half of its register or 8-byte stack slot, and MPICH writes
/// 4 bytes into a zero-initialized 8-byte out-handle, leaving its value). Statuses are passed as a 32-byte
/// buffer, large enough for both layouts, and read only through MPI_Get_count.
/// </summary>
sealed unsafe class MpiNative
{
    /// <summary>The sonames tried, in order.</summary>
    public static readonly string[] LibraryNames = ["libmpi.so.40", "libmpi.so.12", "libmpi.so"];

    public const int ThreadMultiple = 3;   // MPI_THREAD_MULTIPLE, the same in both ABIs
    public const int StatusBytes = 32;     // >= sizeof(MPI_Status) in both ABIs

    readonly nint library;

    public MpiAbi Abi { get; }
    public string LibraryName { get; }
    public nint CommWorld { get; }
    public nint Byte { get; }
    public nint Float { get; }
    public nint Double { get; }
    public nint OpSum { get; }
    public nint OpMax { get; }

    public readonly delegate* unmanaged<int*, int> Initialized;
    public readonly delegate* unmanaged<int*, int> Finalized;
    public readonly delegate* unmanaged<int*, nint*, int, int*, int> InitThread;
    public readonly delegate* unmanaged<int> Finalize;
    public readonly delegate* unmanaged<nint, int, int> Abort;
    public readonly delegate* unmanaged<byte*, int*, int> GetLibraryVersion;
    public readonly delegate* unmanaged<nint, int*, int> CommRank;
    public readonly delegate* unmanaged<nint, int*, int> CommSize;
    public readonly delegate* unmanaged<nint, int, int, nint*, int> CommSplit;
    public readonly delegate* unmanaged<nint*, int> CommFree;
    public readonly delegate* unmanaged<void*, int, nint, void*, int, nint, nint, int> Allgather;
    public readonly delegate* unmanaged<void*, int, nint, void*, int, nint, nint, nint*, int> Iallgather;
    public readonly delegate* unmanaged<void*, void*, int, nint, nint, nint, int> Allreduce;
    public readonly delegate* unmanaged<void*, void*, int, nint, nint, nint, int> ReduceScatterBlock;
    public readonly delegate* unmanaged<void*, void*, int, nint, nint, nint, nint*, int> IreduceScatterBlock;
    public readonly delegate* unmanaged<void*, int, nint, void*, int, nint, nint, int> Alltoall;
    public readonly delegate* unmanaged<void*, int, nint, int, nint, int> Bcast;
    public readonly delegate* unmanaged<nint, int> Barrier;
    public readonly delegate* unmanaged<void*, int, nint, int, int, nint, nint*, int> Isend;
    public readonly delegate* unmanaged<void*, int, nint, int, int, nint, nint*, int> Irecv;
    public readonly delegate* unmanaged<void*, int, nint, int, int, nint, void*, int> Recv;
    public readonly delegate* unmanaged<void*, int, nint, int, int, void*, int, nint, int, int, nint, void*, int> Sendrecv;
    public readonly delegate* unmanaged<nint*, void*, int> Wait;
    public readonly delegate* unmanaged<nint*, int*, void*, int> Test;
    public readonly delegate* unmanaged<void*, nint, int*, int> GetCount;
    public readonly delegate* unmanaged<int, nint, nint*, int> TypeContiguous;
    public readonly delegate* unmanaged<nint*, int> TypeCommit;
    public readonly delegate* unmanaged<delegate* unmanaged<void*, void*, int*, nint*, void>, int, nint*, int> OpCreate;

    MpiNative(nint library, string name)
    {
        this.library = library;
        LibraryName = name;
        Abi = NativeLibrary.TryGetExport(library, "ompi_mpi_comm_world", out _) ? MpiAbi.OpenMpi : MpiAbi.Mpich;
        if (Abi == MpiAbi.OpenMpi)
        {
            // Open MPI: MPI_COMM_WORLD is &ompi_mpi_comm_world, MPI_FLOAT is &ompi_mpi_float, and so on.
            (CommWorld, Byte, Float, Double, OpSum, OpMax) = (Symbol("ompi_mpi_comm_world"), Symbol("ompi_mpi_byte"),
                Symbol("ompi_mpi_float"), Symbol("ompi_mpi_double"), Symbol("ompi_mpi_op_sum"), Symbol("ompi_mpi_op_max"));
        }
        else
        {
            // MPICH mpi.h: MPI_COMM_WORLD 0x44000000, MPI_BYTE 0x4c00010d, MPI_FLOAT 0x4c00040a,
            // MPI_DOUBLE 0x4c00080b, MPI_SUM 0x58000003, MPI_MAX 0x58000001.
            (CommWorld, Byte, Float, Double, OpSum, OpMax) = (0x44000000, 0x4c00010d, 0x4c00040a, 0x4c00080b, 0x58000003, 0x58000001);
        }
        Initialized = (delegate* unmanaged<int*, int>)Symbol("MPI_Initialized");
        Finalized = (delegate* unmanaged<int*, int>)Symbol("MPI_Finalized");
        InitThread = (delegate* unmanaged<int*, nint*, int, int*, int>)Symbol("MPI_Init_thread");
        Finalize = (delegate* unmanaged<int>)Symbol("MPI_Finalize");
        Abort = (delegate* unmanaged<nint, int, int>)Symbol("MPI_Abort");
        GetLibraryVersion = (delegate* unmanaged<byte*, int*, int>)Symbol("MPI_Get_library_version");
        CommRank = (delegate* unmanaged<nint, int*, int>)Symbol("MPI_Comm_rank");
        CommSize = (delegate* unmanaged<nint, int*, int>)Symbol("MPI_Comm_size");
        CommSplit = (delegate* unmanaged<nint, int, int, nint*, int>)Symbol("MPI_Comm_split");
        CommFree = (delegate* unmanaged<nint*, int>)Symbol("MPI_Comm_free");
        Allgather = (delegate* unmanaged<void*, int, nint, void*, int, nint, nint, int>)Symbol("MPI_Allgather");
        Iallgather = (delegate* unmanaged<void*, int, nint, void*, int, nint, nint, nint*, int>)Symbol("MPI_Iallgather");
        Allreduce = (delegate* unmanaged<void*, void*, int, nint, nint, nint, int>)Symbol("MPI_Allreduce");
        ReduceScatterBlock = (delegate* unmanaged<void*, void*, int, nint, nint, nint, int>)Symbol("MPI_Reduce_scatter_block");
        IreduceScatterBlock = (delegate* unmanaged<void*, void*, int, nint, nint, nint, nint*, int>)Symbol("MPI_Ireduce_scatter_block");
        Alltoall = (delegate* unmanaged<void*, int, nint, void*, int, nint, nint, int>)Symbol("MPI_Alltoall");
        Bcast = (delegate* unmanaged<void*, int, nint, int, nint, int>)Symbol("MPI_Bcast");
        Barrier = (delegate* unmanaged<nint, int>)Symbol("MPI_Barrier");
        Isend = (delegate* unmanaged<void*, int, nint, int, int, nint, nint*, int>)Symbol("MPI_Isend");
        Irecv = (delegate* unmanaged<void*, int, nint, int, int, nint, nint*, int>)Symbol("MPI_Irecv");
        Recv = (delegate* unmanaged<void*, int, nint, int, int, nint, void*, int>)Symbol("MPI_Recv");
        Sendrecv = (delegate* unmanaged<void*, int, nint, int, int, void*, int, nint, int, int, nint, void*, int>)Symbol("MPI_Sendrecv");
        Wait = (delegate* unmanaged<nint*, void*, int>)Symbol("MPI_Wait");
        Test = (delegate* unmanaged<nint*, int*, void*, int>)Symbol("MPI_Test");
        GetCount = (delegate* unmanaged<void*, nint, int*, int>)Symbol("MPI_Get_count");
        TypeContiguous = (delegate* unmanaged<int, nint, nint*, int>)Symbol("MPI_Type_contiguous");
        TypeCommit = (delegate* unmanaged<nint*, int>)Symbol("MPI_Type_commit");
        OpCreate = (delegate* unmanaged<delegate* unmanaged<void*, void*, int*, nint*, void>, int, nint*, int>)Symbol("MPI_Op_create");
    }

    /// <summary>Loads the first MPI library found, or throws a <see cref="DllNotFoundException"/> that says what to install.</summary>
    public static MpiNative Load() => Load(LibraryNames);

    /// <summary>Loads the first of <paramref name="names"/> that exists (tests pass names that do not).</summary>
    internal static MpiNative Load(IReadOnlyList<string> names)
    {
        foreach (var name in names)
            if (NativeLibrary.TryLoad(name, out var handle))
                return new MpiNative(handle, name);
        throw new DllNotFoundException(
            $"No MPI library found (tried {string.Join(", ", names)}). Install Open MPI: " +
            "apt-get install -y openmpi-bin (Debian/Ubuntu), or MPICH (apt-get install -y mpich).");
    }

    /// <summary>The library's own version string (MPI_Get_library_version).</summary>
    public string Version()
    {
        var buffer = new byte[8192];   // MPI_MAX_LIBRARY_VERSION_STRING is 256 (Open MPI) or 8192 (MPICH)
        int length;
        fixed (byte* text = buffer) Check(GetLibraryVersion(text, &length), "MPI_Get_library_version");
        return System.Text.Encoding.ASCII.GetString(buffer, 0, Math.Clamp(length, 0, buffer.Length)).Trim('\0', ' ', '\n');
    }

    /// <summary>MPI returns 0 (MPI_SUCCESS) or an error code (only seen when the error handler returns).</summary>
    public static void Check(int code, string function)
    {
        if (code != 0) throw new InvalidOperationException($"{function} failed with MPI error code {code}.");
    }

    nint Symbol(string name) => NativeLibrary.TryGetExport(library, name, out var address)
        ? address
        : throw new EntryPointNotFoundException($"{LibraryName} has no export {name}; an MPI-3 library is required.");
}
