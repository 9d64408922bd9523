using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text.Json.Nodes;
using Xunit;
using Xunit.Abstractions;

namespace Lasp2.PropertyTests;

/// <summary>
/// The documented Jupyter set-up (notebooks/jupyter/kernels/.net-csharp, environment.md) keeps the
/// notebook kernel off public interfaces.
/// </summary>
public class JupyterKernelTests(ITestOutputHelper log)
{
    static readonly string NotebookDir = NotebookTests.NotebookDir;

    /// <summary>
    /// The documented Jupyter set-up (notebooks/jupyter/kernels/.net-csharp) starts a kernel that listens on
    /// loopback only: its five ZeroMQ ports and dotnet-interactive's HTTP server (2048-3000, which binds
    /// every interface unless --http-local-only). The kernel is started from the kernelspec's argv exactly
    /// as Jupyter would, with a connection file as Jupyter writes it; its sockets are read from /proc.
    /// </summary>
    [Fact]
    public void KernelListensOnLoopbackOnly()
    {
        var kernelSpec = JsonNode.Parse(File.ReadAllText(Path.Combine(NotebookDir, "jupyter", "kernels", ".net-csharp", "kernel.json")))!;
        var connectionFile = Path.Combine(Path.GetTempPath(), $"lasp2-kernel-{Guid.NewGuid():N}.json");
        var ports = FreePorts(5);
        File.WriteAllText(connectionFile, new JsonObject
        {
            ["shell_port"] = ports[0], ["iopub_port"] = ports[1], ["stdin_port"] = ports[2], ["control_port"] = ports[3],
            ["hb_port"] = ports[4], ["ip"] = "127.0.0.1", ["key"] = Guid.NewGuid().ToString("N"), ["transport"] = "tcp",
            ["signature_scheme"] = "hmac-sha256", ["kernel_name"] = ".net-csharp",
        }.ToJsonString());
        var argv = kernelSpec["argv"]!.AsArray().Select(a => ((string)a!).Replace("{connection_file}", connectionFile)).ToList();
        var start = new ProcessStartInfo(argv[0]) { WorkingDirectory = NotebookDir, UseShellExecute = false,
                                                    RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true };
        argv.Skip(1).ToList().ForEach(start.ArgumentList.Add);
        using var kernel = Process.Start(start)!;
        try
        {
            kernel.StandardInput.Close();
            _ = kernel.StandardOutput.ReadToEndAsync();
            _ = kernel.StandardError.ReadToEndAsync();
            var listening = new List<IPEndPoint>();
            var deadline = Stopwatch.StartNew();
            // Wait for the HTTP server, the last thing the kernel starts.
            while (!listening.Any(e => e.Port is >= 2048 and <= 3000) && deadline.Elapsed < TimeSpan.FromSeconds(90))
            {
                Thread.Sleep(500);
                Assert.False(kernel.HasExited, $"the kernel exited with {(kernel.HasExited ? kernel.ExitCode : 0)}");
                listening = ListeningEndpoints(ProcessTree(kernel.Id));
            }
            log.WriteLine("kernel listens on: " + string.Join(", ", listening));
            Assert.Contains(listening, e => e.Port is >= 2048 and <= 3000);
            Assert.Contains(listening, e => e.Port == ports[0]);
            Assert.All(listening, e => Assert.True(IPAddress.IsLoopback(e.Address), $"the kernel listens on {e}, not a loopback address"));
        }
        finally
        {
            kernel.Kill(entireProcessTree: true);
            File.Delete(connectionFile);
        }
    }

    static int[] FreePorts(int count)
    {
        var listeners = Enumerable.Range(0, count).Select(_ => new TcpListener(IPAddress.Loopback, 0)).ToList();
        listeners.ForEach(l => l.Start());
        var ports = listeners.Select(l => ((IPEndPoint)l.LocalEndpoint).Port).ToArray();
        listeners.ForEach(l => l.Stop());
        return ports;
    }

    /// <summary>The process and its descendants (the kernelspec runs `dotnet tool run`, which starts the kernel).</summary>
    static HashSet<int> ProcessTree(int root)
    {
        var parents = new Dictionary<int, int>();
        foreach (var dir in Directory.GetDirectories("/proc"))
            if (int.TryParse(Path.GetFileName(dir), out int pid))
                try
                {
                    var stat = File.ReadAllText(Path.Combine(dir, "stat"));
                    parents[pid] = int.Parse(stat[(stat.LastIndexOf(')') + 2)..].Split(' ')[1]);
                }
                catch (IOException) { }   // the process ended meanwhile
        var tree = new HashSet<int> { root };
        for (bool grew = true; grew;)
        {
            grew = false;
            foreach (var (pid, parent) in parents)
                if (tree.Contains(parent) && tree.Add(pid)) grew = true;
        }
        return tree;
    }

    /// <summary>TCP endpoints in LISTEN state owned by <paramref name="pids"/>, from /proc/net/tcp and tcp6.</summary>
    static List<IPEndPoint> ListeningEndpoints(HashSet<int> pids)
    {
        var inodes = new HashSet<string>();
        foreach (var pid in pids)
            try
            {
                foreach (var fd in Directory.GetFiles($"/proc/{pid}/fd"))
                    if (new FileInfo(fd).LinkTarget is { } target && target.StartsWith("socket:[", StringComparison.Ordinal))
                        inodes.Add(target[8..^1]);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        var endpoints = new List<IPEndPoint>();
        foreach (var table in new[] { "/proc/net/tcp", "/proc/net/tcp6" })
            foreach (var line in File.ReadLines(table).Skip(1))
            {
                var fields = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                if (fields[3] != "0A" || !inodes.Contains(fields[9])) continue;   // 0A = LISTEN
                var (address, port) = (fields[1].Split(':')[0], Convert.ToInt32(fields[1].Split(':')[1], 16));
                // The kernel writes each 32-bit word of the address in host (little-endian) order.
                var bytes = Enumerable.Range(0, address.Length / 8)
                    .SelectMany(w => Convert.FromHexString(address.Substring(8 * w, 8)).Reverse()).ToArray();
                endpoints.Add(new IPEndPoint(new IPAddress(bytes), port));
            }
        return endpoints;
    }
}
