using Lasp2.Research.Comm;
using Xunit;
using static TorchSharp.torch;

namespace Lasp2.PropertyTests;

/// <summary>
/// 10,000 random collectives on 8 in-process ranks, every result checked: no deadlock, no mix-up between
/// consecutive calls, async handles or messages. Every rank draws the same program from one seed; rank r's
/// input to call i is filled with Value(i, r), a small integer, so each rank computes the exact expected
/// result (float32 holds these sums exactly) without further communication. Tiny tensors keep it fast.
/// </summary>
public class CommStressTests
{
    const int WorldSize = 8;
    const int Calls = 10_000;

    static float Value(int call, int rank) => (call * 7 + rank * 3) % 17 - 8;

    [Fact]
    public void TenThousandRandomCollectivesOnEightRanksAreAllCorrect()
    {
        var checkedCalls = ProcessGroups.RunInProcess(WorldSize, g =>
        {
            var program = new Random(20250211);
            int rank = g.Rank, w = g.WorldSize, done = 0;
            for (int call = 0; call < Calls; call++)
            {
                using var scope = NewDisposeScope();
                int kind = program.Next(8);
                long length = program.Next(1, 4);
                int root = program.Next(w), shift = program.Next(1, w);
                float[] values = Enumerable.Range(0, w).Select(r => Value(call, r)).ToArray();
                var mine = full(length, values[rank]);
                float[] got;
                float[] expected;
                switch (kind)
                {
                    case 0:
                        got = Read(g.AllGather(mine));
                        expected = values.SelectMany(v => Repeat(v, length)).ToArray();
                        break;
                    case 1:
                        got = Read(g.AllGatherAsync(mine).Wait());
                        expected = values.SelectMany(v => Repeat(v, length)).ToArray();
                        break;
                    case 2:
                        got = Read(g.AllReduce(mine, ReduceOp.Max));
                        expected = Repeat(values.Max(), length);
                        break;
                    case 3:
                        got = Read(g.ReduceScatter(full(new long[] { w, length }, values[rank])));
                        expected = Repeat(values.Sum(), length);
                        break;
                    case 4:
                        got = Read(g.Broadcast(mine, root));
                        expected = Repeat(values[root], length);
                        break;
                    case 5:
                        got = Read(g.SendRecv(mine, (rank + shift) % w, (rank - shift + w) % w));
                        expected = Repeat(values[(rank - shift + w) % w], length);
                        break;
                    case 6:
                        // Two handles in flight, waited in reverse order.
                        var ring = g.SendRecvAsync(mine, (rank + shift) % w, (rank - shift + w) % w);
                        var sum = g.ReduceScatterAsync(full(new long[] { w, length }, values[rank]));
                        got = [.. Read(sum.Wait()), .. Read(ring.Wait())];
                        expected = [.. Repeat(values.Sum(), length), .. Repeat(values[(rank - shift + w) % w], length)];
                        break;
                    default:
                        got = Read(g.AllToAll(full(new long[] { w * length }, values[rank]), 0, 0));
                        expected = values.SelectMany(v => Repeat(v, length)).ToArray();
                        break;
                }
                if (!got.SequenceEqual(expected))
                    throw new InvalidOperationException(
                        $"call {call} (kind {kind}) on rank {rank}: got [{string.Join(",", got)}], expected [{string.Join(",", expected)}]");
                done++;
            }
            return done;
        }, TimeSpan.FromSeconds(60), threadsPerRank: 1);
        Assert.All(checkedCalls, n => Assert.Equal(Calls, n));
    }

    static float[] Read(Tensor t) => t.data<float>().ToArray();

    static float[] Repeat(float value, long count) => Enumerable.Repeat(value, (int)count).ToArray();
}
