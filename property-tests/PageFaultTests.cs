using Lasp2.Research.Bench;
using Xunit;
using static Lasp2.Research.Bench.BenchFrame;

namespace Lasp2.PropertyTests;

/// <summary>
/// Steady-state iterations of the chunked kernel (forward + hand-written backward, causal, fp32) must not fault in
/// fresh pages in proportion to N: the large tensors of one iteration come back from TensorPool's mappings in the next,
/// and the rest from glibc's tuned heap (NativeHeap, StartupHeap), instead of being returned to the kernel and
/// zero-filled again. Counted in minor page faults (getrusage), which machine load does not change; no timing. Runs
/// `lasp2 bench` as a child, as a user starts it, because glibc takes its allocator settings at process start: the
/// median faults per iteration after five warm-up iterations at N and 4N must stay below a quarter of the pages of one
/// [B,H,4N,d] tensor, at both lengths within that quarter of each other. (The large tensors are reused from the second
/// iteration; glibc's heap touches the pages of its segment temporaries for the first time over the first few, and the
/// .NET collector releases and re-touches a few MiB now and then: up to ~4,000 faults in single iterations, and with
/// three warm-ups a median of 1,307 at 64K against 120 at 16K once in a clean-clone run.) With glibc's defaults (LASP2_NATIVE_HEAP=default: no pool, every tensor above
/// 32 MiB mmap-ed and unmapped on free) each iteration faults in several such tensors again.
/// </summary>
public class PageFaultTests
{
    const int Heads = 2, Dim = 64, Short = 16 * 1024, Long = 4 * Short;

    /// <summary>Pages of one [1,H,N,d] fp32 tensor.</summary>
    static double TensorPages(long n) => (double)Heads * n * Dim * 4 / Environment.SystemPageSize;

    [Fact]
    public void SteadyStateKernelIterationsDoNotFaultInPagesProportionalToN()
    {
        var rows = MeasuredRows();
        var faults = rows.ToDictionary(r => (long)Number(r, "seq_len"), r => Number(r, "minor_faults_per_iteration"));
        double atShort = faults[Short], atLong = faults[Long], quarterTensor = TensorPages(Long) / 4;
        string report = $"median minor faults per iteration: N = {Short}: {atShort}, N = {Long}: {atLong}; " +
                        $"one [1,{Heads},{Long},{Dim}] fp32 tensor is {TensorPages(Long)} pages";
        Assert.True(atLong < quarterTensor, report);
        Assert.True(atLong < atShort + quarterTensor, report);
        Assert.All(rows, r => Assert.StartsWith("tuned", Text(r, "native_heap")));       // the allocator the user gets
    }

    /// <summary>`lasp2 bench` of the kernel at the two lengths (5 warm-up, 5 measured iterations): its two rows.</summary>
    static List<Microsoft.Data.Analysis.DataFrameRow> MeasuredRows()
    {
        string csv = Path.Combine(Path.GetTempPath(), $"lasp2-faults-{Guid.NewGuid():N}.csv");
        try
        {
            var job = TrainCommandTests.Lasp2(["bench", "--methods", "chunked", "--world", "1", "--seq", $"{Short},{Long}",
                                               "--heads", $"{Heads}", "--dim", $"{Dim}", "--threads", "1", "--warmup", "5",
                                               "--iterations", "5", "--max-seconds", "60", "--peak-size", "64", "--out", csv,
                                               "--charts", "none"]);
            Assert.True(job.ExitCode == 0, $"lasp2 bench exited {job.ExitCode}:\n{job.Output}");
            var rows = Ok(BenchCsv.Load(csv)).ToList();
            Assert.True(rows.Count == 2, $"expected 2 measured rows, got {rows.Count}:\n{job.Output}");
            return rows;
        }
        finally
        {
            File.Delete(csv);
        }
    }
}
