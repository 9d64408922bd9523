using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace Lasp2.Research.Comm.Mpi;

/// <summary>
/// Process-wide MPI state: initialization (once), the thread level, element datatypes and reduction ops
/// per dtype, the watchdog that turns a hung call into an abort naming it, and finalization.
///
/// Threading policy: MPI_Init_thread asks for MPI_THREAD_MULTIPLE. Every MPI call of this binding is
/// additionally made under one process-wide lock, so the calls are serialized whatever level the library
/// provides, and a group may be used from any thread (async handles may be waited on another thread).
/// Blocking collectives run on the calling thread; asynchronous forms are MPI nonblocking operations
/// (MPI_Iallgather, MPI_Ireduce_scatter_block, MPI_Isend/MPI_Irecv) completed in Wait, which polls
/// MPI_Test and releases the lock between polls (<see cref="MpiRequests"/>). MPI_Abort is called without the lock.
/// </summary>
static unsafe class MpiRuntime
{
    static readonly object initGate = new();
    static readonly ConcurrentDictionary<long, (string Name, long Deadline)> watched = new();
    static readonly Dictionary<long, nint> elementTypes = new();
    static MpiNative? native;
    static nint bf16Sum, bf16Max, f16Sum, f16Max, half2Type;
    static long nextWatch;
    static int worldRank;

    /// <summary>Serializes every MPI call of this binding.</summary>
    public static readonly object CallGate = new();

    public static int ProvidedThreadLevel { get; private set; }

    /// <summary>The environment variables a launcher sets: Open MPI, PMIx, MPICH/Hydra, Slurm's PMI.</summary>
    public static readonly string[] LauncherVariables = ["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "PMI_RANK"];

    /// <summary>True when this process was started by mpirun/mpiexec (or `lasp2 launch`).</summary>
    public static bool LaunchedByMpi => LauncherVariables.Any(v => Environment.GetEnvironmentVariable(v) is not null);

    /// <summary>Initializes MPI once per process and returns the binding.</summary>
    public static MpiNative Init()
    {
        lock (initGate)
        {
            if (native is not null) return native;
            if (!LaunchedByMpi)
                throw new InvalidOperationException(
                    "This program expects MPI but was not started by mpirun: none of " + string.Join(", ", LauncherVariables) +
                    " is set. Start it with `lasp2 launch -n N -- <command>` or `mpirun -n N dotnet lasp2.dll <command>`.");
            var mpi = MpiNative.Load();
            int initialized, provided;
            MpiNative.Check(mpi.Initialized(&initialized), "MPI_Initialized");
            if (initialized == 0)
                MpiNative.Check(mpi.InitThread(null, null, MpiNative.ThreadMultiple, &provided), "MPI_Init_thread");
            else provided = 0;
            ProvidedThreadLevel = provided;
            int rank;
            MpiNative.Check(mpi.CommRank(mpi.CommWorld, &rank), "MPI_Comm_rank");
            worldRank = rank;
            // MPI 3.1 has no bf16/fp16: they travel as a 2-byte type with our own reduction ops.
            half2Type = Contiguous(mpi, 2);
            elementTypes[2] = half2Type;
            bf16Sum = Op(mpi, &Bf16Sum);
            bf16Max = Op(mpi, &Bf16Max);
            f16Sum = Op(mpi, &F16Sum);
            f16Max = Op(mpi, &F16Max);
            new Thread(Watchdog) { IsBackground = true, Name = "lasp2 MPI watchdog" }.Start();
            // A program that never disposed its world group still finalizes, so mpirun sees a clean exit.
            AppDomain.CurrentDomain.ProcessExit += (_, _) => FinalizeMpi();
            native = mpi;
            return mpi;
        }
    }

    /// <summary>The datatype that moves one element of <paramref name="elementSize"/> bytes.</summary>
    public static nint ElementType(MpiNative mpi, long elementSize)
    {
        lock (CallGate)
        {
            if (elementSize == 1) return mpi.Byte;
            if (!elementTypes.TryGetValue(elementSize, out var type))
                elementTypes[elementSize] = type = Contiguous(mpi, (int)elementSize);
            return type;
        }
    }

    /// <summary>Datatype and op for a reduction of <paramref name="dtype"/>; float32/64 natively, bf16/fp16 by our ops.</summary>
    public static (nint Type, nint Op) Reduction(MpiNative mpi, ScalarType dtype, ReduceOp op) => (dtype, op) switch
    {
        (ScalarType.Float32, _) => (mpi.Float, op == ReduceOp.Sum ? mpi.OpSum : mpi.OpMax),
        (ScalarType.Float64, _) => (mpi.Double, op == ReduceOp.Sum ? mpi.OpSum : mpi.OpMax),
        (ScalarType.BFloat16, _) => (half2Type, op == ReduceOp.Sum ? bf16Sum : bf16Max),
        (ScalarType.Float16, _) => (half2Type, op == ReduceOp.Sum ? f16Sum : f16Max),
        _ => throw new NotSupportedException(
            $"MPI reductions support float32, float64, bfloat16 and float16; got {dtype}."),
    };

    /// <summary>
    /// Runs <paramref name="call"/> under the watchdog: if it has not returned after <paramref name="timeout"/>,
    /// the job is aborted with a message naming <paramref name="name"/>.
    /// </summary>
    public static T Watched<T>(string name, TimeSpan timeout, Func<T> call)
    {
        long id = Interlocked.Increment(ref nextWatch);
        watched[id] = (name, Stopwatch.GetTimestamp() + (long)(timeout.TotalSeconds * Stopwatch.Frequency));
        try
        {
            return call();
        }
        finally
        {
            watched.TryRemove(id, out _);
        }
    }

    /// <summary>Prints <paramref name="message"/> to stderr and aborts the whole job (MPI_Abort on MPI_COMM_WORLD).</summary>
    public static void Abort(string message, int code = 1)
    {
        Console.Error.WriteLine($"lasp2 (MPI rank {worldRank}): {message}");
        Console.Error.Flush();
        if (native is { } mpi) mpi.Abort(mpi.CommWorld, code);
        Environment.Exit(code);   // only reached if MPI_Abort returned
    }

    /// <summary>MPI_Finalize, once, if MPI was initialized here and not finalized yet.</summary>
    public static void FinalizeMpi()
    {
        lock (initGate)
        {
            if (native is not { } mpi) return;
            int finalized;
            // At process exit a thread may still be blocked inside MPI: then leave finalization to mpirun.
            if (!Monitor.TryEnter(CallGate, TimeSpan.FromSeconds(1))) return;
            try
            {
                MpiNative.Check(mpi.Finalized(&finalized), "MPI_Finalized");
                if (finalized == 0) MpiNative.Check(mpi.Finalize(), "MPI_Finalize");
            }
            finally
            {
                Monitor.Exit(CallGate);
            }
        }
    }

    static void Watchdog()
    {
        while (true)
        {
            Thread.Sleep(100);
            long now = Stopwatch.GetTimestamp();
            foreach (var (name, deadline) in watched.Values)
                if (now > deadline)
                    Abort($"{name} timed out: a rank did not arrive (or called a different collective). Aborting the job.", 2);
        }
    }

    static nint Contiguous(MpiNative mpi, int bytes)
    {
        nint type = 0;
        MpiNative.Check(mpi.TypeContiguous(bytes, mpi.Byte, &type), "MPI_Type_contiguous");
        MpiNative.Check(mpi.TypeCommit(&type), "MPI_Type_commit");
        return type;
    }

    static nint Op(MpiNative mpi, delegate* unmanaged<void*, void*, int*, nint*, void> function)
    {
        nint op = 0;
        MpiNative.Check(mpi.OpCreate(function, 1, &op), "MPI_Op_create");
        return op;
    }

    // MPI_User_function: inout[i] = in[i] op inout[i], computed in float32 and rounded back.
    [UnmanagedCallersOnly]
    static void Bf16Sum(void* input, void* inout, int* length, nint* type) => Combine(input, inout, *length, Bf16, (a, b) => a + b);

    [UnmanagedCallersOnly]
    static void Bf16Max(void* input, void* inout, int* length, nint* type) => Combine(input, inout, *length, Bf16, MathF.Max);

    [UnmanagedCallersOnly]
    static void F16Sum(void* input, void* inout, int* length, nint* type) => Combine(input, inout, *length, F16, (a, b) => a + b);

    [UnmanagedCallersOnly]
    static void F16Max(void* input, void* inout, int* length, nint* type) => Combine(input, inout, *length, F16, MathF.Max);

    static readonly (Func<ushort, float> ToFloat, Func<float, ushort> FromFloat) Bf16 = (
        bits => BitConverter.UInt32BitsToSingle((uint)bits << 16),
        value => float.IsNaN(value) ? (ushort)0x7FC0 : RoundToNearestEven(BitConverter.SingleToUInt32Bits(value)));

    static readonly (Func<ushort, float> ToFloat, Func<float, ushort> FromFloat) F16 = (
        bits => (float)BitConverter.UInt16BitsToHalf(bits),
        value => BitConverter.HalfToUInt16Bits((Half)value));

    static ushort RoundToNearestEven(uint bits) => (ushort)((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Combine(void* input, void* inout, int length,
        (Func<ushort, float> ToFloat, Func<float, ushort> FromFloat) format, Func<float, float, float> op)
    {
        var a = new ReadOnlySpan<ushort>(input, length);
        var b = new Span<ushort>(inout, length);
        for (int i = 0; i < length; i++) b[i] = format.FromFloat(op(format.ToFloat(a[i]), format.ToFloat(b[i])));
    }
}
