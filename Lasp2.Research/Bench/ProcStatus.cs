using System.Runtime.InteropServices;

namespace Lasp2.Research.Bench;

/// <summary>
/// Resident-memory and CPU-time probes of the current process (Linux /proc and clock_gettime; elsewhere
/// the probes return 0 / NaN and the CSV says so). Peak memory is the kernel's high-water mark of the
/// resident set (VmHWM), which counts libtorch's native allocations once they are touched.
/// </summary>
public static partial class ProcStatus
{
    const string Status = "/proc/self/status";

    /// <summary>Current resident set in bytes (VmRSS), 0 where unavailable.</summary>
    public static long ResidentBytes() => Field("VmRSS:");

    /// <summary>Peak resident set since start or the last <see cref="ResetPeak"/> (VmHWM), 0 where unavailable.</summary>
    public static long PeakResidentBytes() => Field("VmHWM:");

    /// <summary>
    /// Resets the resident high-water mark to the current resident set (writes 5 to /proc/self/clear_refs).
    /// Returns false where the kernel does not allow it; the peak then covers the whole process life.
    /// </summary>
    public static bool ResetPeak()
    {
        try
        {
            File.WriteAllText("/proc/self/clear_refs", "5");
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    /// <summary>
    /// Returns the native heap's free memory to the kernel (glibc malloc_trim; no-op elsewhere), so the
    /// resident set before a case does not still hold what the previous case freed.
    /// </summary>
    public static void TrimNativeHeap()
    {
        if (OperatingSystem.IsLinux()) malloc_trim(0);
    }

    /// <summary>CPU time consumed by the calling OS thread, in seconds (NaN off Linux).</summary>
    public static double ThreadCpuSeconds()
    {
        if (!OperatingSystem.IsLinux()) return double.NaN;
        const int clockThreadCpuTimeId = 3;
        return clock_gettime(clockThreadCpuTimeId, out var ts) == 0 ? ts.Seconds + ts.Nanoseconds * 1e-9 : double.NaN;
    }

    /// <summary>CPU time in user and kernel mode and minor page faults, of a thread or a process.</summary>
    public readonly record struct Usage(double UserSeconds, double SystemSeconds, long MinorFaults)
    {
        public static Usage operator -(Usage a, Usage b) =>
            new(a.UserSeconds - b.UserSeconds, a.SystemSeconds - b.SystemSeconds, a.MinorFaults - b.MinorFaults);

        public double CpuSeconds => UserSeconds + SystemSeconds;
    }

    /// <summary>The calling OS thread's usage (getrusage RUSAGE_THREAD; NaN and 0 off Linux).</summary>
    public static Usage ThreadUsage() => GetUsage(who: 1);

    /// <summary>The whole process's usage, every thread (getrusage RUSAGE_SELF; NaN and 0 off Linux).</summary>
    public static Usage ProcessUsage() => GetUsage(who: 0);

    /// <summary>The 1-minute load average (/proc/loadavg; NaN where unavailable).</summary>
    public static double LoadAverage()
    {
        const string path = "/proc/loadavg";
        if (!File.Exists(path)) return double.NaN;
        var first = File.ReadAllText(path).Split(' ')[0];
        return double.TryParse(first, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var load) ? load : double.NaN;
    }

    static Usage GetUsage(int who)
    {
        if (!OperatingSystem.IsLinux() || getrusage(who, out var u) != 0) return new Usage(double.NaN, double.NaN, 0);
        return new Usage(u.UserSeconds + u.UserMicroseconds * 1e-6, u.SystemSeconds + u.SystemMicroseconds * 1e-6, u.MinorFaults);
    }

    /// <summary>Parses a "/proc" line such as "VmHWM:\t  123 kB" (tab, then space padding) to its number of KiB.</summary>
    public static long ParseKiB(string line)
    {
        var parts = line.Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries);
        return parts.Length >= 2 && long.TryParse(parts[1], out var kib) ? kib : 0;
    }

    static long Field(string name)
    {
        if (!File.Exists(Status)) return 0;
        var line = File.ReadLines(Status).FirstOrDefault(l => l.StartsWith(name, StringComparison.Ordinal));
        return line is null ? 0 : ParseKiB(line) * 1024;
    }

    [StructLayout(LayoutKind.Sequential)]
    struct TimeSpec
    {
        public long Seconds;
        public long Nanoseconds;
    }

    // struct rusage on 64-bit Linux: two timevals, then 14 longs of which minflt is the fifth.
    [StructLayout(LayoutKind.Sequential)]
    struct RUsage
    {
        public long UserSeconds, UserMicroseconds, SystemSeconds, SystemMicroseconds;
        public long MaxRss, SharedRss, DataRss, StackRss, MinorFaults, MajorFaults, Swaps, BlocksIn, BlocksOut,
                    MessagesSent, MessagesReceived, Signals, VoluntarySwitches, InvoluntarySwitches;
    }

    [LibraryImport("libc", EntryPoint = "getrusage")]
    private static partial int getrusage(int who, out RUsage usage);

    [LibraryImport("libc", EntryPoint = "malloc_trim")]
    private static partial int malloc_trim(nuint pad);

    [LibraryImport("libc", EntryPoint = "clock_gettime")]
    private static partial int clock_gettime(int clockId, out TimeSpec time);
}
