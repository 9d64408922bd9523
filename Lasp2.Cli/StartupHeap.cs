using System.Diagnostics;
using Lasp2.Research;
using Lasp2.Research.Comm;

namespace Lasp2.Cli;

/// <summary>
/// glibc reads its allocator variables only at process start, and the run-time settings the library applies
/// (NativeHeap) cannot move a thread that already owns a secondary arena, where a tensor above 64 MiB is mmap-ed and
/// faulted in afresh every iteration. So `lasp2` starts itself once more with NativeHeap.StartupVariables set (one
/// arena for every thread, no mmap), passing its arguments, standard streams and exit code through. MPI ranks do not
/// start again (`lasp2 launch` passes the variables on, and a rank works on its main thread anyway);
/// LASP2_NATIVE_HEAP=default or a user's own MALLOC_* settings keep the first process.
/// </summary>
static class StartupHeap
{
    /// <summary>The exit code of the restarted process, or null when this process should run the command itself.</summary>
    public static int? RunRestarted(string[] args)
    {
        // An MPI rank runs its work on the process's main thread, whose main arena the run-time settings already cover.
        if (!NativeHeap.ShouldRestartWithStartupVariables || ProcessGroups.LaunchedByMpi || Environment.ProcessPath is not { } process)
            return null;
        var start = new ProcessStartInfo(process) { UseShellExecute = false };
        // Run through `dotnet lasp2.dll`: the host needs the assembly again; the apphost is the program itself.
        if (Path.GetFileNameWithoutExtension(process) == "dotnet") start.ArgumentList.Add(typeof(StartupHeap).Assembly.Location);
        foreach (var argument in args) start.ArgumentList.Add(argument);
        foreach (var (name, value) in NativeHeap.StartupVariables) start.Environment[name] = value;
        using var child = Process.Start(start)!;
        child.WaitForExit();
        return child.ExitCode;
    }
}
