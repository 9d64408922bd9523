using Lasp2.Research.Comm.Mpi;
using static TorchSharp.torch;

namespace Lasp2.Research.Comm;

/// <summary>
/// Entry points: run W in-process ranks (threads), a single-rank group, or the MPI world of a job
/// started by mpirun / `lasp2 launch`.
/// </summary>
public static class ProcessGroups
{
    /// <summary>
    /// Default per-collective timeout of both backends: generous (5 minutes), so only a real mismatch trips it;
    /// the environment variable LASP2_COMM_TIMEOUT (seconds, &gt; 0) overrides it.
    /// </summary>
    public static readonly TimeSpan DefaultTimeout =
        double.TryParse(Environment.GetEnvironmentVariable("LASP2_COMM_TIMEOUT"), System.Globalization.CultureInfo.InvariantCulture,
            out double seconds) && seconds > 0 ? TimeSpan.FromSeconds(seconds) : TimeSpan.FromMinutes(5);

    /// <summary>True when this process was started by mpirun/mpiexec or `lasp2 launch` (an MPI launcher's variables are set).</summary>
    public static bool LaunchedByMpi => MpiRuntime.LaunchedByMpi;

    /// <summary>
    /// The MPI world of this job (initializes MPI with MPI_THREAD_MULTIPLE on first use). Throws
    /// <see cref="InvalidOperationException"/> when the process was not started by mpirun, and
    /// <see cref="DllNotFoundException"/> ("install openmpi-bin") when no MPI library is found. Use one world
    /// group per process and dispose it last: that finalizes MPI.
    /// </summary>
    /// <param name="timeout">Per-call timeout (default <see cref="DefaultTimeout"/>): a call that takes longer aborts the job, naming it.</param>
    /// <param name="checkAgreement">Check before each collective that all ranks agree on call, arguments, dtype and
    /// shape (default: on, unless LASP2_MPI_CHECK=0).</param>
    public static MpiProcessGroup FromMpi(TimeSpan? timeout = null, bool? checkAgreement = null)
    {
        if (timeout <= TimeSpan.Zero)
            throw new ArgumentOutOfRangeException(nameof(timeout), timeout, "timeout must be positive.");
        var mpi = MpiRuntime.Init();
        bool check = checkAgreement ?? Environment.GetEnvironmentVariable("LASP2_MPI_CHECK") != "0";
        return new MpiProcessGroup(mpi, mpi.CommWorld, isWorld: true, timeout ?? DefaultTimeout, check);
    }

    /// <summary>
    /// Runs <paramref name="body"/> as this process's rank of the MPI job and returns its exit code. If the body
    /// throws, the rank prints its error and aborts the whole job (MPI_Abort), so every rank stops at once.
    /// </summary>
    public static int RunMpi(Func<IProcessGroup, int> body, TimeSpan? timeout = null, bool? checkAgreement = null)
    {
        ArgumentNullException.ThrowIfNull(body);
        var world = FromMpi(timeout, checkAgreement);
        int code;
        try
        {
            code = Rooted(() => body(world));
        }
        catch (Exception error)
        {
            MpiProcessGroup.Abort($"rank {world.Rank} of {world.WorldSize} failed: {error.GetType().Name}: {error.Message}");
            return 1;
        }
        world.Dispose();
        return code;
    }

    /// <summary>
    /// Runs <paramref name="body"/> on <paramref name="worldSize"/> ranks, each a thread of this process with
    /// its own <see cref="InProcessGroup"/>, and returns each rank's result in rank order.
    /// If any rank throws, every other rank is released at its current or next collective and this call throws
    /// one <see cref="RankFailedException"/> naming the first rank that failed (its error is the inner exception).
    /// A collective that waits longer than <paramref name="timeout"/> (default <see cref="DefaultTimeout"/>) fails
    /// with a <see cref="CommTimeoutException"/> naming the collective and the ranks that did not arrive.
    /// Every tensor a body makes outside its own dispose scopes stays alive until the body returns (see <see cref="Rooted{T}"/>).
    /// </summary>
    /// <param name="worldSize">Number of ranks W, 1..1024.</param>
    /// <param name="body">The program of one rank; results it returns are owned by the caller.</param>
    /// <param name="timeout">Per-collective timeout, &gt; 0.</param>
    /// <param name="threadsPerRank">If set (&gt;= 1), each rank calls torch.set_num_threads with it first
    /// (W ranks on few cores: 1 avoids oversubscription).</param>
    public static T[] RunInProcess<T>(int worldSize, Func<IProcessGroup, T> body, TimeSpan? timeout = null, int? threadsPerRank = null)
    {
        if (worldSize < 1 || worldSize > 1024)
            throw new ArgumentOutOfRangeException(nameof(worldSize), worldSize, "worldSize must be in 1..1024.");
        ArgumentNullException.ThrowIfNull(body);
        if (threadsPerRank < 1)
            throw new ArgumentOutOfRangeException(nameof(threadsPerRank), threadsPerRank, "threadsPerRank must be >= 1 when given.");
        var world = new InProcessWorld(worldSize, timeout ?? DefaultTimeout);
        long worldGroup = world.NewGroupId();
        int[] members = Enumerable.Range(0, worldSize).ToArray();
        var results = new T[worldSize];
        // Not disposed: a rank abandoned after a failure still signals it when it finally returns.
        var finished = new CountdownEvent(worldSize);
        var threads = members.Select(rank => new Thread(() =>
        {
            try
            {
                if (threadsPerRank is int threads) set_num_threads(threads);
                using var group = new InProcessGroup(world, worldGroup, members, rank);
                results[rank] = Rooted(() => body(group));
                world.Exit(rank);
            }
            catch (Exception error)
            {
                world.Fail(rank, error);
            }
            finally
            {
                finished.Signal();
            }
        }) { IsBackground = true, Name = $"lasp2 rank {rank}/{worldSize}" }).ToList();
        threads.ForEach(t => t.Start());
        WaitForRanks(world, finished);
        if (world.Failure is var (failedRank, error))
            throw new RankFailedException(failedRank, worldSize, error);
        return results;
    }

    /// <summary>
    /// <see cref="RunInProcess{T}(int, Func{IProcessGroup, T}, TimeSpan?, int?)"/> for rank bodies that return nothing.
    /// </summary>
    public static void RunInProcess(int worldSize, Action<IProcessGroup> body, TimeSpan? timeout = null, int? threadsPerRank = null)
    {
        ArgumentNullException.ThrowIfNull(body);
        RunInProcess(worldSize, group => { body(group); return 0; }, timeout, threadsPerRank);
    }

    /// <summary>
    /// Runs a rank body inside a dispose scope that holds every tensor the body makes outside its own scopes until it
    /// returns, then lets go of them undisposed (whatever the body returns belongs to the caller; the rest is left to
    /// the finalizer, as without a scope). Why: TorchSharp passes libtorch only a tensor's raw handle and does not keep
    /// the managed tensor alive across the native call (no GC.KeepAlive, TorchSharp 0.107), and the library is compiled
    /// optimised, where a temporary is unreachable once its handle is read. A tensor no scope holds (under a rank body
    /// without a scope, e.g. AllGather-CP's gathered keys and values during their unbind(0), or the cat inside
    /// SequenceLayout.ShardOf during its clone) can then be finalized by a collection another rank thread started while
    /// libtorch still reads it: a freed at::Tensor, and the process dies (a segfault in libtorch_cpu.so on a "lasp2 rank" thread).
    /// </summary>
    static T Rooted<T>(Func<T> body)
    {
        var scope = NewDisposeScope();
        try
        {
            return body();
        }
        finally
        {
            scope.Detach(scope.DisposablesView);
            scope.Dispose();
        }
    }

    /// <summary>A group of one rank on the calling thread: the single-device case of every distributed path.</summary>
    public static IProcessGroup Single()
    {
        var world = new InProcessWorld(1, DefaultTimeout);
        return new InProcessGroup(world, world.NewGroupId(), [0], 0);
    }

    /// <summary>
    /// Waits for every rank. After a failure the others are released by cancellation; one still busy in
    /// its own computation (not in a collective) is given one timeout to notice, then abandoned (its thread
    /// is a background thread), so the caller always gets the error.
    /// </summary>
    static void WaitForRanks(InProcessWorld world, CountdownEvent finished)
    {
        try
        {
            finished.Wait(world.Aborted);
        }
        catch (OperationCanceledException)
        {
            finished.Wait(world.Timeout);
        }
    }
}
