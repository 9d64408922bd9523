using static TorchSharp.torch;

namespace Lasp2.Research.Comm;

/// <summary>What one rank brings to a rendezvous: its call, arguments, tensor metadata and (optionally) a private copy.</summary>
sealed record Contribution(string Kind, string Arguments, long[] Shape, ScalarType Dtype, Tensor? Data, int Color = 0, int Key = 0);

/// <summary>
/// Identifies a rendezvous: a collective is (group, call number); a message is (group, message number
/// on the channel source -> destination), with Source = Destination = -1 for collectives.
/// </summary>
readonly record struct SlotKey(long Group, long Sequence, int Source, int Destination);

/// <summary>
/// One rendezvous: every contributor deposits once; it completes when all have; it is freed (and the
/// private copies disposed) when its last consumer has read it.
/// </summary>
sealed class Slot(string name, int[] contributors, int consumers)
{
    /// <summary>For messages, e.g. "AllGather #4 in group [0,1,2,3]".</summary>
    public string Name { get; } = name;
    /// <summary>World ranks expected to contribute, in group order.</summary>
    public int[] Contributors { get; } = contributors;
    public Contribution?[] Parts { get; } = new Contribution?[contributors.Length];
    public ManualResetEventSlim Done { get; } = new(false);
    public int Arrived;
    public int ConsumersLeft = consumers;
    /// <summary>State the consumers agree on (the sub-group ids of a Split), guarded by the world lock.</summary>
    public Dictionary<int, long> SharedIds { get; } = new();
}

/// <summary>
/// The shared state of one in-process run: rendezvous slots, the first failure, and the cancellation
/// that releases every waiting rank when any rank fails. All bookkeeping happens under one lock held
/// briefly; waiting happens outside it on each slot's event.
/// </summary>
sealed class InProcessWorld
{
    readonly object gate = new();
    readonly Dictionary<SlotKey, Slot> slots = new();
    readonly CancellationTokenSource abort = new();
    readonly bool[] exited;
    long nextGroupId = 1;

    public InProcessWorld(int worldSize, TimeSpan timeout)
    {
        if (timeout <= TimeSpan.Zero)
            throw new ArgumentOutOfRangeException(nameof(timeout), timeout, "timeout must be positive.");
        WorldSize = worldSize;
        Timeout = timeout;
        exited = new bool[worldSize];
    }

    public int WorldSize { get; }
    public TimeSpan Timeout { get; }

    /// <summary>The first failure: (world rank, its error); null while every rank is healthy.</summary>
    public (int Rank, Exception Error)? Failure { get; private set; }

    public CancellationToken Aborted => abort.Token;

    /// <summary>Deposits <paramref name="part"/> as contributor <paramref name="index"/> of the slot <paramref name="key"/>.</summary>
    public Slot Arrive(SlotKey key, string name, int[] contributors, int consumers, int index, Contribution part)
    {
        ThrowIfAborted(name);
        Slot slot;
        lock (gate)
        {
            slot = GetOrCreate(key, name, contributors, consumers);
            slot.Parts[index] = part;
            if (++slot.Arrived == contributors.Length) slot.Done.Set();
        }
        ThrowIfWaitingForExited(slot);
        return slot;
    }

    /// <summary>The slot a receiver waits on, created if the sender has not arrived yet.</summary>
    public Slot Reserve(SlotKey key, string name, int[] contributors, int consumers)
    {
        ThrowIfAborted(name);
        Slot slot;
        lock (gate) slot = GetOrCreate(key, name, contributors, consumers);
        ThrowIfWaitingForExited(slot);
        return slot;
    }

    /// <summary>Blocks until every contributor has arrived; throws on timeout or when another rank failed.</summary>
    public Contribution[] Await(Slot slot)
    {
        bool done;
        try
        {
            done = slot.Done.Wait(Timeout, abort.Token);
        }
        catch (OperationCanceledException)
        {
            throw Abandoned(slot.Name);
        }
        if (!done)
        {
            string missing;
            lock (gate) missing = RankList(slot.Contributors.Where((_, i) => slot.Parts[i] is null));
            throw new CommTimeoutException(
                $"{slot.Name} timed out after {Timeout.TotalSeconds:0.###} s: rank(s) {missing} did not arrive.");
        }
        return slot.Parts.Select(p => p!).ToArray();
    }

    /// <summary>Marks one read of <paramref name="slot"/>; the last reader frees it and disposes the private copies.</summary>
    public void Consume(SlotKey key, Slot slot)
    {
        lock (gate)
        {
            if (--slot.ConsumersLeft > 0) return;
            slots.Remove(key);
        }
        foreach (var part in slot.Parts) part?.Data?.Dispose();
    }

    /// <summary>A fresh group id, or the one already chosen for <paramref name="color"/> by another member of the same Split.</summary>
    public long SharedGroupId(Slot split, int color)
    {
        lock (gate)
        {
            if (!split.SharedIds.TryGetValue(color, out long id))
                split.SharedIds[color] = id = nextGroupId++;
            return id;
        }
    }

    /// <summary>A fresh group id (the world group of a run takes the first).</summary>
    public long NewGroupId()
    {
        lock (gate) return nextGroupId++;
    }

    /// <summary>Records the first real failure and releases every waiting rank.</summary>
    public void Fail(int rank, Exception error)
    {
        lock (gate)
        {
            if (Failure is not null) return;
            Failure = (rank, error);
        }
        abort.Cancel();
    }

    /// <summary>
    /// A rank's body returned: any rendezvous still waiting for that rank can never complete, so the
    /// run fails now instead of at the timeout.
    /// </summary>
    public void Exit(int rank)
    {
        string? stuck;
        lock (gate)
        {
            exited[rank] = true;
            stuck = slots.Values.Select(WaitsForExited).FirstOrDefault(m => m is not null)?.Message;
        }
        if (stuck is not null) Fail(rank, new CommException(stuck));
    }

    /// <summary>Throws if the run has already failed (a rank's next call stops it).</summary>
    public void ThrowIfAborted(string name)
    {
        if (abort.IsCancellationRequested) throw Abandoned(name);
    }

    Slot GetOrCreate(SlotKey key, string name, int[] contributors, int consumers)
    {
        if (!slots.TryGetValue(key, out var slot))
            slots[key] = slot = new Slot(name, contributors, consumers);
        return slot;
    }

    /// <summary>A new rendezvous that waits for a rank that already returned fails the run in that rank's name.</summary>
    void ThrowIfWaitingForExited(Slot slot)
    {
        (int Rank, string Message)? stuck;
        lock (gate) stuck = WaitsForExited(slot);
        if (stuck is not var (rank, message)) return;
        Fail(rank, new CommException(message));
        throw Abandoned(slot.Name);
    }

    (int Rank, string Message)? WaitsForExited(Slot slot)
    {
        if (slot.Done.IsSet) return null;
        var gone = slot.Contributors.Where((worldRank, i) => exited[worldRank] && slot.Parts[i] is null).ToList();
        return gone.Count == 0 ? null
            : (gone[0], $"{slot.Name} can never complete: rank(s) {RankList(gone)} returned from the rank body without calling it.");
    }

    CommAbortedException Abandoned(string name) =>
        new($"{name} abandoned because rank {Failure?.Rank} failed.");

    internal static string RankList(IEnumerable<int> ranks) => string.Join(",", ranks);
}
