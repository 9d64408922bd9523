using System.Reflection;
using System.Runtime.InteropServices;
using TorchSharp;

namespace Lasp2.Research.Bench;

/// <summary>What the benchmark ran on: written beside every CSV row so a result carries its machine.</summary>
/// <param name="Cpu">CPU model name (/proc/cpuinfo; the runtime architecture elsewhere).</param>
/// <param name="Cores">Logical processors the process can use.</param>
/// <param name="MemoryBytes">Physical memory (/proc/meminfo MemTotal; 0 where unknown).</param>
/// <param name="Os">Operating system description.</param>
/// <param name="DotNet">.NET runtime description.</param>
/// <param name="TorchSharp">TorchSharp assembly version.</param>
/// <param name="LibTorch">libtorch version reported by the native library.</param>
public sealed record MachineInfo(string Cpu, int Cores, long MemoryBytes, string Os, string DotNet, string TorchSharp, string LibTorch)
{
    /// <summary>Describes the current machine.</summary>
    public static MachineInfo Current() => new(
        CpuModel(),
        Environment.ProcessorCount,
        MemTotal(),
        RuntimeInformation.OSDescription,
        RuntimeInformation.FrameworkDescription,
        typeof(torch).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion.Split('+')[0]
            ?? typeof(torch).Assembly.GetName().Version?.ToString() ?? "unknown",
        torch.__version__);

    /// <summary>The machine's online processors (/proc/cpuinfo), whatever this process is bound to; ProcessorCount elsewhere.</summary>
    public static int OnlineCpus()
    {
        const string cpuinfo = "/proc/cpuinfo";
        int count = File.Exists(cpuinfo) ? File.ReadLines(cpuinfo).Count(l => l.StartsWith("processor", StringComparison.Ordinal)) : 0;
        return count > 0 ? count : Environment.ProcessorCount;
    }

    static string CpuModel()
    {
        const string cpuinfo = "/proc/cpuinfo";
        var line = File.Exists(cpuinfo)
            ? File.ReadLines(cpuinfo).FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))
            : null;
        return line is null ? RuntimeInformation.ProcessArchitecture.ToString() : line[(line.IndexOf(':') + 1)..].Trim();
    }

    static long MemTotal()
    {
        const string meminfo = "/proc/meminfo";
        if (!File.Exists(meminfo)) return 0;
        var line = File.ReadLines(meminfo).FirstOrDefault(l => l.StartsWith("MemTotal:", StringComparison.Ordinal));
        return line is null ? 0 : ProcStatus.ParseKiB(line) * 1024;
    }
}
