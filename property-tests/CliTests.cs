using Lasp2.Cli;
using Lasp2.Reference;
using Lasp2.Research.Verification;
using Spectre.Console;
using Xunit;
using static TorchSharp.torch;

namespace Lasp2.PropertyTests;

/// <summary>
/// The command line in-process (<see cref="Lasp2App.Run"/> with captured output): every command's help works,
/// and every bad input is one line naming the option and its valid range, a non-zero exit, no stack trace and
/// no file written.
/// </summary>
public class CliTests
{
    sealed record Result(int Exit, string Output, string Errors);

    static Result Run(params string[] args)
    {
        var output = new StringWriter();
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(output), Ansi = AnsiSupport.No, ColorSystem = ColorSystemSupport.NoColors,
            Interactive = InteractionSupport.No,
        });
        console.Profile.Width = 250;                                                     // one option per help line
        var errors = new StringWriter();
        int exit = Lasp2App.Run(args, console, errors);
        return new Result(exit, output.ToString(), errors.ToString());
    }

    public static TheoryData<string> CommandNames => new(Lasp2App.Commands.Select(c => c.Name));

    [Theory, MemberData(nameof(CommandNames))]
    public void HelpOfEveryCommandListsEveryOption(string command)
    {
        var result = Run(command, "--help");
        Assert.True(result.Exit == 0, $"{command} --help exited {result.Exit}: {result.Errors}{result.Output}");
        var entry = Lasp2App.Commands.Single(c => c.Name == command);
        Assert.NotEmpty(entry.Options());
        foreach (var (name, _) in entry.Options())
            Assert.Contains(name, result.Output);
    }

    /// <summary>(arguments, parts the single error line must contain: the option and its valid range or values).</summary>
    public static TheoryData<string[], string[]> BadInputs => new()
    {
        { ["verify", "--dim", "0"], ["--dim = 0", "must be >= 1"] },
        { ["verify", "--seq", "-1"], ["--seq = -1", "must be >= 1"] },
        { ["verify", "--seq", "0"], ["--seq = 0", "must be >= 1"] },
        { ["verify", "--heads", "0"], ["--heads = 0", "must be >= 1"] },
        { ["verify", "--batch", "0"], ["--batch = 0", "must be >= 1"] },
        { ["verify", "--kv-heads", "0"], ["--kv-heads = 0", "must be >= 1"] },
        { ["verify", "--kv-heads", "3"], ["--kv-heads = 3", "must divide --heads"] },
        { ["verify", "--block", "0"], ["--block = 0", "must be >= 1"] },
        { ["verify", "--decay", "0"], ["--decay = 0", "must be in (0, 1]"] },
        { ["verify", "--decay", "1.5"], ["--decay = 1.5", "must be in (0, 1]"] },
        { ["verify", "--decay", "abc"], ["--decay = 'abc' is not a number", "must be in (0, 1]"] },
        { ["verify", "--dim", "x"], ["--dim = 'x' is not an integer", "must be >= 1"] },
        { ["verify", "--seq", "99999999999"], ["--seq = '99999999999' is not an integer", "must be >= 1"] },
        { ["verify", "--world", "1,2,x"], ["--world", "integers >= 1", "'x'"] },
        { ["verify", "--dim"], ["--dim needs a value", "must be >= 1"] },
        { ["verify", "--dim", "--seq", "16"], ["--dim needs a value", "must be >= 1"] },
        { ["verify", "--comm=yes"], ["--comm is a flag", "no value"] },
        { ["verify", "--world", "2000"], ["--world = 2000", "must be in [1, 1024]"] },
        { ["verify", "--world", "3"], ["--seq = 112", "not divisible by worldSize = 3"] },
        { ["verify", "--seq", "20", "--world", "4", "--layout", "zigzag"], ["--seq = 20", "not divisible by 2 * worldSize = 8"] },
        { ["verify", "--layout", "bogus"], ["--layout = 'bogus'", "contiguous, zigzag"] },
        { ["verify", "--layout", "contiguous,bogus"], ["--layout = 'bogus'", "contiguous, zigzag"] },
        { ["verify", "--recurrence", "mamba"], ["--recurrence = 'mamba'", "scalar-gate", "gated-delta", "all"] },
        { ["verify", "--recurrence", "gla", "--mask", "none"], ["--mask = none", "causal"] },
        { ["verify", "--recurrence", "gla", "--decay", "0.9"], ["--decay does not apply to --recurrence"] },
        { ["verify", "--recurrence", "gla", "--kv-heads", "2"], ["--kv-heads does not apply to --recurrence"] },
        { ["verify", "--recurrence", "gla", "--docs", "7,9"], ["--docs does not apply to --recurrence"] },
        { ["verify", "--docs", "7,0,5"], ["--docs", "lengths >= 1", "'0'"] },
        { ["verify", "--docs", "7,x"], ["--docs", "lengths >= 1", "'x'"] },
        { ["verify", "--docs", "7,100,1,20", "--seq", "112"], ["--docs lengths sum to 128", "--seq = 112"] },
        { ["verify", "--docs", "3,4", "--world", "2"], ["--seq = 7", "not divisible by worldSize = 2"] },
        { ["verify", "--docs", "equal:5"], ["--docs equal:K", "dividing N = 112"] },
        { ["verify", "--mask", "x"], ["--mask = 'x'", "causal, none"] },
        { ["verify", "--dtype", "x"], ["--dtype = 'x'", "float64, float32"] },
        { ["verify", "--backend", "x"], ["--backend = 'x'", "inproc, mpi"] },
        { ["verify", "--method", "nope"], ["--method = 'nope'", "lasp2", "all"] },
        { ["verify", "--method", "lasp2", "--wrold", "3"], ["Unknown option", "wrold"] },
        { ["bench", "--layout", "bogus"], ["Unknown option", "layout"] },
        { ["bench", "--iterations", "0"], ["--iterations = 0", "must be >= 1"] },
        { ["bench", "--docs", "equal:3", "--seq", "1K"], ["--docs equal:K", "dividing N = 1024"] },
        { ["bench", "--warmup", "-1"], ["--warmup = -1", "must be >= 0"] },
        { ["bench", "--max-seconds", "0"], ["--max-seconds = 0", "must be > 0"] },
        { ["bench", "--memory-gb", "-2"], ["--memory-gb = -2", "must be > 0"] },
        { ["bench", "--timeout", "0"], ["--timeout = 0", "must be > 0"] },
        { ["bench", "--peak-size", "10"], ["--peak-size = 10", "must be >= 64"] },
        { ["bench", "--threads", "0"], ["--threads = 0", "must be >= 1"] },
        { ["bench", "--decay", "2"], ["--decay = 2", "must be in (0, 1]"] },
        { ["bench", "--kv-heads", "3"], ["--kv-heads = 3", "must divide --heads = 2"] },
        { ["bench", "--seq", "0"], ["--seq", "integers >= 1", "'0'"] },
        { ["bench", "--world", "1,2,x"], ["--world", "integers >= 1", "'x'"] },
        { ["bench", "--mask", "x"], ["--mask", "causal, none or both"] },
        { ["bench", "--dtype", "x"], ["--dtype", "float32 or float64"] },
        { ["bench", "--methods", "lasp2,nope"], ["--methods = 'nope'", "lasp2"] },
        { ["bench", "--backend", "x"], ["--backend = 'x'", "inproc, mpi"] },
        { ["simulate", "--gpus", "200"], ["--gpus = 200", "must be in [1, 128]"] },
        { ["simulate", "--heads", "0"], ["--heads = 0", "must be >= 1"] },
        { ["simulate", "--kv-heads", "3"], ["--kv-heads = 3", "must divide --heads = 16"] },
        { ["simulate", "--gather-chunks", "0"], ["--gather-chunks = 0", "must be in [1, 1024]"] },
        { ["simulate", "--method", "lasp2,nope"], ["--method = 'nope'", "lasp2"] },
        { ["simulate", "--model", "x"], ["--model = 'x'", "linear-llama3-1b"] },
        { ["simulate", "--topology", "nope"], ["--topology = 'nope'", "a100-dgx"] },
        { ["simulate", "--layout", "x"], ["--layout = 'x'", "contiguous, zigzag"] },
        { ["simulate", "--seq", "0"], ["--seq", "integers >= 1", "'0'"] },
        { ["simulate-check", "--gbps", "1"], ["--alpha-us is required", "> 0"] },
        { ["simulate-check", "--alpha-us", "0", "--gbps", "1"], ["--alpha-us = 0", "must be > 0"] },
        { ["simulate-check", "--alpha-us", "3", "--gbps", "1", "--bench", "nope.csv"], ["--bench = 'nope.csv'", "does not exist"] },
        { ["simulate-paper", "--data", "nope"], ["--data = 'nope'", "not a folder"] },
        { ["simulate-paper", "--frontier-topologies", "a100-dgx,x"], ["--frontier-topologies = 'x'", "a100-dgx"] },
        { ["time-layer", "--repeats", "0"], ["--repeats = 0", "must be >= 1"] },
        { ["time-layer", "--world", "0"], ["--world = 0", "must be in [1, 1024]"] },
        { ["time-layer", "--method", "x"], ["--method = 'x'", "lasp2"] },
        { ["time-layer", "--seq", "100", "--world", "3"], ["--seq = 100", "divisible by --world = 3"] },
        { ["time-layer", "--kernel-threads", "0"], ["--kernel-threads = 0", "must be >= 1"] },
        { ["launch", "-n", "0", "--", "verify"], ["--ranks = 0", "must be >= 1"] },
        { ["launch", "--timeout", "0", "--", "verify"], ["--timeout = 0", "must be >= 1"] },
        { ["comm-selftest", "--in-process", "0"], ["--in-process = 0", "must be in [1, 1024]"] },
        { ["comm-selftest", "--in-process", "2", "--fail-rank", "2"], ["--fail-rank = 2", "must be in [0, 1]"] },
        { ["comm-selftest", "--timeout", "0"], ["--timeout = 0", "must be > 0"] },
        { ["comm-bench", "--iterations", "0"], ["--iterations = 0", "must be >= 1"] },
        { ["frobnicate"], ["Unknown command", "verify, bench"] },
    };

    [Theory, MemberData(nameof(BadInputs))]
    public void BadInputIsOneLineNamingTheOptionAndItsRange(string[] arguments, string[] expected)
    {
        string directory = Path.Combine(Path.GetTempPath(), $"cli-{Guid.NewGuid():N}");
        Directory.CreateDirectory(directory);
        try
        {
            // Where a run would write, it writes into the empty directory: it must stay empty.
            string[] writes = arguments[0] switch
            {
                "verify" => ["--dump", Path.Combine(directory, "dump")],
                "bench" => ["--out", Path.Combine(directory, "bench.csv")],
                "simulate" or "simulate-check" => ["--out", Path.Combine(directory, "out.csv")],
                "simulate-paper" when !arguments.Contains("--data") => ["--data", directory],
                _ => [],
            };
            int split = Array.IndexOf(arguments, "--");
            string[] args = split < 0 ? [.. arguments, .. writes] : [.. arguments[..split], .. writes, .. arguments[split..]];
            var result = Run(args);
            string all = result.Errors + result.Output;
            Assert.True(result.Exit != 0, $"exit 0 for {string.Join(' ', args)}:\n{all}");
            var lines = all.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            Assert.True(lines.Length == 1, $"expected one error line, got {lines.Length}:\n{all}");
            Assert.StartsWith("error: ", lines[0]);
            foreach (var part in expected) Assert.Contains(part, lines[0]);
            Assert.DoesNotContain("   at ", all);
            Assert.Empty(Directory.EnumerateFileSystemEntries(directory));
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Fact]
    public void AnUnexpectedFailureIsOneLineWithoutAStackTrace()
    {
        // --report reads a CSV that is not one: the failure comes from inside the command.
        string csv = Path.Combine(Path.GetTempPath(), $"cli-{Guid.NewGuid():N}.csv");
        File.WriteAllText(csv, "not,a\nbench,csv,file\n");
        try
        {
            var result = Run("bench", "--report", "--out", csv, "--charts", "none");
            Assert.NotEqual(0, result.Exit);
            Assert.Single(result.Errors.Split('\n', StringSplitOptions.RemoveEmptyEntries));
            Assert.DoesNotContain("   at ", result.Errors + result.Output);
        }
        finally
        {
            File.Delete(csv);
        }
    }

    [Fact]
    public void ACheckThatComparedNothingFails()
    {
        var empty = CheckResult.Of("empty", "O", zeros(0, dtype: float64), zeros(0, dtype: float64), Compare.Float64Tolerance);
        Assert.Equal(0, empty.Elements);
        Assert.False(empty.Passed);
        Assert.False(CheckResult.AllPassed([empty]));
        Assert.False(CheckResult.AllPassed([]));
        var one = CheckResult.Of("one", "O", ones(3, dtype: float64), ones(3, dtype: float64), Compare.Float64Tolerance);
        Assert.True(one.Passed);
        Assert.False(CheckResult.AllPassed([one, empty]));
    }

    [Fact]
    public void GoodInputStillRunsAndArgumentsAfterTheSeparatorPassThrough()
    {
        var verify = Run("verify", "--method", "lasp2", "--world", "2", "--seq", "16", "--mask", "causal", "--layout", "zigzag", "--decay", "0.9");
        Assert.True(verify.Exit == 0, verify.Errors + verify.Output);
        var launch = Run("launch", "-n", "2", "--dry-run", "--", "verify", "--wrold", "3");   // the inner command parses its own options
        Assert.True(launch.Exit == 0, launch.Errors + launch.Output);
    }

    /// <summary>A supported pair runs, passes and dumps its gates; a recurrence the method does not run leaves nothing compared, which fails.</summary>
    [Fact]
    public void RecurrenceSweepRunsSupportedPairsAndFailsWhenNothingRan()
    {
        string dump = Path.Combine(Path.GetTempPath(), $"cli-gates-{Guid.NewGuid():N}");
        try
        {
            var delta = Run("verify", "--recurrence", "delta,gla", "--method", "all-scan", "--world", "3", "--layout", "contiguous,zigzag",
                            "--heads", "2", "--dump", dump);
            Assert.True(delta.Exit == 0, delta.Errors + delta.Output);
            // --dump writes the gates and beta beside q, k, v, with their gradients and the reference's
            foreach (var file in new[] { "all-scan_delta_W3_zigzag_float64_N102/beta.npy", "all-scan_delta_W3_zigzag_float64_N102/ref_dbeta.npy",
                                         "all-scan_gla_W3_contiguous_float64_N102/g.npy", "all-scan_gla_W3_contiguous_float64_N102/dg.npy" })
                Assert.True(File.Exists(Path.Combine(dump, file)), $"{file} missing under {dump}");
        }
        finally
        {
            if (Directory.Exists(dump)) Directory.Delete(dump, recursive: true);
        }
        var refused = Run("verify", "--recurrence", "gla", "--method", "lasp2", "--world", "2");
        Assert.True(refused.Exit != 0, refused.Errors + refused.Output);
    }
}
