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

    public FlopAlgorithm Flops => FlopAlgorithm.Softmax;

    /// <summary>Forward one AllGather of the KV block, backward one ReduceScatter of it: (W-1) KV each way; 1 step each.</summary>
    public CommPrediction PredictComm(CommShape shape, int rank)
    {
        long bytes = (shape.WorldSize - 1L) * shape.KeyValueBytes;
        return new(Name, rank, DirectionPrediction.Of(1, (CommKind.AllGather, 1, bytes, bytes)),
                               DirectionPrediction.Of(1, (CommKind.ReduceScatter, 1, bytes, bytes)));
    }

    public Tensor Forward(IProcessGroup group, Tensor q, Tensor k, Tensor v, AttentionOptions options)
    {
        var decay = MethodChecks.Validate(this, group, q, k, v, options);
        var call = new GatherCall(group, BlockKernels.For(AttentionKind.Softmax, options.Causal, q.shape[3], decay), options.Layout, k.shape[3]);
        return AllGatherFunction.apply(call, q, k, v)[0];
    }

    /// <summary>What one layer call needs besides the tensors (kept on the autograd context for backward).</summary>
    sealed record GatherCall(IProcessGroup Group, IBlockAttention Kernel, Layout Layout, long DimK)
    {
        /// <summary>This rank's query positions [C] and the global key positions 0..N-1.</summary>
        public (Tensor Query, Tensor Key) Positions(Tensor q)
        {
            long n = q.shape[2] * Group.WorldSize;
            return (SequenceLayout.Positions(n, Group.WorldSize, Group.Rank, Layout, q.device), Scalars.Range(0, n, int64, q.device));
        }

        /// <summary>[K | V] split back into K [..,Dk] and V [..,Dv].</summary>
        public (Tensor K, Tensor V) Split(Tensor keysValues) =>
            (keysValues.narrow(-1, 0, DimK), keysValues.narrow(-1, DimK, keysValues.shape[^1] - DimK));
    }

    /// <summary>Alg. 7 forward: gathered [K | V] [B,Hkv,N,Dk+Dv] in global order and this rank's output.</summary>
    static (Tensor KeysValues, BlockOutput Final) ForwardPass(GatherCall call, Tensor q, Tensor k, Tensor v)
    {
        // Alg. 7: [K, V] = AllGather([K_t, V_t]), only the h_kv KV heads
        var gathered = call.Group.AllGather(cat([k, v], -1));                            // [W,B,Hkv,C,Dk+Dv]
        var keysValues = SequenceLayout.Unshard(gathered.unbind(0), call.Layout);        // [B,Hkv,N,Dk+Dv]
        var (queryPositions, keyPositions) = call.Positions(q);
        var (keys, values) = call.Split(keysValues);
        // Alg. 7: O_t = softmax(Q_t K^T / sqrt(d) + M_t) V, M_t the causal rows of this rank's positions
        var final = call.Kernel.Forward(q, keys, values, queryPositions, keyPositions)!;  // [B,H,C,Dv]
        return (keysValues, final);
    }

    /// <summary>dQ_t locally; dK, dV for all N tokens locally, then ReduceScatter to their owners.</summary>
    static (Tensor DQ, Tensor DK, Tensor DV) BackwardPass(GatherCall call, Tensor q, Tensor keysValues, Tensor dO, BlockOutput final)
    {
        var (queryPositions, keyPositions) = call.Positions(q);
        var (keys, values) = call.Split(keysValues);
        var grads = call.Kernel.Backward(q, keys, values, queryPositions, keyPositions, dO, final);
        // ReduceScatter: the block for rank u holds u's tokens (in u's local order); rank t gets sum over ranks.
        var perOwner = stack(SequenceLayout.Shard(cat([grads.DK, grads.DV], -1), call.Group.WorldSize, call.Layout), 0); // [W,B,Hkv,C,Dk+Dv]
        var (dK, dV) = call.Split(call.Group.ReduceScatter(perOwner));                   // [B,Hkv,C,Dk], [B,Hkv,C,Dv]
        return (grads.DQ, dK, dV);
    }

    /// <summary>Autograd glue: the collectives run inside forward and backward, never under autograd.</summary>
    sealed class AllGatherFunction : autograd.MultiTensorFunction<AllGatherFunction>
    {
        public override string Name => nameof(AllGatherFunction);

        public override List<Tensor> forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var (call, q, k, v) = ((GatherCall)vars[0], (Tensor)vars[1], (Tensor)vars[2], (Tensor)vars[3]);
            using var noGrad = no_grad();
            var (keysValues, final) = ForwardPass(call, q, k, v);
            ctx.save_data("call", call);
            ctx.save_data("final", final);
            ctx.save_for_backward([q, keysValues]);
            return [final.Output];
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, List<Tensor> gradOutputs)
        {
            var saved = ctx.get_saved_variables();
            var (dQ, dK, dV) = BackwardPass((GatherCall)ctx.get_data("call"), saved[0], saved[1], gradOutputs[0],
                                            (BlockOutput)ctx.get_data("final"));
            return [null!, dQ, dK, dV];
        }
    }
}
