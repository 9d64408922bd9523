namespace Lasp2.Research.Simulation;

/// <summary>One rank's replayed time: total, compute, and the rest (waiting for collectives and for slower peers).</summary>
public sealed record RankTime(int Rank, double Total, double Compute, LinkBytes Sent)
{
    /// <summary>Time blocked in waits: communication not hidden behind computation, plus waiting for peers.</summary>
    public double Exposed => Total - Compute;
}

/// <summary>
/// Replays every rank's schedule on virtual clocks. Computation advances a rank's clock by flops / rate. An
/// issued collective starts and the rank goes on; it completes at its start + its modelled time (<see cref="CostModel"/>),
/// where a group collective starts at the k-th issue of the last rank and not before call k-1 completed (collectives
/// run in order, one at a time, as on one NCCL stream), a receive at the matching send (the m-th message on its
/// channel) and not before message m-1 on that channel completed; a send completes at issue (eager).
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
        var pending = new Dictionary<int, (IssueEvent Event, double Issue, int Match)>[w];
        for (int r = 0; r < w; r++) pending[r] = new();

        var groupEvents = new List<IssueEvent>();                                        // group call k -> its event
        var groupDone = new List<double>();                                             // group call k -> completion
        var posted = new Dictionary<(int, int), List<(IssueEvent Event, double Issue)>>(); // channel -> receives posted
        var channelDone = new Dictionary<(int, int), List<double>>();                    // channel -> completion per message

        // One network queue per communicator: group call k starts once every rank issued it and call k-1 is done
        // (collectives run in order, as on one NCCL stream); message m on a channel once it was sent and posted and
        // message m-1 on that channel is done.
        double? Completion(int rank, IssueEvent e, double issue, int match)
        {
            if (e.IsGroupCollective)
            {
                while (groupDone.Count <= match)
                {
                    int k = groupDone.Count;
                    if (issues[k].Any(double.IsNaN)) return null;
                    double start = Math.Max(issues[k].Max(), k > 0 ? groupDone[k - 1] : 0);
                    groupDone.Add(start + cost.Time(groupEvents[k], rank));
                }
                return groupDone[match];
            }
            if (e.Kind == CollectiveKind.Send) return issue;
            var channel = (e.Source, rank);
            if (!channelDone.TryGetValue(channel, out var done)) channelDone[channel] = done = new();
            while (done.Count <= match)
            {
                int m = done.Count;
                if (!sends.TryGetValue(channel, out var times) || m >= times.Count) return null;
                var receive = posted[channel][m];
                double begin = Math.Max(Math.Max(receive.Issue, times[m]), m > 0 ? done[m - 1] : 0);
                done.Add(begin + cost.Time(receive.Event, rank));
            }
            return done[match];
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
                            if (groupEvents.Count <= match) groupEvents.Add(i);
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
                            if (!posted.TryGetValue(channel, out var list)) posted[channel] = list = new();
                            match = list.Count;
                            list.Add((i, clock[r]));
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
