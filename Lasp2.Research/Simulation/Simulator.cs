using Lasp2.Reference;

namespace Lasp2.Research.Simulation;

/// <summary>One simulated training iteration.</summary>
/// <param name="Method">Registry name.</param>
/// <param name="Topology">Topology name.</param>
/// <param name="WorldSize">W.</param>
/// <param name="Seq">N (global tokens per sequence).</param>
/// <param name="Seconds">Iteration time: the slowest rank's virtual clock.</param>
/// <param name="TokensPerSecond">B N / Seconds.</param>
/// <param name="ComputeSeconds">Computation on the critical (slowest) rank.</param>
/// <param name="ExposedSeconds">Time the critical rank spent blocked: communication not hidden, waiting for peers.</param>
/// <param name="IntraBytes">Bytes sent per rank over links inside a node (mean over ranks).</param>
/// <param name="InterBytes">Bytes sent per rank over the inter-node network (mean over ranks).</param>
/// <param name="Memory">Analytic memory per rank.</param>
/// <param name="Fits">Memory within the device's.</param>
public sealed record SimulationResult(string Method, string Topology, int WorldSize, long Seq, double Seconds, double TokensPerSecond,
                                      double ComputeSeconds, double ExposedSeconds, double IntraBytes, double InterBytes,
                                      MemoryEstimate Memory, bool Fits);

/// <summary>
/// A training iteration of <c>layers</c> identical layers on W virtual ranks, replayed from the shapes-only
/// schedules (<see cref="MethodSchedules"/>): per rank, each layer's dense forward (projections and MLP, charged from
/// <see cref="ModelSpec"/>) and attention forward, the LM head forward and backward, then each layer's attention
/// backward and dense backward in reverse order, on one virtual clock per rank (<see cref="VirtualClock"/>).
/// Data-parallel gradient reduction and the optimizer step are not included (the paper's runs are pure sequence parallelism).
/// </summary>
public static class Simulator
{
    public static SimulationResult Run(string method, LayerShape shape, int layers, ModelSpec model, Topology topology)
    {
        ArgumentNullException.ThrowIfNull(shape);
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(topology);
        Guards.AtLeast(layers, 1, nameof(layers));
        double tokens = (double)shape.Batch * shape.Local;
        double dense = tokens * model.DenseForwardFlopsPerToken, head = tokens * model.HeadForwardFlopsPerToken;
        var schedules = new List<IReadOnlyList<SimEvent>>();
        for (int rank = 0; rank < shape.WorldSize; rank++)
        {
            var layer = MethodSchedules.For(method, shape, rank);
            var trace = new TraceBuilder();
            for (int l = 0; l < layers; l++)
            {
                trace.Compute(dense);
                trace.Append(layer.Forward);
            }
            trace.Compute(3 * head);
            for (int l = 0; l < layers; l++)
            {
                trace.Append(layer.Backward);
                trace.Compute(2 * dense);
            }
            schedules.Add(trace.Events);
        }
        var cost = new CostModel(topology, shape.WorldSize);
        var times = VirtualClock.Replay(schedules, cost, topology.Device.FlopsPerSecond);
        var critical = times.MaxBy(t => t.Total)!;
        var memory = MemoryModel.Estimate(method, shape, model, layers);
        return new SimulationResult(method, topology.Name, shape.WorldSize, shape.Seq, critical.Total,
            shape.Batch * shape.Seq / critical.Total, critical.Compute, critical.Exposed,
            times.Average(t => t.Sent.Intra), times.Average(t => t.Sent.Inter), memory, memory.Total <= topology.Device.MemoryBytes);
    }
}
