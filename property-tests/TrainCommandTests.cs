using System.Diagnostics;
using System.Globalization;
using Lasp2.Cli;
using Xunit;

namespace Lasp2.PropertyTests;

/// <summary>
/// `lasp2 train`: every bad option is refused with a message naming it; a run on the committed sample writes its
/// log, chart and checkpoint, keeps resident memory flat, resumes, and gives the same float64 losses as an
/// Open MPI job of the same shape. One class, so the processes run one after another.
/// </summary>
public class TrainCommandTests
{
    /// <summary>(arguments after `train`, parts the single error line must contain).</summary>
    public static TheoryData<string[], string[]> BadInputs => new()
    {
        { ["--pattern", "LLXN"], ["--pattern", "'X' at position 2"] },
        { ["--recurrence", "mamba"], ["--recurrence = 'mamba'", "basic, retention, scalar-gate, gla, delta, gated-delta"] },
        { ["--recurrence", "gla"], ["lasp2 does not run the gla recurrence", "all-scan, lasp2-affine"] },
        { ["--recurrence", "gla", "--method", "lasp2-affine"], ["lasp2-affine does not run packed documents", "SeparateDocuments = false"] },
        { ["--documents", "mixed"], ["--documents = 'mixed'", "separate, joined"] },
        { ["--feature-map", "relu"], ["--feature-map = 'relu'", "identity, elu, swish"] },
        { ["--method", "allgather-cp"], ["--method = 'allgather-cp'", "lasp2"] },
        { ["--softmax-method", "lasp2"], ["--softmax-method = 'lasp2'", "allgather-cp"] },
        { ["--layout", "striped"], ["--layout = 'striped'", "contiguous, zigzag"] },
        { ["--model-dim", "1"], ["--model-dim = 1", "must be >= 2"] },
        { ["--heads", "0"], ["--heads = 0", "must be >= 1"] },
        { ["--kv-heads", "0"], ["--kv-heads = 0", "must be >= 1"] },
        { ["--kv-heads", "3"], ["--kv-heads = 3", "must divide --heads = 4"] },
        { ["--mlp-dim", "0"], ["--mlp-dim = 0", "must be >= 1"] },
        { ["--vocab", "2"], ["--vocab = 2", "must be >= 3"] },
        { ["--sp", "0"], ["--sp = 0", "must be in [1, 1024]"] },
        { ["--dp", "2000"], ["--dp = 2000", "must be in [1, 1024]"] },
        { ["--seq", "0"], ["--seq = 0", "must be >= 1"] },
        { ["--dp", "2", "--batch", "3"], ["--batch = 3", "multiple of --dp = 2"] },
        { ["--steps", "0"], ["--steps = 0", "must be >= 1"] },
        { ["--lr", "0"], ["--lr = 0", "must be > 0"] },
        { ["--lr", "fast"], ["--lr = 'fast' is not a number", "must be > 0"] },
        { ["--warmup", "-1"], ["--warmup = -1", "must be >= 0"] },
        { ["--clip", "0"], ["--clip = 0", "must be > 0"] },
        { ["--dtype", "bf16"], ["--dtype = 'bf16'", "float32, float64"] },
        { ["--eval-every", "-1"], ["--eval-every = -1", "must be >= 0"] },
        { ["--eval-batches", "0"], ["--eval-batches = 0", "must be >= 1"] },
        { ["--backend", "nccl"], ["--backend = 'nccl'", "inproc, mpi"] },
        { ["--resume", "/nonexistent/checkpoint"], ["--resume = '/nonexistent/checkpoint'", "not a checkpoint folder"] },
        { ["--sp", "3", "--data", "SAMPLE"], ["--seq = 256", "not divisible by worldSize = 3"] },
        { ["--data", "/nonexistent/fortunes"], ["--data = '/nonexistent/fortunes'", "apt-get install fortunes"] },
        { ["--bogus", "1"], ["Unknown option", "bogus"] },
    };

    /// <summary>Every bad input is one line naming the option and its range, a non-zero exit, and nothing written.</summary>
    [Theory, MemberData(nameof(BadInputs))]
    public void BadInputIsOneLineNamingTheOption(string[] arguments, string[] expected)
    {
        var folder = Directory.CreateTempSubdirectory("lasp2-train-bad-").FullName;
        try
        {
            var output = new StringWriter();
            var console = Spectre.Console.AnsiConsole.Create(new Spectre.Console.AnsiConsoleSettings
                { Out = new Spectre.Console.AnsiConsoleOutput(output), Ansi = Spectre.Console.AnsiSupport.No });
            var errors = new StringWriter();
            string[] args = ["train", .. arguments.Select(a => a == "SAMPLE" ? Sample : a), "--out", Path.Combine(folder, "run")];
            int exit = Lasp2App.Run(args, console, errors);
            string all = errors.ToString() + output;
            Assert.True(exit != 0, $"exit 0 for {string.Join(' ', args)}:\n{all}");
            var lines = all.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            Assert.True(lines.Length == 1, $"expected one error line, got {lines.Length}:\n{all}");
            foreach (var part in expected) Assert.Contains(part, lines[0]);
            Assert.Empty(Directory.EnumerateFileSystemEntries(folder));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    /// <summary>A 120-step run: log, chart, checkpoint; resident memory after step 20 grows less than 5 %; --resume continues from its checkpoint with its windows.</summary>
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
            foreach (var file in new[] { "model.safetensors", "optimizer.safetensors", "config.json", "vocab.json", "data.json" })
                Assert.True(File.Exists(Path.Combine(folder, "first", "checkpoint", file)), file);

            // without --seq: the resumed run cuts the corpus into the checkpoint's windows, so step 120 sees the batch it would have seen
            string[] withoutSeq = [.. shape.Where((_, i) => shape[i] != "--seq" && (i == 0 || shape[i - 1] != "--seq"))];
            var resumed = Lasp2(["train", .. withoutSeq, "--sp", "1", "--steps", "125", "--resume", Path.Combine(folder, "first", "checkpoint"),
                                 "--out", Path.Combine(folder, "second")]);
            Assert.True(resumed.ExitCode == 0, resumed.Output);
            Assert.Contains("batch 1 x 32 tokens", resumed.Output);
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

    internal sealed record Job(int ExitCode, string Output);

    /// <summary>Runs the built `lasp2` as a child process (TERM=dumb), killed after 5 minutes; its exit code and output.</summary>
    internal static Job Lasp2(string[] arguments)
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
