namespace Lasp2.Research.Simulation;

/// <summary>The fastest method of one layer kind at one (topology, W, N), with the runner-up's margin.</summary>
public sealed record FrontierPoint(string Topology, string Kind, int Gpus, long Seq, string Fastest, double Seconds, string RunnerUp, double Margin);

/// <summary>
/// Where the ranking flips: for linear layers (lasp2, lasp1, ring-linear, ulysses-linear) and softmax layers of a
/// hybrid model (allgather-cp, ring-softmax, ulysses-softmax), the fastest method at every (topology, W, N), simulated
/// with <see cref="PaperFigures.Layers"/> layers of the paper's shape inside Linear-Llama3-1B's dense work. Ulysses
/// needs H % W = 0 (16 heads: W &lt;= 16); a method that does not apply is left out of that point.
/// </summary>
public static class Frontier
{
    public static IReadOnlyDictionary<string, string[]> Kinds { get; } = new Dictionary<string, string[]>
    {
        ["linear"] = ["lasp2", "lasp1", "ring-linear", "ulysses-linear"],
        ["softmax"] = ["allgather-cp", "ring-softmax", "ulysses-softmax"],
    };

    public static IReadOnlyList<FrontierPoint> Compute(IEnumerable<Topology> topologies, IReadOnlyList<int> gpus, IReadOnlyList<long> seqs,
                                                       Action<string>? progress = null)
    {
        var points = new List<FrontierPoint>();
        foreach (var topology in topologies)
            foreach (var (kind, methods) in Kinds)
                foreach (int w in gpus)
                    foreach (long n in seqs)
                    {
                        progress?.Invoke($"{topology.Name} {kind} W={w} N={n}");
                        var shape = PaperFigures.Shape(n, w, topology.Device.ElementBytes);
                        var times = methods.Where(m => !m.StartsWith("ulysses", StringComparison.Ordinal) || PaperFigures.Heads % w == 0)
                            .Select(m => (Method: m, Seconds: Simulator.Run(m, shape, PaperFigures.Layers, ModelSpec.LinearLlama3_1B, topology).Seconds))
                            .OrderBy(t => t.Seconds).ToList();
                        points.Add(new FrontierPoint(topology.Name, kind, w, n, times[0].Method, times[0].Seconds, times[1].Method,
                                                     times[1].Seconds / times[0].Seconds - 1));
                    }
        return points;
    }
}
