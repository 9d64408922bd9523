using System.Diagnostics;
using System.Globalization;
using Xunit;

namespace Lasp2.PropertyTests;

/// <summary>
/// `lasp2 train`: every bad option is refused with a message naming it; a run on the committed sample writes its
/// log, chart and checkpoint, keeps resident memory flat, resumes, and gives the same float64 losses as an
/// Open MPI job of the same shape. One class, so the processes run one after another.
/// </summary>
public class TrainCommandTests
{
    [Theory]
    [InlineData("--pattern", "LLXN")]
    [InlineData("--recurrence", "gla")]
    [InlineData("--feature-map", "relu")]
    [InlineData("--method", "allgather-cp")]
    [InlineData("--softmax-method", "lasp2")]
    [InlineData("--layout", "striped")]
    [InlineData("--model-dim", "1")]
    [InlineData("--heads", "0")]
    [InlineData("--kv-heads", "0")]
    [InlineData("--mlp-dim", "0")]
    [InlineData("--vocab", "2")]
    [InlineData("--sp", "0")]
    [InlineData("--dp", "0")]
    [InlineData("--seq", "0")]
    [InlineData("--batch", "3")]
    [InlineData("--steps", "0")]
    [InlineData("--lr", "0")]
    [InlineData("--warmup", "-1")]
    [InlineData("--clip", "0")]
    [InlineData("--dtype", "bf16")]
    [InlineData("--eval-every", "-1")]
    [InlineData("--eval-batches", "0")]
    [InlineData("--backend", "nccl")]
    [InlineData("--resume", "/nonexistent/checkpoint")]
    public void BadOptionsAreRefusedNamingTheOption(string option, string value)
    {
        var job = Lasp2(["train", "--dp", option == "--batch" ? "2" : "1", option, value]);
        Assert.NotEqual(0, job.ExitCode);
        Assert.Contains(option, job.Output);
    }

    /// <summary>A 120-step run: log, chart, checkpoint; resident memory after step 20 grows less than 5 %; --resume continues from its checkpoint.</summary>
    [Fact]
    public void ARunLogsChartsCheckpointsStaysFlatAndResumes()
    {
        var folder = Directory.CreateTempSubdirectory("lasp2-train-").FullName;
        try
        {
            string[] shape = ["--data", Sample, "--seq", "32", "--vocab", "256", "--model-dim", "16", "--mlp-dim", "32", "--eval-batches", "1"];
            var run = Lasp2(["train", .. shape, "--pattern", "LN", "--sp", "2", "--steps", "120", "--eval-every", "60", "--out", Path.Combine(folder, "first")]);
            Assert.True(run.ExitCode == 0, run.Output);
            var rows = Log(Path.Combine(folder, "first", "log.csv"));
            Assert.Equal(Enumerable.Range(0, 120).Select(s => (double)s), rows.Select(r => r[0]));
            Assert.True(rows.All(r => double.IsFinite(r[1])), "every loss is finite");
            double settled = rows[20][6], last = rows[^1][6];
            Assert.True(last < settled * 1.05, $"resident memory grew from {settled} MiB at step 20 to {last} MiB at step 120");
            Assert.True(File.Exists(Path.Combine(folder, "first", "loss.html")));
            foreach (var file in new[] { "model.safetensors", "optimizer.safetensors", "config.json", "vocab.json" })
                Assert.True(File.Exists(Path.Combine(folder, "first", "checkpoint", file)), file);

            var resumed = Lasp2(["train", .. shape, "--sp", "1", "--steps", "125", "--resume", Path.Combine(folder, "first", "checkpoint"),
                                 "--out", Path.Combine(folder, "second")]);
            Assert.True(resumed.ExitCode == 0, resumed.Output);
            Assert.Equal([120.0, 121, 122, 123, 124], Log(Path.Combine(folder, "second", "log.csv")).Select(r => r[0]));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    /// <summary>The same float64 run in-process and as a 4-process Open MPI job (sp 2 x dp 2): the same losses.</summary>
    [Fact]
    public void AnMpiJobTrainsLikeTheInProcessRun()
    {
        var folder = Directory.CreateTempSubdirectory("lasp2-train-mpi-").FullName;
        try
        {
            string[] run = ["train", "--data", Sample, "--seq", "32", "--vocab", "128", "--model-dim", "16", "--mlp-dim", "32", "--batch", "2",
                            "--sp", "2", "--dp", "2", "--steps", "3", "--dtype", "float64", "--eval-every", "0", "--eval-batches", "1"];
            var local = Lasp2([.. run, "--out", Path.Combine(folder, "inproc")]);
            Assert.True(local.ExitCode == 0, local.Output);
            var mpi = Lasp2(["launch", "-n", "4", "--timeout", "200", "--", .. run, "--backend", "mpi", "--out", Path.Combine(folder, "mpi")]);
            Assert.True(mpi.ExitCode == 0, mpi.Output);
            var (expected, actual) = (Log(Path.Combine(folder, "inproc", "log.csv")), Log(Path.Combine(folder, "mpi", "log.csv")));
            Assert.Equal(3, actual.Count);
            for (int s = 0; s < 3; s++)
                Assert.True(Math.Abs(actual[s][1] - expected[s][1]) <= 1e-10 * expected[s][1], $"step {s}: MPI {actual[s][1]:R} vs in-process {expected[s][1]:R}");
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    static readonly string Sample = Path.Combine(CheckpointTests.RepoRoot(), "data", "fortunes-sample.txt");

    /// <summary>The CSV log as numbers (an empty val_loss is NaN).</summary>
    static List<double[]> Log(string path) =>
        File.ReadLines(path).Skip(1).Select(line => line.Split(',')
            .Select(f => f.Length == 0 ? double.NaN : double.Parse(f, CultureInfo.InvariantCulture)).ToArray()).ToList();

    sealed record Job(int ExitCode, string Output);

    static Job Lasp2(string[] arguments)
    {
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "lasp2.dll"));
        foreach (var argument in arguments) start.ArgumentList.Add(argument);
        start.Environment["TERM"] = "dumb";
        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromMinutes(5)))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"lasp2 {string.Join(" ", arguments)} did not finish within 5 minutes");
        }
        process.WaitForExit();
        return new Job(process.ExitCode, output.Result + error.Result);
    }
}
