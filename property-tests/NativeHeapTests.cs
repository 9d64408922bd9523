using System.Diagnostics;
using Lasp2.Research;
using Lasp2.Research.Bench;
using Xunit;
using Xunit.Abstractions;

namespace Lasp2.PropertyTests;

/// <summary>
/// The allocator behaviour the library sets up (NativeHeap; the CLI's start-up settings) together with the kernel's
/// bounded temporaries: steady-state iterations reuse freed memory instead of faulting in O(N) fresh pages. Counted,
/// not timed: the process's minor page faults per iteration, as `lasp2 bench` records them.
/// </summary>
public class NativeHeapTests(ITestOutputHelper output)
{
    [Fact]
    public void TheLibraryTunesTheAllocatorWhenItLoads()
    {
        // The test host sets no MALLOC_* variables, so the settings must have been applied.
        Assert.Equal("tuned", NativeHeap.State);
    }

    /// <summary>
    /// The kernel at N = 64K (h = 2, d = 64: 32 MiB per [1,H,N,d] tensor), run by `lasp2 bench` as users run it (the CLI
    /// starts itself with the allocator's start-up settings): the process's minor page faults per steady-state
    /// iteration, median of 3, stay below a quarter of one such tensor's pages. With glibc's defaults
    /// (LASP2_NATIVE_HEAP=default) every iteration faults in several tensors' worth.
    /// </summary>
    [Fact]
    public async Task SteadyStateKernelIterationsDoNotFaultInFreshPages()
    {
        string directory = Path.Combine(Path.GetTempPath(), $"heap-{Guid.NewGuid():N}");
        string csv = Path.Combine(directory, "bench.csv");
        try
        {
            var start = new ProcessStartInfo("dotnet") { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
            foreach (var argument in new[] { Path.Combine(AppContext.BaseDirectory, "lasp2.dll"), "bench", "--methods", "chunked", "--seq", "64K",
                                             "--world", "1", "--heads", "2", "--dim", "64", "--threads", "1", "--iterations", "3",
                                             "--peak-size", "64", "--out", csv, "--charts", "none" })
                start.ArgumentList.Add(argument);
            start.Environment["TERM"] = "dumb";
            using var process = Process.Start(start)!;
            var stdout = process.StandardOutput.ReadToEndAsync();
            var stderr = process.StandardError.ReadToEndAsync();
            Assert.True(process.WaitForExit(TimeSpan.FromMinutes(10)), "lasp2 bench did not finish in 10 minutes");
            string log = await stderr + await stdout;
            Assert.True(process.ExitCode == 0, $"lasp2 bench exited with {process.ExitCode}: {log}");
            var row = Assert.Single(BenchCsv.Load(csv).Rows);
            double faults = BenchFrame.Number(row, "minor_faults_per_iteration");
            double tensorPages = 2.0 * 65536 * 64 * 4 / 4096;
            output.WriteLine($"minor faults per iteration at N=65536: {faults:0}; one [1,2,65536,64] tensor = {tensorPages:0} pages; native heap: {BenchFrame.Text(row, "native_heap")}");
            Assert.True(faults < tensorPages / 4,
                $"steady-state kernel iterations at N=65536 fault in {faults:0} pages per iteration (native heap: {BenchFrame.Text(row, "native_heap")}); " +
                $"one [1,2,65536,64] tensor is {tensorPages:0} pages, the bound is a quarter of that");
        }
        finally
        {
            if (Directory.Exists(directory)) Directory.Delete(directory, recursive: true);
        }
    }
}
