using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Lasp2.Reference;
using Lasp2.Research.Kernels;
using Xunit;
using static TorchSharp.torch;

namespace Lasp2.PropertyTests;

/// <summary>
/// The local chunked kernel (forward and hand-written backward) against the quadratic reference, float64,
/// relative error &lt;= 1e-10, on awkward shapes and block sizes (tails, blocks longer than the sequence).
/// </summary>
public class ChunkedKernelTests
{
    static double[] Lambda(LinearCase c, bool causal) => causal ? c.Decay : Enumerable.Repeat(1.0, c.Heads).ToArray();

    [Property(MaxTest = 40, Arbitrary = [typeof(ReferenceArbitraries)])]
    public void ForwardAndBackwardEqualTheQuadraticReference(LinearCase c, bool causal)
    {
        using var scope = NewDisposeScope();
        var (q, k, v, dO) = c.Tensors();
        var lambda = Lambda(c, causal);
        var (phiQ, phiK) = (c.FeatureMap.Apply(q), c.FeatureMap.Apply(k));       // the kernel takes mapped q, k
        var (expected, grads) = Autograd.ForwardBackward(
            x => LinearAttention.Quadratic(x[0], x[1], x[2], causal, lambda), dO, phiQ, phiK, v);
        var (output, state) = ChunkedLinearAttention.Forward(phiQ, phiK, v, lambda, c.BlockSize, causal);
        var (dq, dk, dv, dInitial) = ChunkedLinearAttention.Backward(phiQ, phiK, v, dO, lambda, c.BlockSize, causal);
        AssertClose.Tensors("O", expected, output, Compare.Float64Tolerance);
        AssertClose.Tensors("dQ", grads[0], dq, Compare.Float64Tolerance);
        AssertClose.Tensors("dK", grads[1], dk, Compare.Float64Tolerance);
        AssertClose.Tensors("dV", grads[2], dv, Compare.Float64Tolerance);
        // Backward from the states kept by forward (the caching policy of the benchmark method and LASP-2) gives the same.
        var (_, _, seen) = ChunkedLinearAttention.ForwardKeepingStates(phiQ, phiK, v, lambda, c.BlockSize, causal);
        var cached = ChunkedLinearAttention.Backward(phiQ, phiK, v, dO, lambda, c.BlockSize, causal, seen: causal ? seen : null);
        AssertClose.Tensors("dQ (kept states)", grads[0], cached.DQ, Compare.Float64Tolerance);
        AssertClose.Tensors("dK (kept states)", grads[1], cached.DK, Compare.Float64Tolerance);
        AssertClose.Tensors("dV (kept states)", grads[2], cached.DV, Compare.Float64Tolerance);
        // The state summary is the recurrent state after the last token: S_N = sum_j lambda^(N-1-j) k_j^T v_j.
        var keyDecay = tensor(lambda, dtype: float64).view(1, -1, 1, 1)
                           .pow(arange(c.Seq - 1, -1, -1, dtype: float64).view(1, 1, -1, 1));
        AssertClose.Tensors("state", (keyDecay * phiK).transpose(-2, -1).matmul(v), state, Compare.Float64Tolerance);
        // The initial-state gradient is sum_i lambda^(i+1) q_i^T do_i (zero-start shard).
        var queryDecay = tensor(lambda, dtype: float64).view(1, -1, 1, 1)
                             .pow(arange(1, c.Seq + 1, dtype: float64).view(1, 1, -1, 1));
        AssertClose.Tensors("dInitialState", (queryDecay * phiQ).transpose(-2, -1).matmul(dO), dInitial, Compare.Float64Tolerance);
    }

    /// <summary>
    /// Initial state in, final state out: the sequence cut anywhere into two kernel calls, the second starting
    /// from the first one's state and the first receiving the second one's initial-state gradient as dState,
    /// gives the single-call reference exactly (this is the contract LASP-2 builds on).
    /// </summary>
    [Property(MaxTest = 30, Arbitrary = [typeof(ReferenceArbitraries)])]
    public Property SplitAnywhereWithStatesEqualsTheWholeSequence(LinearCase c, bool causal) =>
        Prop.ForAll(Gen.Choose(1, Math.Max(1, c.Seq - 1)).ToArbitrary(), cut =>
        {
            if (c.Seq < 2) return;
            using var scope = NewDisposeScope();
            var (q, k, v, dO) = c.Tensors();
            var lambda = Lambda(c, causal);
            var (expected, grads) = Autograd.ForwardBackward(
                x => LinearAttention.Quadratic(x[0], x[1], x[2], causal, lambda), dO, q, k, v);
            Tensor Head(Tensor x) => x.narrow(2, 0, cut);
            Tensor Tail(Tensor x) => x.narrow(2, cut, c.Seq - cut);
            var (o1, s1) = ChunkedLinearAttention.Forward(Head(q), Head(k), Head(v), lambda, c.BlockSize, causal);
            var (o2, _) = ChunkedLinearAttention.Forward(Tail(q), Tail(k), Tail(v), lambda, c.BlockSize, causal, s1);
            var (dq2, dk2, dv2, ds1) = ChunkedLinearAttention.Backward(Tail(q), Tail(k), Tail(v), Tail(dO), lambda, c.BlockSize, causal, s1);
            var (dq1, dk1, dv1, _) = ChunkedLinearAttention.Backward(Head(q), Head(k), Head(v), Head(dO), lambda, c.BlockSize, causal, null, ds1);
            if (!causal)
            {
                // Unmasked: every token sees the whole sequence, so the head also needs the tail's state.
                var (_, s2) = ChunkedLinearAttention.Forward(Tail(q), Tail(k), Tail(v), lambda, c.BlockSize, causal);
                o1 = ChunkedLinearAttention.Forward(Head(q), Head(k), Head(v), lambda, c.BlockSize, causal, s2).Output;
                var dS2 = ChunkedLinearAttention.Backward(Head(q), Head(k), Head(v), Head(dO), lambda, c.BlockSize, causal).DInitialState;
                (dq1, dk1, dv1, _) = ChunkedLinearAttention.Backward(Head(q), Head(k), Head(v), Head(dO), lambda, c.BlockSize, causal, s2, ds1);
                (dq2, dk2, dv2, _) = ChunkedLinearAttention.Backward(Tail(q), Tail(k), Tail(v), Tail(dO), lambda, c.BlockSize, causal, s1, dS2);
            }
            AssertClose.Tensors("O", expected, cat([o1, o2], 2), Compare.Float64Tolerance);
            AssertClose.Tensors("dQ", grads[0], cat([dq1, dq2], 2), Compare.Float64Tolerance);
            AssertClose.Tensors("dK", grads[1], cat([dk1, dk2], 2), Compare.Float64Tolerance);
            AssertClose.Tensors("dV", grads[2], cat([dv1, dv2], 2), Compare.Float64Tolerance);
        });

    /// <summary>
    /// A shard long enough that the full blocks are batched in several groups (B=2, H=4, d=64, L=64: 32 blocks a
    /// group; 5000 tokens = 2 full groups + 14 blocks + a tail of 8) equals the reference chunked form.
    /// </summary>
    [Fact]
    public void LongShardsBatchedInGroupsEqualTheReference()
    {
        using var scope = NewDisposeScope();
        var generator = new Generator(42);
        Tensor Random() => randn([2, 4, 5000, 64], dtype: float64, generator: generator) * 0.125;
        var (q, k, v, dO) = (Random(), Random(), Random(), Random());
        double[] lambda = [0.999, 0.99, 0.9, 1.0];
        var (expected, grads) = Autograd.ForwardBackward(
            x => LinearAttention.Chunked(x[0], x[1], x[2], 64, causal: true, lambda), dO, q, k, v);
        var (output, _) = ChunkedLinearAttention.Forward(q, k, v, lambda, 64);
        var (dq, dk, dv, _) = ChunkedLinearAttention.Backward(q, k, v, dO, lambda, 64);
        AssertClose.Tensors("O", expected, output, Compare.Float64Tolerance);
        AssertClose.Tensors("dQ", grads[0], dq, Compare.Float64Tolerance);
        AssertClose.Tensors("dK", grads[1], dk, Compare.Float64Tolerance);
        AssertClose.Tensors("dV", grads[2], dv, Compare.Float64Tolerance);
    }
}
