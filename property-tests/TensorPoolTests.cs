using Lasp2.Reference;
using Lasp2.Research;
using Lasp2.Research.Kernels;
using Xunit;
using static TorchSharp.torch;

namespace Lasp2.PropertyTests;

/// <summary>
/// The pool of large CPU tensors (TensorPool): a mapping is handed out again only after libtorch released every
/// reference to its storage, never to two tensors at once, and the kernel computes the same on reused (dirty) memory.
/// </summary>
public class TensorPoolTests
{
    /// <summary>20 MiB of float32: pooled (at least TensorPool.MinBytes), and a size no other test asks for.</summary>
    static readonly long[] Shape = [5, 1 << 20];

    /// <summary>
    /// An uninitialised pooled tensor shows what its mapping held last: a fresh mapping reads zeros, a reused one the
    /// marker written into the tensor released before.
    /// </summary>
    [Fact]
    public void AMappingIsReusedOnlyAfterItsLastReferenceIsGone()
    {
        const long Marker = 42;
        Assert.False(NativeHeap.OptedOut, "LASP2_NATIVE_HEAP=default turns the pool off");
        var first = TensorPool.Empty(Shape, float32, CPU).Fill(Marker);
        var view = first.narrow(0, 1, 1);                                                    // shares the storage
        first.Dispose();
        using (var second = TensorPool.Empty(Shape, float32, CPU))
            Assert.False(second.IsEqualTo(Marker).all().item<bool>(), "a mapping still held by a view was handed out again");
        view.Dispose();
        using var third = TensorPool.Empty(Shape, float32, CPU);
        Assert.True(third.IsEqualTo(Marker).all().item<bool>(), "the released mapping was not reused");
    }

    [Fact]
    public void ConcurrentThreadsNeverShareAMapping()
    {
        const int Threads = 4, Rounds = 30;
        long[] shape = [6, 1 << 20];
        var failures = new System.Collections.Concurrent.ConcurrentBag<string>();
        var threads = Enumerable.Range(0, Threads).Select(id => new Thread(() =>
        {
            for (int round = 0; round < Rounds; round++)
            {
                // two tensors alive at once per thread, each checked after the other and the other threads wrote theirs
                using var scope = NewDisposeScope();
                var values = new long[] { id * 1000 + 2 * round, id * 1000 + 2 * round + 1 };
                var tensors = values.Select(value => TensorPool.Empty(shape, float32, CPU).Fill(value)).ToList();
                Thread.Sleep(1);
                for (int i = 0; i < 2; i++)
                    if (!tensors[i].IsEqualTo(values[i]).all().item<bool>())
                        failures.Add($"thread {id} round {round} tensor {i}: overwritten by another tensor on the same mapping");
            }
        })).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        Assert.Empty(failures);
    }

    /// <summary>
    /// The kernel at a pooled size (float64 [1,2,16384,64]: outputs, gradients and block states of 16 MiB each), after
    /// those sizes' free mappings were filled with NaN, equals the same sequence in four calls of 4096 tokens chained by
    /// their states (temporaries below the pool's size, from the heap): no result depends on what reused memory held.
    /// </summary>
    [Fact]
    public void TheKernelOnReusedMemoryEqualsTheKernelInPieces()
    {
        const int Heads = 2, Seq = 16384, Dim = 64, Block = 64, Piece = 4096;
        using var scope = NewDisposeScope();
        foreach (var shape in new long[][] { [1, Heads, Seq, Dim], [1, Heads, Seq / Block, Dim, Dim] })
        {
            var poison = Enumerable.Range(0, 6).Select(_ => TensorPool.Empty(shape, float64, CPU).Fill(double.NaN)).ToList();
            poison.ForEach(p => p.Dispose());
        }
        var generator = new Generator(7);
        Tensor Random() => randn([1, Heads, Seq, Dim], dtype: float64, generator: generator).Times(0.125);
        var (q, k, v, dO) = (Random(), Random(), Random(), Random());
        double[] decay = [1.0, 0.999];
        var (_, _, seen) = ChunkedLinearAttention.ForwardKeepingStates(q, k, v, decay, Block);
        var output = ChunkedLinearAttention.Forward(q, k, v, decay, Block).Output;
        var (dq, dk, dv, _) = ChunkedLinearAttention.Backward(q, k, v, dO, decay, Block, seen: seen, consumeSeen: true);

        // The same sequence as four shards: forward from the previous shard's state, backward from the next one's gradient.
        Tensor Part(Tensor x, int i) => x.narrow(2, i * Piece, Piece);
        var states = new List<Tensor?> { null };
        var outputs = new List<Tensor>();
        for (int i = 0; i < Seq / Piece; i++)
        {
            var (o, s) = ChunkedLinearAttention.Forward(Part(q, i), Part(k, i), Part(v, i), decay, Block, initialState: states[i]);
            outputs.Add(o);
            states.Add(s);
        }
        var grads = new (Tensor DQ, Tensor DK, Tensor DV)[Seq / Piece];
        Tensor? dState = null;
        for (int i = Seq / Piece - 1; i >= 0; i--)
        {
            var (pq, pk, pv, dInitial) = ChunkedLinearAttention.Backward(Part(q, i), Part(k, i), Part(v, i), Part(dO, i), decay, Block,
                                                                         initialState: states[i], dState: dState);
            grads[i] = (pq, pk, pv);
            dState = dInitial;
        }
        AssertClose.Tensors("O", cat(outputs, 2), output);
        AssertClose.Tensors("dQ", cat(grads.Select(g => g.DQ).ToList(), 2), dq);
        AssertClose.Tensors("dK", cat(grads.Select(g => g.DK).ToList(), 2), dk);
        AssertClose.Tensors("dV", cat(grads.Select(g => g.DV).ToList(), 2), dv);
    }
}
