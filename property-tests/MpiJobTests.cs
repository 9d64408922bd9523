using System.Diagnostics;
using System.Text.RegularExpressions;
using Lasp2.Research.Comm;
using Lasp2.Research.Comm.Mpi;
using Xunit;

namespace Lasp2.PropertyTests;

/// <summary>
/// Real Open MPI jobs (test.sh installs openmpi-bin when missing): the built lasp2 (lasp2.dll sits in this test
/// output) runs `comm-selftest` as each rank, which checks every collective, sync and async, on every rank.
/// Also the faults (a failing rank, a rank that never arrives) and `lasp2 launch`'s command line.
/// One class, so the jobs run one after another.
/// </summary>
public partial class MpiJobTests
{
    static readonly string Lasp2Dll = Path.Combine(AppContext.BaseDirectory, "lasp2.dll");

    /// <summary>A job that hangs is killed after this (a liveness bound, not a performance figure).</summary>
    static readonly TimeSpan JobLimit = TimeSpan.FromSeconds(120);

    sealed record Job(int ExitCode, string Output, TimeSpan Elapsed);

    static Job Run(string program, IEnumerable<string> arguments, IDictionary<string, string>? environment = null)
    {
        var start = new ProcessStartInfo(program)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var argument in arguments) start.ArgumentList.Add(argument);
        start.Environment["TERM"] = "dumb";
        foreach (var (name, value) in environment ?? new Dictionary<string, string>()) start.Environment[name] = value;
        var clock = Stopwatch.StartNew();
        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(JobLimit))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"{program} {string.Join(" ", arguments)} did not finish within {JobLimit}");
        }
        process.WaitForExit();
        return new Job(process.ExitCode, output.Result + error.Result, clock.Elapsed);
    }

    static Job Launch(int ranks, string[] command, IDictionary<string, string>? environment = null) =>
        Run("dotnet", [Lasp2Dll, "launch", "-n", ranks.ToString(), "--timeout", "100", "--", .. command], environment);

    static void AssertEveryRankPassedEveryCheck(Job job, int ranks)
    {
        Assert.True(job.ExitCode == 0, $"exit code {job.ExitCode}:\n{job.Output}");
        Assert.DoesNotContain("FAIL", job.Output);
        var passed = RankLine().Matches(job.Output).Where(m => m.Groups["ok"].Value == m.Groups["all"].Value && m.Groups["w"].Value == $"{ranks}")
            .Select(m => int.Parse(m.Groups["rank"].Value)).Order().ToArray();
        Assert.True(Enumerable.Range(0, ranks).SequenceEqual(passed), $"every rank must report all checks passed:\n{job.Output}");
    }

    [GeneratedRegex(@"rank (?<rank>\d+) of (?<w>\d+): (?<ok>\d+) of (?<all>\d+) checks passed")]
    private static partial Regex RankLine();

    [Fact]
    public void EveryCollectiveIsCorrectOnEveryRankAtTwoRanksThroughLaunch()
    {
        var job = Launch(2, ["comm-selftest"]);
        AssertEveryRankPassedEveryCheck(job, 2);
        Assert.Contains("thread level provided: 3", job.Output);            // MPI_THREAD_MULTIPLE
        Assert.Matches(@"AllGather +2 +\d+ +\d+ +\d+", job.Output);          // rank 0's gathered report
    }

    [Fact]
    public void EveryCollectiveIsCorrectOnEveryRankAtFourRanksWithPlainMpirun()
    {
        string[] root = Environment.IsPrivilegedProcess ? ["--allow-run-as-root"] : [];
        var job = Run("mpirun", [.. root, "--oversubscribe", "--timeout", "100", "-n", "4", "dotnet", Lasp2Dll, "comm-selftest"]);
        AssertEveryRankPassedEveryCheck(job, 4);
    }

    /// <summary>With at most 4 elements per MPI call, every transfer of the self-test is split into pieces.</summary>
    [Fact]
    public void TransfersAboveTheCountLimitAreSplitIntoPieces() =>
        AssertEveryRankPassedEveryCheck(Launch(2, ["comm-selftest"], new Dictionary<string, string> { ["LASP2_MPI_MAX_COUNT"] = "4" }), 2);

    [Fact]
    public void AFailingRankAbortsTheJobQuicklyWithItsMessage()
    {
        var job = Launch(4, ["comm-selftest", "--fail-rank", "1"]);
        Assert.NotEqual(0, job.ExitCode);
        Assert.True(job.Elapsed < TimeSpan.FromSeconds(60), $"the job should abort at once; took {job.Elapsed}");
        Assert.Contains("rank 1 of 4 failed: InvalidOperationException: injected failure on rank 1 at step 3", job.Output);
    }

    [Fact]
    public void ARankThatNeverArrivesTimesOutNamingTheCollective()
    {
        var job = Launch(2, ["comm-selftest", "--hang-rank", "1", "--timeout", "2"]);
        Assert.NotEqual(0, job.ExitCode);
        Assert.Contains("AllGather #3 timed out", job.Output);
    }

    [Fact]
    public void MismatchedShapesAcrossRanksAbortTheJobNamingEachRanksCall()
    {
        var job = Launch(2, ["comm-selftest", "--mismatch-rank", "1"]);
        Assert.NotEqual(0, job.ExitCode);
        Assert.Contains("AllGather #3: ranks disagree on the call, its arguments, dtype or shape", job.Output);
        Assert.Contains("rank 0: AllGather Float32 [16]", job.Output);
        Assert.Contains("rank 1: AllGather Float32 [17]", job.Output);
    }

    [Fact]
    public void AProgramExpectingMpiThatWasNotStartedByMpirunSaysSo()
    {
        var job = Run("dotnet", [Lasp2Dll, "comm-selftest"]);
        Assert.NotEqual(0, job.ExitCode);
        Assert.Contains("was not started by mpirun", job.Output);
    }

    [Fact]
    public void AMissingMpiLibrarySaysWhatToInstall()
    {
        var error = Assert.Throws<DllNotFoundException>(() => MpiNative.Load(["libmpi-that-does-not-exist.so.99"]));
        Assert.Contains("install -y openmpi-bin", error.Message);
    }

    [Fact]
    public void LaunchAddsRootOversubscribeTimeoutAndTermFlagsAndRunsThisLasp2()
    {
        var many = Run("dotnet", [Lasp2Dll, "launch", "-n", $"{Environment.ProcessorCount + 1}", "--timeout", "7", "--dry-run", "--", "verify"]);
        Assert.Equal(0, many.ExitCode);
        Assert.Contains("--oversubscribe", many.Output);
        Assert.Contains("--timeout 7", many.Output);
        Assert.Contains("-x TERM=dumb", many.Output);
        Assert.Contains($"{Lasp2Dll} verify", many.Output);
        Assert.Equal(Environment.IsPrivilegedProcess, many.Output.Contains("--allow-run-as-root"));
        var one = Run("dotnet", [Lasp2Dll, "launch", "-n", "1", "--dry-run", "--", "verify"]);
        Assert.DoesNotContain("--oversubscribe", one.Output);
        var nothing = Run("dotnet", [Lasp2Dll, "launch", "-n", "2"]);
        Assert.NotEqual(0, nothing.ExitCode);
        Assert.Contains("needs the lasp2 command", nothing.Output);
    }

    /// <summary>The checks the MPI ranks run hold in-process too (same definitions, both backends).</summary>
    [Fact]
    public void TheInProcessBackendPassesTheSameSelfTest()
    {
        var results = ProcessGroups.RunInProcess(3, CommSelfTest.Run, TimeSpan.FromSeconds(60), threadsPerRank: 1);
        Assert.All(results, r => Assert.True(r.Failures.Count == 0 && r.Checks > 200, string.Join("\n", r.Failures)));
        Assert.False(ProcessGroups.LaunchedByMpi, "the test host itself is not an MPI rank");
    }
}
