namespace Lasp2.Research.Simulation;

/// <summary>One rank's replayed time: total, compute, and the rest (waiting for collectives and for slower peers).</summary>
public sealed record RankTime(int Rank, double Total, double Compute, LinkBytes Sent)
{
    /// <summary>Time blocked in waits: communication not hidden behind computation, plus waiting for peers.</summary>
    public double Exposed => Total - Compute;
}

/// <summary>
/// Replays every rank's schedule on virtual clocks. Computation advances a rank's clock by flops / rate. An
/// issued collective starts at once and the rank goes on; it completes at (the latest issue among the ranks it
/// depends on) + its modelled time (<see cref="CostModel"/>): a group collective waits for the k-th issue of every
/// rank, a receive for the matching send (the m-th message on its channel), a send completes at issue (eager).
/// A wait moves the clock to max(clock, completion), so what overlaps is exactly what the method computes between
/// issuing and waiting. Ranks advance in sweeps until all are done; a schedule that cannot finish is an error.
/// </summary>
public static class VirtualClock
{
    /// <summary>Every rank's time for <paramref name="schedules"/> (one per rank) at <paramref name="flopsPerSecond"/>.</summary>
    public static RankTime[] Replay(IReadOnlyList<IReadOnlyList<SimEvent>> schedules, CostModel cost, double flopsPerSecond)
    {
        ArgumentNullException.ThrowIfNull(schedules);
        int w = schedules.Count;
        if (w != cost.WorldSize) throw new ArgumentException($"{w} schedules for a cost model of {cost.WorldSize} ranks.", nameof(schedules));
        if (!(flopsPerSecond > 0)) throw new ArgumentOutOfRangeException(nameof(flopsPerSecond), flopsPerSecond, "flopsPerSecond must be > 0.");
        var position = new int[w];
        var clock = new double[w];
        var compute = new double[w];
        var sent = new LinkBytes[w];
        var groupCalls = new int[w];
        var issues = new List<double[]>();                                              // group call k -> issue time per rank
        var sends = new Dictionary<(int, int), List<double>>();                         // channel -> issue time per message
        var receives = new Dictionary<(int, int), int>();                                // channel -> messages matched so far
        var pending = new Dictionary<int, (IssueEvent Event, double Issue, int Match)>[w];
        for (int r = 0; r < w; r++) pending[r] = new();

        double? Completion(int rank, IssueEvent e, double issue, int match)
        {
            if (e.IsGroupCollective)
            {
                if (match >= issues.Count || issues[match].Any(double.IsNaN)) return null;
                return issues[match].Max() + cost.Time(e, rank);
            }
            if (e.Kind == CollectiveKind.Send) return issue;
            var channel = (e.Source, rank);
            if (!sends.TryGetValue(channel, out var times) || match >= times.Count) return null;
            return Math.Max(issue, times[match]) + cost.Time(e, rank);
        }

        bool progressed = true;
        while (progressed)
        {
            progressed = false;
            for (int r = 0; r < w; r++)
            {
                var events = schedules[r];
                while (position[r] < events.Count)
                {
                    var e = events[position[r]];
                    if (e is ComputeEvent c)
                    {
                        double dt = c.Flops / flopsPerSecond;
                        clock[r] += dt;
                        compute[r] += dt;
                    }
                    else if (e is IssueEvent i)
                    {
                        int match = -1;
                        if (i.IsGroupCollective)
                        {
                            match = groupCalls[r]++;
                            while (issues.Count <= match) issues.Add(Enumerable.Repeat(double.NaN, w).ToArray());
                            issues[match][r] = clock[r];
                        }
                        if (i.Kind is CollectiveKind.Send or CollectiveKind.SendRecv)
                        {
                            CheckPeer(i.Destination, w, r);
                            var channel = (r, i.Destination);
                            if (!sends.TryGetValue(channel, out var list)) sends[channel] = list = new();
                            list.Add(clock[r]);
                        }
                        if (i.Kind is CollectiveKind.Recv or CollectiveKind.SendRecv)
                        {
                            CheckPeer(i.Source, w, r);
                            var channel = (i.Source, r);
                            match = receives.GetValueOrDefault(channel);
                            receives[channel] = match + 1;
                        }
                        pending[r][i.Handle] = (i, clock[r], match);
                        sent[r] = sent[r].Add(cost.Sent(i, r));
                    }
                    else if (e is WaitEvent wait)
                    {
                        if (!pending[r].TryGetValue(wait.Handle, out var p))
                            throw new InvalidOperationException($"rank {r} waits for handle {wait.Handle}, which it never issued.");
                        var done = Completion(r, p.Event, p.Issue, p.Match);
                        if (done is null) break;
                        clock[r] = Math.Max(clock[r], done.Value);
                    }
                    position[r]++;
                    progressed = true;
                }
            }
        }
        var stuck = Enumerable.Range(0, w).Where(r => position[r] < schedules[r].Count).ToArray();
        if (stuck.Length > 0)
            throw new InvalidOperationException(
                $"the schedules cannot finish: rank {stuck[0]} waits forever at event {position[stuck[0]]} ({schedules[stuck[0]][position[stuck[0]]]}).");
        return Enumerable.Range(0, w).Select(r => new RankTime(r, clock[r], compute[r], sent[r])).ToArray();
    }

    static void CheckPeer(int peer, int worldSize, int rank)
    {
        if (peer < 0 || peer >= worldSize)
            throw new InvalidOperationException($"rank {rank} names peer {peer}, outside 0..{worldSize - 1}.");
    }
}
