using Lasp2.Reference;
using Lasp2.Research.Comm;
using TorchSharp;
using static TorchSharp.torch;

namespace Lasp2.Research.Attention;

/// <summary>
/// LASP-2H softmax layers: AllGather context parallelism (LASP-2 paper, Alg. 7; the Llama-3 style CP).
/// Forward on rank t: one AllGather of [K_t | V_t] (only the h_kv KV heads, [B,Hkv,C,Dk+Dv] per rank),
/// the gathered blocks put back in global token order, then O_t = softmax(Q_t K^T / sqrt(Dk) + causal rows
/// of this rank's global positions) V. Backward: dK, dV for the whole sequence computed locally, then one
/// ReduceScatter (the adjoint of the AllGather) returns each rank its own tokens' gradients.
/// One collective per direction; zigzag balances the causal work (equal unmasked entries per rank).
/// </summary>
public sealed class AllGatherContextParallel : ISequenceParallelAttention
{
    public string Name => "allgather-cp";

    public MethodCapabilities Supports => BlockKernels.Capabilities(AttentionKind.Softmax);

    public Tensor Forward(IProcessGroup group, Tensor q, Tensor k, Tensor v, AttentionOptions options)
    {
        var decay = MethodChecks.Validate(this, group, q, k, v, options);
        var kernel = BlockKernels.For(AttentionKind.Softmax, options.Causal, q.shape[3], decay);
        return AllGatherFunction.apply(group, kernel, options.Layout, q, k, v)[0];
    }

    /// <summary>Alg. 7 forward: gathered [K | V] [B,Hkv,N,Dk+Dv] in global order and this rank's output.</summary>
    static (Tensor KeysValues, BlockOutput Final) ForwardPass(IProcessGroup group, IBlockAttention kernel, Layout layout,
        Tensor q, Tensor k, Tensor v)
    {
        // Alg. 7: [K, V] = AllGather([K_t, V_t]), only the h_kv KV heads
        var gathered = group.AllGather(cat([k, v], -1));                                 // [W,B,Hkv,C,Dk+Dv]
        var keysValues = SequenceLayout.Unshard(gathered.unbind(0), layout);             // [B,Hkv,N,Dk+Dv]
        var (queryPositions, keyPositions) = Positions(group, layout, q);
        // Alg. 7: O_t = softmax(Q_t K^T / sqrt(d) + M_t) V, M_t the causal rows of this rank's positions
        var final = kernel.Forward(q, keysValues.narrow(-1, 0, k.shape[3]), keysValues.narrow(-1, k.shape[3], v.shape[3]),
                                   queryPositions, keyPositions)!;                       // [B,H,C,Dv]
        return (keysValues, final);
    }

    /// <summary>dQ_t locally; dK, dV for all N tokens locally, then ReduceScatter to their owners.</summary>
    static (Tensor DQ, Tensor DK, Tensor DV) BackwardPass(IProcessGroup group, IBlockAttention kernel, Layout layout,
        Tensor q, Tensor keysValues, long dimK, Tensor dO, BlockOutput final)
    {
        var (queryPositions, keyPositions) = Positions(group, layout, q);
        var grads = kernel.Backward(q, keysValues.narrow(-1, 0, dimK), keysValues.narrow(-1, dimK, keysValues.shape[3] - dimK),
                                    queryPositions, keyPositions, dO, final);
        // ReduceScatter: the block for rank u holds u's tokens (in u's local order); rank t gets sum over ranks.
        var perOwner = stack(SequenceLayout.Shard(cat([grads.DK, grads.DV], -1), group.WorldSize, layout), 0); // [W,B,Hkv,C,Dk+Dv]
        var dKV = group.ReduceScatter(perOwner);                                         // [B,Hkv,C,Dk+Dv]
        return (grads.DQ, dKV.narrow(-1, 0, dimK), dKV.narrow(-1, dimK, dKV.shape[3] - dimK));
    }

    static (Tensor Query, Tensor Key) Positions(IProcessGroup group, Layout layout, Tensor q)
    {
        long n = q.shape[2] * group.WorldSize;
        return (SequenceLayout.Positions(n, group.WorldSize, group.Rank, layout, q.device), arange(n, dtype: int64, device: q.device));
    }

    /// <summary>Autograd glue: the collectives run inside forward and backward, never under autograd.</summary>
    sealed class AllGatherFunction : autograd.MultiTensorFunction<AllGatherFunction>
    {
        public override string Name => nameof(AllGatherFunction);

        public override List<Tensor> forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var (group, kernel, layout) = ((IProcessGroup)vars[0], (IBlockAttention)vars[1], (Layout)vars[2]);
            var (q, k, v) = ((Tensor)vars[3], (Tensor)vars[4], (Tensor)vars[5]);
            using var noGrad = no_grad();
            var (keysValues, final) = ForwardPass(group, kernel, layout, q, k, v);
            ctx.save_data("group", group);
            ctx.save_data("kernel", kernel);
            ctx.save_data("layout", layout);
            ctx.save_data("dimK", k.shape[3]);
            ctx.save_data("final", final);
            ctx.save_for_backward([q, keysValues]);
            return [final.Output];
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, List<Tensor> gradOutputs)
        {
            var saved = ctx.get_saved_variables();
            var (dQ, dK, dV) = BackwardPass((IProcessGroup)ctx.get_data("group"), (IBlockAttention)ctx.get_data("kernel"),
                (Layout)ctx.get_data("layout"), saved[0], saved[1], (long)ctx.get_data("dimK"), gradOutputs[0],
                (BlockOutput)ctx.get_data("final"));
            return [null!, null!, null!, dQ, dK, dV];
        }
    }
}
