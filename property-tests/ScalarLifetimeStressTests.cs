using System.Diagnostics;
using System.Text.RegularExpressions;
using Xunit;

namespace Lasp2.PropertyTests;

/// <summary>
/// The native-object lifetime race, reproduced in a child process. A TorchSharp Scalar made implicitly from a C# number,
/// or a tensor no dispose scope holds, is unreachable once its handle is passed to native code; a collection on another
/// thread can then finalize (free) it while libtorch still reads it: "Expected false to be true" from
/// c10::Scalar::toDouble, a wrong value, or a segfault (exit code 139) in libtorch_cpu.so on a rank thread.
/// The window exists only in fully optimised code, which in this test host is hidden by tiered compilation (tier-0
/// code keeps locals alive to the end of the method). So the test starts `lasp2 scalar-stress` with tiered
/// compilation off and a forced-collection thread: the softmax methods at W = 8, concurrent masked fills and
/// AllGather-CP forwards on rank bodies that open no dispose scope, through the library's own code. With one call site
/// back on an implicit Scalar it fails (e.g. 80 of 80 fills); with rank bodies run outside a scope
/// (ProcessGroups.Rooted removed) the child dies in libtorch's unbind (exit code 139).
/// </summary>
public class ScalarLifetimeStressTests
{
    static readonly string Lasp2Dll = Path.Combine(AppContext.BaseDirectory, "lasp2.dll");

    /// <summary>A run that hangs is killed after this (a liveness bound, not a performance figure).</summary>
    static readonly TimeSpan Limit = TimeSpan.FromSeconds(180);

    [Fact]
    public async Task SoftmaxMethodsMaskedFillsAndUnscopedRanksSurviveForcedCollectionsInFullyOptimisedCode()
    {
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var argument in new[] { Lasp2Dll, "scalar-stress", "--repeats", "1", "--masked-fills", "40", "--unscoped-runs", "20" }) start.ArgumentList.Add(argument);
        start.Environment["TERM"] = "dumb";
        start.Environment["DOTNET_TieredCompilation"] = "0";                             // optimise every method on first call
        start.Environment["DOTNET_TC_QuickJitForLoops"] = "0";
        start.Environment["DOTNET_TieredPGO"] = "0";
        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        using var limit = new CancellationTokenSource(Limit);
        try
        {
            await process.WaitForExitAsync(limit.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"scalar-stress did not finish within {Limit}");
        }
        string text = await output + await error;
        Assert.True(process.ExitCode == 0, $"scalar-stress exited {process.ExitCode}:\n{text}");
        var summary = Regex.Match(text, @"(\d+) checks of .*, (\d+) masked fills and (\d+) unscoped AllGather-CP runs under forced collections: 0 failed");
        Assert.True(summary.Success, $"no summary line:\n{text}");
        Assert.True(int.Parse(summary.Groups[1].Value) > 0 && int.Parse(summary.Groups[2].Value) == 80 &&
                    int.Parse(summary.Groups[3].Value) == 20, text);
    }
}
