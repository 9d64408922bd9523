using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Lasp2.Research;

/// <summary>
/// Tunes glibc's allocator (which libtorch's CPU tensors come from) when this library is loaded, so the CLI,
/// a notebook and every MPI rank get the same behaviour without environment variables. By default glibc
/// serves large blocks with mmap and unmaps them on free, and trims the heap top after each free: every
/// iteration then faults in and zero-fills fresh pages for each large temporary (measured: 44 s of a 61 s
/// layer-timing run in system time). Here freed memory stays in the process for reuse instead:
/// no mmap for blocks (M_MMAP_MAX = 0), no trimming below <see cref="KeepBytes"/>, heap growth padded by
/// <see cref="TopPadBytes"/>, and one arena for threads created from now on (M_ARENA_MAX = 1).
/// glibc reads its MALLOC_* variables only at process start; mallopt changes the same settings at run time,
/// with one limit: a thread that already owns a secondary arena keeps it, or may be handed an existing one, and
/// glibc serves a block larger than a secondary arena's 64 MiB heap with mmap whatever the settings. The kernel
/// keeps its temporaries far below that (Kernels/ChunkedLinearAttention, segments); a single result tensor above
/// 64 MiB made on such a thread still faults in fresh pages. The CLI closes that gap by starting itself with
/// <see cref="StartupVariables"/> set (the same settings, read at start, one arena for every thread).
/// Even so, one heap fragments when large and small blocks interleave, so the kernel's large tensors come from
/// <see cref="TensorPool"/> instead (on unless <see cref="OptedOut"/>, also where the environment configures malloc).
/// Skipped when the user configured glibc's allocator (MALLOC_*_ or GLIBC_TUNABLES set) or when
/// LASP2_NATIVE_HEAP=default asks for glibc's defaults (for measuring the difference). No-op off glibc.
/// </summary>
public static partial class NativeHeap
{
    const int MTrimThreshold = -1, MTopPad = -2, MMmapMax = -4, MArenaMax = -8;

    /// <summary>Free memory at the heap top that glibc keeps instead of returning it: a quarter of physical memory, at most 2 GiB - 1 (mallopt takes an int).</summary>
    public static long KeepBytes { get; } = Math.Min(int.MaxValue, Math.Max(256L << 20, PhysicalBytes() / 4));

    /// <summary>Extra bytes requested whenever the heap grows (address space only until touched).</summary>
    public const long TopPadBytes = 256L << 20;

    /// <summary>
    /// The same settings as environment variables, which glibc reads at process start (then every thread uses the
    /// main arena, so no block size is mmap-ed).
    /// </summary>
    public static IReadOnlyDictionary<string, string> StartupVariables { get; } = new Dictionary<string, string>
    {
        ["MALLOC_MMAP_MAX_"] = "0",
        ["MALLOC_ARENA_MAX"] = "1",
        ["MALLOC_TRIM_THRESHOLD_"] = KeepBytes.ToString(System.Globalization.CultureInfo.InvariantCulture),
        ["MALLOC_TOP_PAD_"] = TopPadBytes.ToString(System.Globalization.CultureInfo.InvariantCulture),
    };

    /// <summary>
    /// True when a process should start itself again with <see cref="StartupVariables"/>: Linux, the settings
    /// applied at run time here (so neither the user nor a previous start configured malloc), no opt-out.
    /// </summary>
    public static bool ShouldRestartWithStartupVariables => State == "tuned";

    /// <summary>
    /// "tuned" when the settings were applied at run time, "tuned at start" when the process started with
    /// <see cref="StartupVariables"/>, otherwise why not ("default: ...").
    /// </summary>
    public static string State { get; private set; } = "default: not loaded";

    /// <summary>LASP2_NATIVE_HEAP=default: glibc's allocator as it comes, and no <see cref="TensorPool"/> (for measuring the difference).</summary>
    public static bool OptedOut => Environment.GetEnvironmentVariable("LASP2_NATIVE_HEAP") == "default";

    /// <summary>Runs once when the assembly is loaded (a library initializer on purpose: every host of the library needs it).</summary>
#pragma warning disable CA2255
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void Initialize() => State = Apply();

    static string Apply()
    {
        if (!OperatingSystem.IsLinux()) return "default: not Linux";
        if (OptedOut) return "default: LASP2_NATIVE_HEAP=default";
        if (StartupVariables.All(v => Environment.GetEnvironmentVariable(v.Key) == v.Value)) return "tuned at start";
        if (Environment.GetEnvironmentVariable("GLIBC_TUNABLES") is not null
            || Environment.GetEnvironmentVariables().Keys.Cast<string>().Any(k => k.StartsWith("MALLOC_", StringComparison.Ordinal) && k.EndsWith('_')))
            return "default: the environment configures malloc";
        try
        {
            bool ok = mallopt(MMmapMax, 0) == 1
                      & mallopt(MTrimThreshold, (int)KeepBytes) == 1
                      & mallopt(MTopPad, (int)TopPadBytes) == 1
                      & mallopt(MArenaMax, 1) == 1;
            return ok ? "tuned" : "default: mallopt refused a setting";
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return "default: no glibc mallopt";
        }
    }

    static long PhysicalBytes()
    {
        const string meminfo = "/proc/meminfo";
        var line = File.Exists(meminfo) ? File.ReadLines(meminfo).FirstOrDefault(l => l.StartsWith("MemTotal:", StringComparison.Ordinal)) : null;
        var parts = line?.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        return parts is { Length: >= 2 } && long.TryParse(parts[1], out var kib) ? kib * 1024 : 4L << 30;
    }

    [LibraryImport("libc", EntryPoint = "mallopt")]
    private static partial int mallopt(int parameter, int value);
}
