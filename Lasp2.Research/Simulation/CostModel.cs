namespace Lasp2.Research.Simulation;

/// <summary>Bytes a rank sends over each link class.</summary>
public readonly record struct LinkBytes(double Intra, double Inter)
{
    public LinkBytes Add(LinkBytes other) => new(Intra + other.Intra, Inter + other.Inter);
}

/// <summary>
/// Time of each collective on <see cref="Topology"/> for a group of ranks 0..W-1 placed in order on the nodes
/// (alpha-beta model; S = the per-rank block of <see cref="IssueEvent.Bytes"/>; g GPUs per node, n nodes):
/// <list type="bullet">
/// <item>Inside one node, ring AllGather / ReduceScatter: (W-1)(alpha_i + S/beta_i); AllReduce: reduce-scatter + all-gather
/// of S/W blocks, 2(W-1)(alpha_i + S/(W beta_i)).</item>
/// <item>Across nodes, the cheaper of (a) the flat ring, whose every step waits for its slowest edge, an inter-node hop
/// carried by all the node's NICs (NCCL spreads its channels over them): (W-1)(alpha_e + S/min(beta_i, nics beta_e)); and
/// (b) the hierarchical form: a ring over the n nodes per GPU rail, the g rails sharing the node's NICs,
/// (n-1)(alpha_e + S g/(nics beta_e)), then a ring inside the node of the n S gathered blocks, (g-1)(alpha_i + n S/beta_i).</item>
/// <item>AllToAll, pairwise exchange: W-1 steps of S/W each; a step to a peer on another node shares the node's NICs with
/// the node's g GPUs: sum over peers of alpha + (S/W)/beta, beta_e' = nics beta_e / g.</item>
/// <item>Point-to-point: alpha + S/beta of the link between the two ranks; across nodes one NIC (the GPU's rail).</item>
/// <item>Broadcast: pipelined ring, (W-1) alpha + S/beta of the ring's slowest edge; Barrier: ceil(log2 W) alpha.</item>
/// </list>
/// Not modelled: contention between concurrent collectives, NCCL protocol switches (LL/tree) for small messages,
/// launch overheads (they enter only through alpha).
/// </summary>
public sealed class CostModel
{
    readonly Topology topology;

    public CostModel(Topology topology, int worldSize)
    {
        ArgumentNullException.ThrowIfNull(topology);
        if (worldSize < 1) throw new ArgumentOutOfRangeException(nameof(worldSize), worldSize, "worldSize must be >= 1.");
        this.topology = topology;
        WorldSize = worldSize;
    }

    public int WorldSize { get; }

    public Topology Topology => topology;

    int Nodes => (WorldSize + topology.GpusPerNode - 1) / topology.GpusPerNode;

    int PerNode => Math.Min(WorldSize, topology.GpusPerNode);

    /// <summary>Bandwidth of the inter-node hop of a ring: all the node's NICs.</summary>
    double RingInterBandwidth => topology.NicsPerNode * topology.Inter.BandwidthBytesPerSecond;

    /// <summary>Seconds from the last participant's issue to completion.</summary>
    public double Time(IssueEvent e, int rank)
    {
        int w = WorldSize;
        double s = e.Bytes;
        return e.Kind switch
        {
            _ when w == 1 && e.IsGroupCollective => 0,
            CollectiveKind.AllGather or CollectiveKind.ReduceScatter => RingGather(s),
            CollectiveKind.AllReduce => 2 * RingGather(s / w),
            CollectiveKind.AllToAll => AllToAll(s, rank),
            CollectiveKind.Broadcast => (w - 1) * RingEdge.AlphaSeconds + s / RingEdge.BandwidthBytesPerSecond,
            CollectiveKind.Barrier => Math.Ceiling(Math.Log2(w)) * RingEdge.AlphaSeconds,
            CollectiveKind.Send => 0,
            CollectiveKind.SendRecv or CollectiveKind.Recv => PointToPoint(e.Source, rank, s),
            _ => throw new ArgumentOutOfRangeException(nameof(e), e.Kind, "unknown collective kind"),
        };
    }

    /// <summary>The slowest edge of a ring over all ranks (an inter-node hop with every NIC when it spans nodes).</summary>
    Link RingEdge => Nodes == 1 ? topology.Intra
        : new Link("ring across nodes", Math.Max(topology.Intra.AlphaSeconds, topology.Inter.AlphaSeconds),
                   Math.Min(topology.Intra.BandwidthBytesPerSecond, RingInterBandwidth));

    /// <summary>AllGather (or ReduceScatter) of one block of <paramref name="s"/> bytes per rank.</summary>
    double RingGather(double s)
    {
        int w = WorldSize, g = PerNode, n = Nodes;
        double flat = (w - 1) * RingEdge.Time(s);
        if (n == 1) return flat;
        double hierarchical = (n - 1) * (topology.Inter.AlphaSeconds + s * g / RingInterBandwidth)
                              + (g - 1) * topology.Intra.Time(n * s);
        return Math.Min(flat, hierarchical);
    }

    double AllToAll(double s, int rank)
    {
        double piece = s / WorldSize, time = 0;
        double interBandwidth = RingInterBandwidth / PerNode;
        for (int peer = 0; peer < WorldSize; peer++)
        {
            if (peer == rank) continue;
            time += topology.SameNode(rank, peer) ? topology.Intra.Time(piece)
                : topology.Inter.AlphaSeconds + piece / interBandwidth;
        }
        return time;
    }

    /// <summary>One message of <paramref name="bytes"/> from <paramref name="source"/> to <paramref name="destination"/>.</summary>
    public double PointToPoint(int source, int destination, double bytes) =>
        source == destination ? 0 : topology.SameNode(source, destination) ? topology.Intra.Time(bytes) : topology.Inter.Time(bytes);

    /// <summary>
    /// Bytes <paramref name="rank"/> sends over each link class for one collective (flat-ring convention: a ring
    /// collective sends to rank + 1; AllToAll sends S/W to every peer; a message goes to its destination).
    /// </summary>
    public LinkBytes Sent(IssueEvent e, int rank)
    {
        int w = WorldSize;
        if (w == 1) return default;
        LinkBytes To(int peer, double bytes) => topology.SameNode(rank, peer) ? new(bytes, 0) : new(0, bytes);
        int next = (rank + 1) % w;
        return e.Kind switch
        {
            CollectiveKind.AllGather or CollectiveKind.ReduceScatter => To(next, (w - 1.0) * e.Bytes),
            CollectiveKind.AllReduce => To(next, 2.0 * (w - 1) * e.Bytes / w),
            CollectiveKind.Broadcast => To(next, e.Bytes),
            CollectiveKind.AllToAll => Enumerable.Range(0, w).Where(p => p != rank)
                                                 .Aggregate(default(LinkBytes), (a, p) => a.Add(To(p, (double)e.Bytes / w))),
            CollectiveKind.SendRecv or CollectiveKind.Send => To(e.Destination, e.Bytes),
            _ => default,
        };
    }
}
