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
/// Each of the rank's pieces attends only to the span of keys its mask can reach (causal: up to the piece's end;
/// packed documents: from the start of the document holding the piece's first token), so key blocks that are
/// fully masked for the piece are never computed: with documents shorter than the sequence the work drops, the
/// bytes do not.
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
        var call = new GatherCall(group, BlockKernels.For(AttentionKind.Softmax, options.Causal, q.shape[3], decay, options.Documents),
                                  options, k.shape[3]);
        return AllGatherFunction.apply(call, q, k, v)[0];
    }

    /// <summary>What one layer call needs besides the tensors (kept on the autograd context for backward).</summary>
    sealed record GatherCall(IProcessGroup Group, IBlockAttention Kernel, AttentionOptions Options, long DimK)
    {
        public Layout Layout => Options.Layout;

        /// <summary>This rank's pieces (global runs, local order).</summary>
        public IReadOnlyList<Piece> Pieces(Tensor q) => SequenceLayout.Pieces(q.shape[2] * Group.WorldSize, Group.WorldSize, Group.Rank, Layout);

        /// <summary>
        /// The keys a piece's queries can see, as a global run: from the start of the document of its first token (0
        /// without documents) to its end (causal) or to the end of the document of its last token (N unmasked).
        /// </summary>
        public Piece KeySpan(Piece piece, long n)
        {
            var documents = Options.Documents ?? DocumentBoundaries.Single(n);
            long first = documents.CuSeqlens[documents.DocumentOf(piece.Start)];
            long end = Options.Causal ? piece.Start + piece.Length : documents.CuSeqlens[documents.DocumentOf(piece.Start + piece.Length - 1) + 1];
            return new Piece(first, end - first);
        }

        /// <summary>int64 positions of a run.</summary>
        public static Tensor Positions(Piece piece, Device device) => Scalars.Range(piece.Start, piece.Start + piece.Length, int64, device);

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
        var (keys, values) = call.Split(keysValues);
        var (pieces, queries) = (call.Pieces(q), SequenceLayout.LocalPieces(q, call.Layout)); // P x [B,H,C_p,Dk]
        var parts = new BlockOutput[pieces.Count];
        for (int slot = 0; slot < pieces.Count; slot++)
        {
            var span = call.KeySpan(pieces[slot], keys.shape[2]);
            // Alg. 7: O_t = softmax(Q_t K^T / sqrt(d) + M_t) V, M_t the causal (and document) rows of this piece's
            // positions, over the keys the mask can reach
            parts[slot] = call.Kernel.Forward(queries[slot], keys.narrow(2, span.Start, span.Length), values.narrow(2, span.Start, span.Length),
                                              GatherCall.Positions(pieces[slot], q.device), GatherCall.Positions(span, q.device))!; // [B,H,C_p,Dv]
        }
        var final = new BlockOutput(cat(parts.Select(p => p.Output).ToList(), 2), cat(parts.Select(p => p.Lse!).ToList(), 2));
        return (keysValues, final);
    }

    /// <summary>dQ_t locally; dK, dV for all N tokens locally, then ReduceScatter to their owners.</summary>
    static (Tensor DQ, Tensor DK, Tensor DV) BackwardPass(GatherCall call, Tensor q, Tensor keysValues, Tensor dO, BlockOutput final)
    {
        var (keys, values) = call.Split(keysValues);
        var pieces = call.Pieces(q);
        var (queries, dOs) = (SequenceLayout.LocalPieces(q, call.Layout), SequenceLayout.LocalPieces(dO, call.Layout));
        var (outputs, lses) = (SequenceLayout.LocalPieces(final.Output, call.Layout), SequenceLayout.LocalPieces(final.Lse!, call.Layout));
        var dKV = zeros_like(keysValues);                                                // [B,Hkv,N,Dk+Dv]
        var dQ = new Tensor[pieces.Count];
        for (int slot = 0; slot < pieces.Count; slot++)
        {
            var span = call.KeySpan(pieces[slot], keys.shape[2]);
            var grads = call.Kernel.Backward(queries[slot], keys.narrow(2, span.Start, span.Length), values.narrow(2, span.Start, span.Length),
                                             GatherCall.Positions(pieces[slot], q.device), GatherCall.Positions(span, q.device),
                                             dOs[slot], new BlockOutput(outputs[slot], lses[slot]));
            dQ[slot] = grads.DQ;                                                         // [B,H,C_p,Dk]
            dKV.narrow(2, span.Start, span.Length).PlusInPlace(cat([grads.DK, grads.DV], -1));
        }
        // ReduceScatter: the block for rank u holds u's tokens (in u's local order); rank t gets sum over ranks.
        var perOwner = stack(SequenceLayout.Shard(dKV, call.Group.WorldSize, call.Layout), 0); // [W,B,Hkv,C,Dk+Dv]
        var (dK, dV) = call.Split(call.Group.ReduceScatter(perOwner));                   // [B,Hkv,C,Dk], [B,Hkv,C,Dv]
        return (cat(dQ, 2), dK, dV);
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
