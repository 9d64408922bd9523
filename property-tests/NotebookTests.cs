using System.Diagnostics;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Xunit;
using Xunit.Abstractions;
using Xunit.Sdk;

namespace Lasp2.PropertyTests;

/// <summary>
/// Executes every notebook in notebooks/ headless with the real kernel users run (dotnet-repl, the local
/// tool in .config/dotnet-tools.json, which bundles FSharp.Core 10.0 like Jupyter's dotnet-interactive)
/// and fails on any cell error. Then checks the committed outputs are fresh: the re-executed notebook has
/// the same cells with the same sources, and each code cell the same outputs (same kinds, same MIME types,
/// same text once numbers and chart ids are masked and the padding of text tables is collapsed: timings and
/// last-digit rounding vary between runs and machines, tables, verdicts and messages must not). Every notebook must show at least one chart.
/// With LASP2_WRITE_NOTEBOOKS=1 (notebooks/run-all.sh) the re-executed notebooks replace the committed
/// ones instead of being compared with them.
/// </summary>
public class NotebookTests(ITestOutputHelper log)
{
    static readonly TimeSpan Timeout = TimeSpan.FromMinutes(6);   // a hang guard: 10-30 s each when idle, minutes under heavy load
    internal static readonly string NotebookDir = Path.Combine(RepoRoot(), "notebooks");

    public static TheoryData<string> Notebooks()
    {
        var names = Directory.GetFiles(NotebookDir, "??-*.ipynb").Select(Path.GetFileName).Order().ToList();
        Assert.NotEmpty(names);
        var data = new TheoryData<string>();
        foreach (var name in names) data.Add(name!);
        return data;
    }

    [Theory]
    [MemberData(nameof(Notebooks))]
    public void NotebookRunsWithoutErrorsAndCommittedOutputsAreFresh(string name)
    {
        var committedPath = Path.Combine(NotebookDir, name);
        var clock = Stopwatch.StartNew();
        var fresh = Execute(committedPath);
        log.WriteLine($"{name}: executed in {clock.Elapsed.TotalSeconds:F1} s");

        var errors = Outputs(fresh).Where(o => (string?)o["output_type"] == "error")
                                   .Select(o => $"{o["ename"]}: {o["evalue"]}").ToList();
        Assert.True(errors.Count == 0, $"{name}: {errors.Count} cell error(s):\n{string.Join("\n", errors)}");
        Assert.True(ChartCount(fresh) > 0, $"{name}: no Plotly chart in the outputs.");

        var committed = JsonNode.Parse(File.ReadAllText(committedPath))!;
        if (Environment.GetEnvironmentVariable("LASP2_WRITE_NOTEBOOKS") == "1")
        {
            File.WriteAllText(committedPath, Serialize(WithCellIds(fresh, committed)));
            return;
        }
        AssertCellIds(name, committed);
        AssertSameCells(name, committed, fresh);
    }

    /// <summary>
    /// Jupyter's own client (nbconvert/nbclient) runs a notebook with the repository's kernelspec
    /// (notebooks/jupyter/kernels/.net-csharp): no cell error, nothing on stderr (a compiler warning would
    /// show as a red box), the charts drawn as Plotly outputs, and plotly.js put on the page by the first cell.
    /// </summary>
    [Fact]
    public void NotebookRunsUnderJupyter()
    {
        const string name = "02-lasp2-step-by-step.ipynb";
        var outputPath = Path.Combine(Path.GetTempPath(), $"lasp2-jupyter-{Guid.NewGuid():N}.ipynb");
        try
        {
            var clock = Stopwatch.StartNew();
            var run = RunInNotebookDir("jupyter", ["nbconvert", "--to", "notebook", "--execute", "--ExecutePreprocessor.timeout=300",
                                                   Path.Combine(NotebookDir, name), "--output", outputPath],
                                       ("JUPYTER_PATH", Path.Combine(NotebookDir, "jupyter")));   // the repo's kernelspec, nothing global
            log.WriteLine($"{name}: executed by jupyter nbconvert in {clock.Elapsed.TotalSeconds:F1} s");
            Assert.True(run.ExitCode == 0 && File.Exists(outputPath),
                $"{name}: jupyter nbconvert exited with {run.ExitCode} (a cell failed or the kernel did not start):\n{run.Stderr}\n{run.Stdout}");
            Assert.DoesNotContain("MissingIDFieldWarning", run.Stderr);
            var executed = JsonNode.Parse(File.ReadAllText(outputPath))!;
            var outputs = Outputs(executed).ToList();
            Assert.DoesNotContain(outputs, o => (string?)o["output_type"] == "error");
            var stderrOutputs = outputs.Where(o => (string?)o["name"] == "stderr").Select(o => Text(o["text"])).ToList();
            Assert.True(stderrOutputs.Count == 0, $"{name}: output on stderr under Jupyter:\n{string.Join("\n", stderrOutputs)}");
            Assert.True(ChartCount(executed) >= 2, $"{name}: {ChartCount(executed)} Plotly chart(s) in the outputs, expected the notebook's 2.");
            var firstCell = string.Concat(executed["cells"]!.AsArray().First(c => (string?)c!["cell_type"] == "code")!["outputs"]!.AsArray()
                                                   .Select(o => Text(o!["data"]?["text/html"])));
            Assert.Contains("window.lasp2PlotlyReady", firstCell);
        }
        finally
        {
            File.Delete(outputPath);
        }
    }

    /// <summary>Runs the notebook with `dotnet repl` in notebooks/ (the kernel's working directory) and returns the executed copy.</summary>
    static JsonNode Execute(string notebookPath)
    {
        var outputPath = Path.Combine(Path.GetTempPath(), $"lasp2-{Guid.NewGuid():N}.ipynb");
        try
        {
            var run = RunInNotebookDir("dotnet", ["repl", "--run", notebookPath, "--exit-after-run", "--output-path", outputPath]);
            // Exit code 2 means a cell failed: the output notebook holds the error, reported by the caller.
            if (!File.Exists(outputPath))
                throw new XunitException($"{notebookPath}: dotnet repl exited with {run.ExitCode} and wrote no notebook.\n{run.Stdout}\n{run.Stderr}");
            return Normalized(JsonNode.Parse(File.ReadAllText(outputPath))!);
        }
        finally
        {
            File.Delete(outputPath);
        }
    }

    /// <summary>Runs a program in notebooks/ (stdin closed, TERM=dumb) and returns its exit code and output; fails after <see cref="Timeout"/>.</summary>
    static (int ExitCode, string Stdout, string Stderr) RunInNotebookDir(string program, string[] arguments, params (string Name, string Value)[] environment)
    {
        var start = new ProcessStartInfo(program)
        {
            WorkingDirectory = NotebookDir, UseShellExecute = false,
            RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true,
        };
        foreach (var argument in arguments) start.ArgumentList.Add(argument);
        start.Environment["TERM"] = "dumb";
        foreach (var (variable, value) in environment) start.Environment[variable] = value;
        Process process;
        try
        {
            process = Process.Start(start)!;
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new XunitException($"`{program}` not found ({e.Message}); ./test.sh installs what the notebook tests need.");
        }
        using (process)
        {
            process.StandardInput.Close();
            var stdout = process.StandardOutput.ReadToEndAsync();
            var stderr = process.StandardError.ReadToEndAsync();
            if (!process.WaitForExit(Timeout))
            {
                process.Kill(entireProcessTree: true);
                throw new XunitException($"{program} {string.Join(' ', arguments)}: did not finish within {Timeout.TotalMinutes} min.");
            }
            return (process.ExitCode, stdout.Result, stderr.Result);
        }
    }

    /// <summary>Drops dotnet-repl's per-cell timestamps, which would make every run differ from the last.</summary>
    static JsonNode Normalized(JsonNode notebook)
    {
        foreach (var cell in notebook["cells"]!.AsArray())
        {
            var metadata = cell!["metadata"]!.AsObject();
            foreach (var key in metadata.Select(p => p.Key).Where(k => k.StartsWith("dotnet_repl_", StringComparison.Ordinal)).ToList())
                metadata.Remove(key);
        }
        return notebook;
    }

    /// <summary>nbformat 4.5 requires a unique id per cell (letters, digits, '-', '_'; 1-64 characters).</summary>
    static void AssertCellIds(string name, JsonNode notebook)
    {
        var ids = notebook["cells"]!.AsArray().Select(c => (string?)c!["id"]).ToList();
        for (int i = 0; i < ids.Count; i++)
            Assert.True(ids[i] is { } id && Regex.IsMatch(id, "^[a-zA-Z0-9_-]{1,64}$"),
                $"{name}, cell {i + 1}: no valid cell id (nbformat 4.5); run notebooks/run-all.sh.");
        Assert.True(ids.Distinct().Count() == ids.Count, $"{name}: cell ids are not unique.");
    }

    /// <summary>The committed cells' ids on the executed copy (same cells in the same order), a new one for a cell that has none.</summary>
    static JsonNode WithCellIds(JsonNode fresh, JsonNode committed)
    {
        var (before, after) = (committed["cells"]!.AsArray(), fresh["cells"]!.AsArray());
        fresh["nbformat"] = 4;
        fresh["nbformat_minor"] = 5;
        for (int i = 0; i < after.Count; i++)
        {
            var id = before.Count == after.Count ? (string?)before[i]!["id"] : null;
            var cell = after[i]!.AsObject();
            cell.Remove("id");
            cell.Insert(1, "id", id ?? Guid.NewGuid().ToString("N")[..8]);
        }
        return fresh;
    }

    static void AssertSameCells(string name, JsonNode committed, JsonNode fresh)
    {
        var (expected, actual) = (committed["cells"]!.AsArray(), fresh["cells"]!.AsArray());
        Assert.True(expected.Count == actual.Count, $"{name}: {expected.Count} committed cells, {actual.Count} after execution.");
        for (int i = 0; i < expected.Count; i++)
        {
            string where = $"{name}, cell {i + 1}";
            Assert.True(Text(expected[i]!["source"]) == Text(actual[i]!["source"]), $"{where}: source differs from the executed copy.");
            if ((string?)expected[i]!["cell_type"] != "code") continue;
            var (before, after) = (expected[i]!["outputs"]!.AsArray(), actual[i]!["outputs"]!.AsArray());
            Assert.True(before.Count == after.Count,
                $"{where}: {before.Count} committed outputs, {after.Count} on re-execution: the outputs are stale; run notebooks/run-all.sh.");
            for (int j = 0; j < before.Count; j++)
                Assert.True(Fingerprint(before[j]!) == Fingerprint(after[j]!),
                    $"{where}, output {j + 1}: committed output differs from re-execution (numbers masked): stale; run notebooks/run-all.sh.\n"
                    + $"committed: {Shorten(Fingerprint(before[j]!))}\nexecuted:  {Shorten(Fingerprint(after[j]!))}");
        }
    }

    /// <summary>Output kind, MIME types and text with numbers and chart ids masked.</summary>
    static string Fingerprint(JsonNode output)
    {
        var kind = (string?)output["output_type"];
        var body = output["data"] is JsonObject data
            ? string.Join("\n", data.OrderBy(p => p.Key).Select(p => $"[{p.Key}] {Text(p.Value)}"))
            : $"[{(string?)output["name"]}] {Text(output["text"])}";
        body = Regex.Replace(body, "lasp2[-_][0-9a-f]{16}", "lasp2-id");
        body = Regex.Replace(body, @"\d+(\.\d+)?([eE][-+]?\d+)?", "#");
        // Text tables (Spectre, CommReport) pad columns to their widest number, and a table's title wraps at
        // the table's width: widths and wrap points follow the numbers, so all white space is dropped.
        body = Regex.Replace(body, @"\s+", "");
        body = Regex.Replace(body, "[─━═-]+", "─");
        return $"{kind} {body}";
    }

    static IEnumerable<JsonNode> Outputs(JsonNode notebook) =>
        notebook["cells"]!.AsArray().Where(c => c!["outputs"] is JsonArray).SelectMany(c => c!["outputs"]!.AsArray())!;

    static int ChartCount(JsonNode notebook) =>
        Outputs(notebook).Count(o => o["data"]?["text/html"] is { } html && Text(html).Contains("Plotly.newPlot(", StringComparison.Ordinal));

    /// <summary>Notebook text fields are a string or an array of lines.</summary>
    static string Text(JsonNode? node) => node switch
    {
        null => "",
        JsonArray lines => string.Concat(lines.Select(l => (string?)l)),
        _ => (string?)node ?? "",
    };

    static string Shorten(string text) => text.Length <= 400 ? text : text[..400] + " ...";

    static string Serialize(JsonNode notebook) =>
        notebook.ToJsonString(new JsonSerializerOptions
        {
            WriteIndented = true, IndentSize = 1, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        }) + "\n";

    static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Lasp2.sln"))) return dir.FullName;
        throw new InvalidOperationException($"Lasp2.sln not found above {AppContext.BaseDirectory}.");
    }
}
