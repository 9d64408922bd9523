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
/// glibc reads its MALLOC_* variables only at process start; mallopt changes the same settings at run time.
/// Limits: threads that already own a secondary arena keep it, and glibc serves a block larger than a
/// secondary arena's 64 MiB heap with mmap whatever the settings; the kernel keeps its temporaries below
/// that (Kernels/ChunkedLinearAttention, segments) so the remaining fresh pages are the layer's outputs.
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

    /// <summary>"tuned" when the settings were applied, otherwise why not ("default: ...").</summary>
    public static string State { get; private set; } = "default: not loaded";

    /// <summary>Runs once when the assembly is loaded (a library initializer on purpose: every host of the library needs it).</summary>
#pragma warning disable CA2255
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void Initialize() => State = Apply();

    static string Apply()
    {
        if (!OperatingSystem.IsLinux()) return "default: not Linux";
        if (Environment.GetEnvironmentVariable("LASP2_NATIVE_HEAP") == "default") return "default: LASP2_NATIVE_HEAP=default";
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
