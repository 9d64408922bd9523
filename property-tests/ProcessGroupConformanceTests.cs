using FsCheck.Xunit;
using Lasp2.Research.Comm;
using Xunit;
using static TorchSharp.torch;

namespace Lasp2.PropertyTests;

/// <summary>
/// Each collective of the in-process backend equals its sequential definition over all ranks' inputs, for
/// world sizes 1..8, four dtypes and awkward shapes. Reductions fold ranks in rank order (the documented
/// order), so every comparison is exact: tolerance 0. The MPI backend runs the same collectives through
/// `lasp2 comm-selftest` in <see cref="MpiJobTests"/>.
/// </summary>
[Properties(Arbitrary = [typeof(CommArbitraries)], MaxTest = 25)]
public class ProcessGroupConformanceTests
{
    static Tensor[] Run(CommCase c, Func<IProcessGroup, Tensor> body) =>
        ProcessGroups.RunInProcess(c.WorldSize, body, TimeSpan.FromSeconds(60), threadsPerRank: 1);

    static void AssertEach(string name, Tensor[] expected, Tensor[] actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int rank = 0; rank < expected.Length; rank++)
        {
            Assert.Equal(expected[rank].dtype, actual[rank].dtype);
            AssertClose.Tensors($"{name} on rank {rank}", expected[rank], actual[rank], relativeTolerance: 0.0);
        }
    }

    static Tensor[] Same(int worldSize, Tensor value) => Enumerable.Repeat(value, worldSize).ToArray();

    static Tensor SequentialFold(IEnumerable<Tensor> terms, ReduceOp op) =>
        terms.Aggregate((total, term) => op == ReduceOp.Sum ? total + term : maximum(total, term));

    [Property]
    public void AllGatherStacksEveryRankInRankOrder(CommCase c)
    {
        using var scope = NewDisposeScope();
        var actual = Run(c, g => g.AllGather(c.Input(g.Rank)));
        AssertEach("AllGather", Same(c.WorldSize, stack(c.Inputs())), actual);
    }

    [Property]
    public void AllReduceIsTheRankOrderFold(CommCase c)
    {
        using var scope = NewDisposeScope();
        foreach (var op in new[] { ReduceOp.Sum, ReduceOp.Max })
        {
            var actual = Run(c, g => g.AllReduce(c.Input(g.Rank), op));
            AssertEach($"AllReduce {op}", Same(c.WorldSize, SequentialFold(c.Inputs(), op)), actual);
        }
    }

    [Property]
    public void ReduceScatterGivesRankRTheSumOfBlockR(CommCase c)
    {
        using var scope = NewDisposeScope();
        var inputs = c.Inputs(c.Blocked);
        var actual = Run(c, g => g.ReduceScatter(c.Input(g.Rank, c.Blocked)));
        var expected = Enumerable.Range(0, c.WorldSize)
            .Select(r => SequentialFold(inputs.Select(x => x[r]), ReduceOp.Sum)).ToArray();
        AssertEach("ReduceScatter", expected, actual);
    }

    [Property]
    public void AllToAllSendsBlockJToRankJAndIsItsOwnInverse(CommCase c)
    {
        using var scope = NewDisposeScope();
        // Dimension 0 carries W blocks; the received blocks are concatenated along the last dimension.
        long[] shape = [c.WorldSize * c.Shape[0], .. c.Shape[1..]];
        int concat = shape.Length - 1;
        var inputs = c.Inputs(shape);
        var actual = Run(c, g => g.AllToAll(c.Input(g.Rank, shape), 0, concat));
        var expected = Enumerable.Range(0, c.WorldSize)
            .Select(r => cat(inputs.Select(x => x.chunk(c.WorldSize, 0)[r]).ToArray(), concat)).ToArray();
        AssertEach("AllToAll", expected, actual);
        var roundTrip = Run(c, g => g.AllToAll(g.AllToAll(c.Input(g.Rank, shape), 0, concat), concat, 0));
        AssertEach("AllToAll(AllToAll(x, 0, last), last, 0)", inputs, roundTrip);
    }

    [Property]
    public void BroadcastCopiesTheRootsTensor(CommCase c)
    {
        using var scope = NewDisposeScope();
        var actual = Run(c, g => g.Broadcast(c.Input(g.Rank), c.Root));
        AssertEach("Broadcast", Same(c.WorldSize, c.Input(c.Root)), actual);
    }

    /// <summary>Ring step by Root+1 positions: SendRecv, Send then Recv, and the async form all receive rank r - shift's input.</summary>
    [Property]
    public void PointToPointFollowsTheRing(CommCase c)
    {
        using var scope = NewDisposeScope();
        int w = c.WorldSize, shift = c.Root + 1;
        var expected = Enumerable.Range(0, w).Select(r => c.Input(((r - shift) % w + w) % w)).ToArray();
        AssertEach("SendRecv", expected, Run(c, g => g.SendRecv(c.Input(g.Rank), (g.Rank + shift) % w, ((g.Rank - shift) % w + w) % w)));
        AssertEach("Send+Recv", expected, Run(c, g =>
        {
            g.Send(c.Input(g.Rank), (g.Rank + shift) % w);
            return g.Recv(c.Shape, c.Dtype, ((g.Rank - shift) % w + w) % w);
        }));
        AssertEach("SendRecvAsync", expected, Run(c, g =>
        {
            var x = c.Input(g.Rank);
            var handle = g.SendRecvAsync(x, (g.Rank + shift) % w, ((g.Rank - shift) % w + w) % w);
            x.zero_();   // the input may be reused at once: the group holds its own copy
            return handle.Wait();
        }));
    }

    /// <summary>Several async collectives in flight at once, inputs overwritten after posting, waited in reverse order.</summary>
    [Property]
    public void AsyncFormsOverlapAndOwnTheirInputs(CommCase c)
    {
        using var scope = NewDisposeScope();
        var results = ProcessGroups.RunInProcess(c.WorldSize, g =>
        {
            var x = c.Input(g.Rank);
            var blocks = c.Input(g.Rank, c.Blocked);
            var gather = g.AllGatherAsync(x);
            var scatter = g.ReduceScatterAsync(blocks);
            var ring = g.SendRecvAsync(x, (g.Rank + 1) % g.WorldSize, (g.Rank + g.WorldSize - 1) % g.WorldSize);
            x.fill_(float.NaN);
            blocks.fill_(float.NaN);
            return (Ring: ring.Wait(), Scatter: scatter.Wait(), Gather: gather.Wait(), Again: gather.Wait(), Done: gather.IsCompleted);
        }, TimeSpan.FromSeconds(60), threadsPerRank: 1);
        var inputs = c.Inputs();
        var blocked = c.Inputs(c.Blocked);
        for (int r = 0; r < c.WorldSize; r++)
        {
            AssertClose.Tensors($"AllGatherAsync on rank {r}", stack(inputs), results[r].Gather, 0.0);
            Assert.Same(results[r].Gather, results[r].Again);
            Assert.True(results[r].Done, "IsCompleted after Wait");
            AssertClose.Tensors($"ReduceScatterAsync on rank {r}",
                SequentialFold(blocked.Select(x => x[r]), ReduceOp.Sum), results[r].Scatter, 0.0);
            AssertClose.Tensors($"SendRecvAsync on rank {r}", inputs[(r + c.WorldSize - 1) % c.WorldSize], results[r].Ring, 0.0);
        }
    }

    /// <summary>Split by color Root+1 classes, key = -rank (reversed order): sub-group ranks and an AllGather inside them.</summary>
    [Property]
    public void SplitFormsSubGroupsOrderedByKey(CommCase c)
    {
        using var scope = NewDisposeScope();
        int colors = c.Root + 1;
        var results = ProcessGroups.RunInProcess(c.WorldSize, g =>
        {
            using var sub = g.Split(g.Rank % colors, -g.Rank);
            return (sub.Rank, sub.WorldSize, Gathered: sub.AllGather(c.Input(g.Rank)));
        }, TimeSpan.FromSeconds(60), threadsPerRank: 1);
        for (int r = 0; r < c.WorldSize; r++)
        {
            var members = Enumerable.Range(0, c.WorldSize).Where(m => m % colors == r % colors).Reverse().ToArray();
            Assert.Equal(Array.IndexOf(members, r), results[r].Rank);
            Assert.Equal(members.Length, results[r].WorldSize);
            AssertClose.Tensors($"AllGather in sub-group of rank {r}", stack(members.Select(m => c.Input(m)).ToArray()),
                results[r].Gathered, 0.0);
        }
    }

    /// <summary>A rank's result shares no storage with another rank: overwriting it on one rank changes nothing elsewhere.</summary>
    [Property]
    public void EveryRankOwnsItsResult(CommCase c)
    {
        var filled = ProcessGroups.RunInProcess(c.WorldSize, g =>
        {
            using var scope = NewDisposeScope();
            var gathered = g.AllGather(c.Input(g.Rank));
            var broadcast = g.Broadcast(c.Input(g.Rank), c.Root);
            g.Barrier();
            gathered.fill_(g.Rank);
            broadcast.fill_(g.Rank);
            g.Barrier();
            return gathered.eq(g.Rank).all().item<bool>() && broadcast.eq(g.Rank).all().item<bool>();
        }, TimeSpan.FromSeconds(60), threadsPerRank: 1);
        Assert.All(filled, Assert.True);
    }
}
