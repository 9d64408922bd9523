using System.Runtime.CompilerServices;
using Lasp2.Reference;
using Lasp2.Research.Attention;
using Lasp2.Research.Comm;
using TorchSharp;
using static TorchSharp.torch;
using Kernel = Lasp2.Research.Kernels.ChunkedLinearAttention;

namespace Lasp2.Research.Bench;

/// <summary>
/// The single-device chunked kernel (Kernels/ChunkedLinearAttention) as a benchmark method "chunked":
/// its forward, and its hand-written backward as the autograd backward, on a group of one rank. No
/// communication; the baseline every distributed linear method is measured against. Like LASP-2 it keeps the
/// states each block saw from forward to backward, so both run the same work with the same caching policy.
/// </summary>
public sealed class SingleDeviceChunked : ISequenceParallelAttention
{
    public string Name => "chunked";

    public MethodCapabilities Supports { get; } =
        new(AttentionKind.Linear, Causal: true, Unmasked: true, Decay: true, [Layout.Contiguous], GroupedKv: false);

    public FlopAlgorithm Flops => FlopAlgorithm.ChunkedLinear;

    /// <summary>A single device sends nothing.</summary>
    public CommPrediction PredictComm(CommShape shape, int rank) => new(Name, rank, DirectionPrediction.None, DirectionPrediction.None);

    /// <summary>Output [B,H,N,Dv] of q, k [B,H,N,Dk], v [B,H,N,Dv] on a one-rank <paramref name="group"/>.</summary>
    public Tensor Forward(IProcessGroup group, Tensor q, Tensor k, Tensor v, AttentionOptions options)
    {
        ArgumentNullException.ThrowIfNull(group);
        ArgumentNullException.ThrowIfNull(options);
        if (group.WorldSize != 1)
            throw new ArgumentException($"{Name} is the single-device kernel: it needs a group of 1 rank, got {group.WorldSize}.", nameof(group));
        Kernel.Check(q, k, v, options.Decay, options.BlockSize, options.Causal);
        return KernelFunction.apply(q, k, v, options);
    }

    /// <summary>Autograd glue: forward and backward are the kernel's.</summary>
    sealed class KernelFunction : autograd.SingleTensorFunction<KernelFunction>
    {
        public override string Name => nameof(KernelFunction);

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var (q, k, v, options) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2], (AttentionOptions)vars[3]);
            ctx.save_data("options", options);
            ctx.save_data("states used", new StrongBox<bool>());
            using var scope = NewDisposeScope();
            var (output, _, seen) = Kernel.ForwardKeepingStates(q, k, v, options.Decay, options.BlockSize, options.Causal);
            ctx.save_for_backward([q, k, v, seen.MoveToOuterDisposeScope()]);
            return output.MoveToOuterDisposeScope();
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor dO)
        {
            var options = (AttentionOptions)ctx.get_data("options");
            var used = (StrongBox<bool>)ctx.get_data("states used");
            if (used.Value) throw new InvalidOperationException("the kernel's backward runs once per forward: it reuses the memory of the saved states.");
            used.Value = true;
            var saved = ctx.get_saved_variables();
            using var scope = NewDisposeScope();
            var (dq, dk, dv, _) = Kernel.Backward(saved[0], saved[1], saved[2], dO, options.Decay, options.BlockSize, options.Causal,
                                                  seen: options.Causal ? saved[3] : null, consumeSeen: true);
            return [dq.MoveToOuterDisposeScope(), dk.MoveToOuterDisposeScope(), dv.MoveToOuterDisposeScope(), null!];
        }
    }
}
