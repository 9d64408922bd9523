using Lasp2.Research.Comm;

namespace Lasp2.Research.Bench;

/// <summary>Creates the backend `lasp2 bench --backend` names.</summary>
public static class BenchBackends
{
    /// <summary>"inproc" (W ranks as threads) or "mpi" (the MPI world of this job).</summary>
    /// <param name="name">Backend name.</param>
    /// <param name="timeout">How long a collective may wait before the run fails (&gt; 0).</param>
    public static IBenchBackend Create(string name, TimeSpan timeout) => name switch
    {
        "inproc" => new InProcessBenchBackend(timeout),
        // The per-call agreement check is off: it adds a round trip before every collective and would be timed.
        "mpi" => new MpiBenchBackend(ProcessGroups.FromMpi(timeout, checkAgreement: false)),
        _ => throw new ArgumentOutOfRangeException(nameof(name), name, "backend must be inproc or mpi"),
    };
}
