using TorchSharp;
using static TorchSharp.torch;

namespace Lasp2.Reference;

/// <summary>
/// Linear attention with data-dependent gates and the delta rule (<see cref="Recurrence"/>): every recurrence is
/// S_t = A_t S_{t-1} + B_t with o_t = q_t S_t (inclusive: token t enters the state before it reads it).
/// q, k [B, H, N, Dk], v [B, H, N, Dv], gates per <see cref="Gates"/>, an optional entering state S_0
/// [B, H, Dk, Dv] (zero when null). All forms are differentiable in every input, the entering state included.
/// The delta rule expects unit-norm keys (models L2-normalise them); nothing here normalises.
/// </summary>
public static class GatedLinearAttention
{
    /// <summary>
    /// The per-token recurrence, the root of trust, in two steps per token: S &lt;- diag(a_t) S, then
    /// S &lt;- S + beta_t k_t^T (v_t - k_t S) (delta rule) or S &lt;- S + k_t^T v_t; o_t = q_t S.
    /// Returns every o_t [B, H, N, Dv] and the last state [B, H, Dk, Dv].
    /// </summary>
    public static (Tensor Output, Tensor State) Recurrent(Tensor q, Tensor k, Tensor v, Gates gates, Tensor? initialState = null)
    {
        var state = Check(q, k, v, gates, initialState);
        using var scope = NewDisposeScope();
        var logGate = gates.LogGateByKey;                                                    // [B,H,N,1|Dk]
        var outputs = new List<Tensor>();
        for (long t = 0; t < q.shape[2]; t++)
        {
            var (qt, kt, vt) = (q.narrow(2, t, 1), k.narrow(2, t, 1), v.narrow(2, t, 1));    // [B,H,1,D]
            // S <- diag(a_t) S  (a_t = exp g_t; one number per head, or one per key dimension for gla)
            if (logGate is not null) state = logGate.narrow(2, t, 1).exp().transpose(-2, -1) * state;
            if (gates.Beta is { } beta)
            {
                // delta rule: S <- S + beta_t k_t^T (v_t - k_t S) = (I - beta_t k_t^T k_t) S + beta_t k_t^T v_t
                var betaT = beta.narrow(2, t, 1).unsqueeze(-1);                              // [B,H,1,1]
                state = state.Plus(kt.transpose(-2, -1).matmul(betaT * vt.Minus(kt.matmul(state))));
            }
            else state = state.Plus(kt.transpose(-2, -1).matmul(vt));                           // S <- S + k_t^T v_t
            outputs.Add(qt.matmul(state));                                                   // o_t = q_t S_t
        }
        return (cat(outputs, 2).MoveToOuterDisposeScope(), state.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// Chunked form with blocks of <paramref name="blockSize"/> tokens (the tail block is shorter). Inside a block of
    /// length L with entering state S and inclusive cumulative log-gates G_i = sum_{j&lt;=i} g_j:
    /// <code>
    /// U   = V                          (gates only)
    /// U   = T (beta V) - W S            (delta rule, the UT transform; T = (I + L)^-1 and W below)
    /// o_i = (q_i exp G_i) S + sum_{j&lt;=i} (q_i (.) k_j (.) exp(G_i - G_j)) u_j
    /// S'  = exp(G_L) S + sum_j (k_j exp(G_L - G_j))^T u_j
    /// </code>
    /// The gate ratios exp(G_i - G_j) are exp of segment sums of log-gates over (j, i] (never a ratio of two tiny
    /// products, never exp of a positive number, never a difference of two cumulative sums), so gates near 0 and
    /// their gradients stay exact.
    /// Returns every o_i [B, H, N, Dv] and the last state [B, H, Dk, Dv].
    /// </summary>
    public static (Tensor Output, Tensor State) Chunked(Tensor q, Tensor k, Tensor v, Gates gates, int blockSize,
                                                        Tensor? initialState = null)
    {
        var state = Check(q, k, v, gates, initialState);
        Guards.AtLeast(blockSize, 1, nameof(blockSize));
        using var scope = NewDisposeScope();
        var outputs = new List<Tensor>();
        for (long start = 0; start < q.shape[2]; start += blockSize)
        {
            long length = Math.Min(blockSize, q.shape[2] - start);
            var qb = q.narrow(2, start, length);                                             // [B,H,L,Dk]
            var block = Block.Of(k.narrow(2, start, length), v.narrow(2, start, length), gates.Narrow(start, length));
            var values = block.Correction is { } w ? block.Values.Minus(w.matmul(state)) : block.Values; // U [B,H,L,Dv]
            outputs.Add((qb * block.CumulativeGate.exp()).matmul(state).Plus(block.Scores(qb).matmul(values)));
            state = (block.EndLogGate.exp().unsqueeze(-1) * state).Plus(block.DecayedKeys.transpose(-2, -1).matmul(values));
        }
        return (cat(outputs, 2).MoveToOuterDisposeScope(), state.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// The affine summary (A, B) of a span of tokens: S_out = A S_in + B, A = A_N ... A_1 (<see cref="Recurrence.TransitionShape"/>)
    /// and B [B, H, Dk, Dv] the state from S_in = 0. Built block by block, composing each block's map
    /// (A_b, B_b) after the earlier ones: (A_b, B_b) o (A, B) = (A_b A, A_b B + B_b). For the delta rule a block's
    /// A_b = gamma_L I - Ktilde^T W (the WY form: Ktilde = the gate-decayed keys, W = T (beta gamma K), C x Dk each).
    /// </summary>
    public static (Tensor Transition, Tensor State) Summary(Tensor k, Tensor v, Gates gates, int blockSize)
    {
        Check(k, k, v, gates, null);
        Guards.AtLeast(blockSize, 1, nameof(blockSize));
        var recurrence = gates.Recurrence;
        using var scope = NewDisposeScope();
        var (batch, heads, dimK) = (k.shape[0], k.shape[1], k.shape[3]);
        var transition = recurrence.Identity(batch, heads, dimK, k);
        var state = zeros(batch, heads, dimK, v.shape[3], dtype: k.dtype, device: k.device);
        for (long start = 0; start < k.shape[2]; start += blockSize)
        {
            long length = Math.Min(blockSize, k.shape[2] - start);
            var block = Block.Of(k.narrow(2, start, length), v.narrow(2, start, length), gates.Narrow(start, length));
            var blockTransition = block.Transition(recurrence);
            var blockState = block.DecayedKeys.transpose(-2, -1).matmul(block.Values);      // B_b = Ktilde^T T beta V
            transition = recurrence.Compose(blockTransition, transition);                    // A_b A
            state = recurrence.Apply(blockTransition, state).Plus(blockState);                  // A_b B + B_b
        }
        return (transition.MoveToOuterDisposeScope(), state.MoveToOuterDisposeScope());
    }

    static Tensor Check(Tensor q, Tensor k, Tensor v, Gates gates, Tensor? initialState)
    {
        ArgumentNullException.ThrowIfNull(gates);
        Guards.AttentionInputs(q, k, v);
        Guards.AtLeast(q.shape[2], 1, "sequence length of q (dimension 2)");
        gates.Check(q);
        long[] stateShape = [q.shape[0], q.shape[1], q.shape[3], v.shape[3]];
        if (initialState is null) return zeros(stateShape, dtype: q.dtype, device: q.device);
        if (!initialState.shape.SequenceEqual(stateShape))
            throw new ArgumentException(
                $"initialState has shape {Guards.Shape(initialState)} but the state is [{string.Join(", ", stateShape)}] = [B, H, Dk, Dv].",
                nameof(initialState));
        Guards.SameDtypeAndDevice((q, nameof(q)), (initialState, nameof(initialState)));
        return initialState;
    }

    /// <summary>
    /// The state-independent terms of one block of L tokens.
    /// CumulativeGate G [B,H,L,1|Dk]; EndLogGate G_L [B,H,1|Dk]; DecayedKeys k_j exp(G_L - G_j) [B,H,L,Dk];
    /// Values: V, or for the delta rule T beta V [B,H,L,Dv]; Correction: null, or W = T (beta exp(G) (.) K) [B,H,L,Dk]
    /// so that U = Values - W S; Ratios exp(G_i - G_j) for j &lt;= i, 0 above the diagonal [B,H,L,L,1|Dk].
    /// </summary>
    sealed record Block(Tensor CumulativeGate, Tensor EndLogGate, Tensor DecayedKeys, Tensor Values, Tensor? Correction,
                        Tensor Ratios, Tensor Keys)
    {
        public static Block Of(Tensor k, Tensor v, Gates gates)
        {
            long length = k.shape[2];
            var logGate = gates.LogGateByKey ?? zeros(k.shape[0], k.shape[1], length, 1, dtype: k.dtype, device: k.device);
            var cumulative = logGate.cumsum(2);                                                  // G_i  [B,H,L,1|Dk]
            var last = cumulative.narrow(2, length - 1, 1);                                       // G_L  [B,H,1,1|Dk]
            // G_i - G_j as the segment sum sum_{j<m<=i} g_m (0 on the diagonal, without a subtraction: the gradient of
            // each g_m then collects only the pairs it lies between, so near-zero gates lose no precision to cancellation)
            var segment = SegmentSums(logGate);                                                  // [B,H,L,L,1|Dk]
            var causal = ones(length, length, dtype: ScalarType.Bool, device: k.device).tril().unsqueeze(-1); // [L,L,1]
            var ratios = segment.exp() * causal.to(k.dtype);                                     // exp(G_i - G_j), j <= i
            var decayedKeys = k * segment.select(2, length - 1).exp();                           // k_j exp(G_L - G_j)
            Tensor values = v, correction = null!;
            if (gates.Beta is { } beta)
            {
                // UT transform: (I + L) U = beta V - beta gamma K S, L_tj = beta_t (gamma_t / gamma_j) (k_t . k_j) for j < t
                var betaColumn = beta.unsqueeze(-1);                                              // [B,H,L,1]
                var strict = ones(length, length, dtype: ScalarType.Bool, device: k.device).tril(-1);
                var lower = betaColumn * k.matmul(k.transpose(-2, -1)) * ratios.squeeze(-1) * strict.to(k.dtype);
                var identity = eye(length, dtype: k.dtype, device: k.device);
                var inverse = linalg.solve_triangular(identity.Plus(lower), identity.expand_as(lower), upper: false); // T [B,H,L,L]
                values = inverse.matmul(betaColumn * v);                                          // T beta V
                correction = inverse.matmul(betaColumn * cumulative.exp() * k);                   // W = T beta gamma K
            }
            return new Block(cumulative, last.squeeze(2), decayedKeys, values, correction, ratios, k);
        }

        /// <summary>
        /// D_ij = sum_{j&lt;m&lt;=i} g_m for j &lt;= i and 0 above the diagonal, from g [B,H,L,1|Dk]: one product with the
        /// 0/1 matrix of which m lies in (j, i]. Returns [B,H,L,L,1|Dk].
        /// </summary>
        static Tensor SegmentSums(Tensor logGate)
        {
            long length = logGate.shape[2];
            var m = Scalars.Range(0, length, device: logGate.device);
            var (i, j) = (m.view(-1, 1, 1), m.view(1, -1, 1));
            var between = (m.view(1, 1, -1) > j).logical_and(m.view(1, 1, -1) <= i).to(logGate.dtype); // [L(i),L(j),L(m)]
            var sums = logGate.transpose(2, 3).matmul(between.view(length * length, length).t()); // [B,H,1|Dk,L*L]
            return sums.view(sums.shape[0], sums.shape[1], sums.shape[2], length, length).permute(0, 1, 3, 4, 2);
        }

        /// <summary>Intra-block scores sum_d q_id k_jd exp(G_id - G_jd) for j &lt;= i: [B,H,L,L].</summary>
        public Tensor Scores(Tensor q) =>
            Ratios.shape[^1] == 1
                ? q.matmul(Keys.transpose(-2, -1)) * Ratios.squeeze(-1)
                : (q.unsqueeze(3) * Keys.unsqueeze(2) * Ratios).sum(-1);

        /// <summary>A_b of the block: exp(G_L) as a scalar [B,H] or vector [B,H,Dk]; delta: gamma_L I - Ktilde^T W [B,H,Dk,Dk].</summary>
        public Tensor Transition(Recurrence recurrence) => recurrence.Transition switch
        {
            TransitionKind.Scalar => EndLogGate.squeeze(-1).exp(),
            TransitionKind.Diagonal => EndLogGate.exp(),
            _ => (EndLogGate.exp().unsqueeze(-1) * eye(Keys.shape[3], dtype: Keys.dtype, device: Keys.device))
                 .Minus(DecayedKeys.transpose(-2, -1).matmul(Correction!)),
        };
    }
}
