using System.Text.Json;

namespace Lasp2.Research.Simulation;

/// <summary>One class of link: a message of b bytes over it takes Alpha + b / Bandwidth seconds.</summary>
/// <param name="Name">What the link is, e.g. "NVLink 3 through NVSwitch".</param>
/// <param name="AlphaSeconds">Latency per message (per ring step), seconds (&gt; 0).</param>
/// <param name="BandwidthBytesPerSecond">Achieved bandwidth of one link in one direction, bytes/s (&gt; 0).</param>
public sealed record Link(string Name, double AlphaSeconds, double BandwidthBytesPerSecond)
{
    /// <summary>Alpha + bytes / Bandwidth.</summary>
    public double Time(double bytes) => AlphaSeconds + bytes / BandwidthBytesPerSecond;
}

/// <summary>The accelerator: peak rates, the fraction of peak the kernels reach, memory.</summary>
/// <param name="Name">e.g. "A100 80GB SXM".</param>
/// <param name="PeakFlopsBf16">Dense bf16 peak, flop/s.</param>
/// <param name="PeakFlopsFp32">Dense fp32 peak, flop/s.</param>
/// <param name="Efficiency">Fraction of the peak the attention kernels reach (stated, in (0, 1]).</param>
/// <param name="MemoryBytes">Device memory, bytes.</param>
/// <param name="ElementBytes">Bytes per element of activations and messages (2 for bf16, 8 for float64).</param>
/// <param name="Precision">"bf16" or "fp32": which peak applies.</param>
public sealed record DeviceSpec(string Name, double PeakFlopsBf16, double PeakFlopsFp32, double Efficiency, double MemoryBytes,
                            int ElementBytes, string Precision)
{
    /// <summary>The rate compute is charged at: the peak of <see cref="Precision"/> times <see cref="Efficiency"/>.</summary>
    public double FlopsPerSecond => (Precision == "fp32" ? PeakFlopsFp32 : PeakFlopsBf16) * Efficiency;
}

/// <summary>
/// A cluster as data (data/topologies/*.json): GPUs per node, the link inside a node (every GPU pair, as
/// through NVSwitch), the network between nodes (one NIC per <see cref="NicsPerNode"/>, shared by the
/// node's GPUs), and the device. Ranks are placed in order: rank r lives on node r / GpusPerNode.
/// </summary>
public sealed record Topology(string Name, string Description, int GpusPerNode, Link Intra, Link Inter, int NicsPerNode,
                              DeviceSpec Device, IReadOnlyList<string> Sources)
{
    static readonly JsonSerializerOptions Json = new() { PropertyNameCaseInsensitive = true, ReadCommentHandling = JsonCommentHandling.Skip };

    /// <summary>Folder of the stored topologies, relative to the repository root.</summary>
    public const string Folder = "data/topologies";

    /// <summary>The node rank <paramref name="rank"/> lives on.</summary>
    public int Node(int rank) => rank / GpusPerNode;

    /// <summary>True when the two ranks share a node.</summary>
    public bool SameNode(int a, int b) => Node(a) == Node(b);

    /// <summary>Parses and checks a topology file.</summary>
    public static Topology Load(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"topology file '{path}' does not exist.", path);
        var topology = JsonSerializer.Deserialize<Topology>(File.ReadAllText(path), Json)
                       ?? throw new InvalidDataException($"topology file '{path}' is empty.");
        return topology.Checked(path);
    }

    /// <summary>
    /// The stored topology <paramref name="name"/> (data/topologies/&lt;name&gt;.json in <paramref name="directory"/> or the
    /// nearest parent that has that folder, i.e. the repository's), or a path to a .json file; an unknown name is an
    /// error listing the stored ones.
    /// </summary>
    public static Topology Resolve(string name, string directory)
    {
        if (name.EndsWith(".json", StringComparison.OrdinalIgnoreCase)) return Load(name);
        var folder = StoredFolder(directory);
        var path = folder is null ? null : Path.Combine(folder, name + ".json");
        if (path is not null && File.Exists(path)) return Load(path);
        string[] known = folder is null ? [] : Directory.GetFiles(folder, "*.json").Select(f => Path.GetFileNameWithoutExtension(f)).Order().ToArray();
        throw new ArgumentException($"not a stored topology; stored: {string.Join(", ", known)} (or a path to a .json file).", nameof(name));
    }

    /// <summary>data/topologies in <paramref name="directory"/> or its nearest parent that has one; null if none.</summary>
    public static string? StoredFolder(string directory)
    {
        for (var d = new DirectoryInfo(directory); d is not null; d = d.Parent)
            if (Directory.Exists(Path.Combine(d.FullName, Folder))) return Path.Combine(d.FullName, Folder);
        return null;
    }

    Topology Checked(string path)
    {
        void Positive(double value, string what)
        {
            if (!(value > 0) || double.IsInfinity(value))
                throw new InvalidDataException($"{path}: {what} must be a positive finite number, got {value}.");
        }
        if (GpusPerNode < 1) throw new InvalidDataException($"{path}: gpusPerNode must be >= 1, got {GpusPerNode}.");
        if (NicsPerNode < 1) throw new InvalidDataException($"{path}: nicsPerNode must be >= 1, got {NicsPerNode}.");
        if (Intra is null || Inter is null || Device is null) throw new InvalidDataException($"{path}: intra, inter and device are required.");
        Positive(Intra.AlphaSeconds, "intra.alphaSeconds");
        Positive(Intra.BandwidthBytesPerSecond, "intra.bandwidthBytesPerSecond");
        Positive(Inter.AlphaSeconds, "inter.alphaSeconds");
        Positive(Inter.BandwidthBytesPerSecond, "inter.bandwidthBytesPerSecond");
        Positive(Device.PeakFlopsBf16, "device.peakFlopsBf16");
        Positive(Device.PeakFlopsFp32, "device.peakFlopsFp32");
        Positive(Device.MemoryBytes, "device.memoryBytes");
        if (!(Device.Efficiency > 0 && Device.Efficiency <= 1))
            throw new InvalidDataException($"{path}: device.efficiency must be in (0, 1], got {Device.Efficiency}.");
        if (Device.ElementBytes is not (2 or 4 or 8))
            throw new InvalidDataException($"{path}: device.elementBytes must be 2, 4 or 8, got {Device.ElementBytes}.");
        if (Device.Precision is not ("bf16" or "fp32"))
            throw new InvalidDataException($"{path}: device.precision must be bf16 or fp32, got '{Device.Precision}'.");
        return this with { Sources = Sources ?? [] };
    }
}
