using TorchSharp;
using static TorchSharp.torch;

namespace Lasp2.Reference;

/// <summary>What one transition A_t (and the summary A of a piece) is per head: 1 number, a Dk-vector or a Dk x Dk matrix.</summary>
public enum TransitionKind
{
    /// <summary>A = a I: one number per head.</summary>
    Scalar,
    /// <summary>A = diag(alpha): one Dk-vector per head.</summary>
    Diagonal,
    /// <summary>A a full Dk x Dk matrix per head (the delta rule).</summary>
    Matrix,
}

/// <summary>Which per-token gate a recurrence reads: none, one log-gate per head, or one per head and key dimension.</summary>
public enum GateShape
{
    /// <summary>No gate (a_t = 1).</summary>
    None,
    /// <summary>log a_t [B, H, N].</summary>
    PerHead,
    /// <summary>log alpha_t [B, H, N, Dk].</summary>
    PerKey,
}

/// <summary>
/// One linear recurrence S_t = A_t S_{t-1} + B_t over the state S [Dk, Dv] per head (row vectors, o_t = q_t S_t),
/// and the one home of what it needs: its gate shape, whether it reads beta, the kind of its transition, and the
/// algebra of transitions (apply, transpose, compose, gradient) that every form and every method uses.
/// Gates are given in log space, g = log a &lt;= 0 (models compute them as logsigmoid of a projection).
/// </summary>
/// <param name="Name">Registry name (`lasp2 verify --recurrence`).</param>
/// <param name="Transition">Scalar, diagonal or matrix A.</param>
/// <param name="Gate">Shape of the log-gate input.</param>
/// <param name="Beta">Reads beta_t in (0, 2) [B, H, N] (the delta rule's step size).</param>
/// <param name="LearnedGate">False for the constant per-head decay: its gate is not a model input, so it has no gradient to check.</param>
/// <param name="Equation">S_t = ... as text.</param>
public sealed record Recurrence(string Name, TransitionKind Transition, GateShape Gate, bool Beta, bool LearnedGate, string Equation)
{
    /// <summary>Constant per-head decay lambda (Lightning, RetNet): S_t = lambda S_{t-1} + k_t^T v_t.</summary>
    public static readonly Recurrence Decay =
        new("decay", TransitionKind.Scalar, GateShape.PerHead, Beta: false, LearnedGate: false, "lambda S_{t-1} + k_t^T v_t");

    /// <summary>Data-dependent scalar gate (Mamba2, gated RetNet): S_t = a_t S_{t-1} + k_t^T v_t.</summary>
    public static readonly Recurrence ScalarGate =
        new("scalar-gate", TransitionKind.Scalar, GateShape.PerHead, Beta: false, LearnedGate: true, "a_t S_{t-1} + k_t^T v_t");

    /// <summary>GLA: S_t = diag(alpha_t) S_{t-1} + k_t^T v_t.</summary>
    public static readonly Recurrence Gla =
        new("gla", TransitionKind.Diagonal, GateShape.PerKey, Beta: false, LearnedGate: true, "diag(alpha_t) S_{t-1} + k_t^T v_t");

    /// <summary>DeltaNet: S_t = (I - beta_t k_t^T k_t) S_{t-1} + beta_t k_t^T v_t.</summary>
    public static readonly Recurrence Delta =
        new("delta", TransitionKind.Matrix, GateShape.None, Beta: true, LearnedGate: false, "(I - beta_t k_t^T k_t) S_{t-1} + beta_t k_t^T v_t");

    /// <summary>Gated DeltaNet: S_t = a_t (I - beta_t k_t^T k_t) S_{t-1} + beta_t k_t^T v_t.</summary>
    public static readonly Recurrence GatedDelta =
        new("gated-delta", TransitionKind.Matrix, GateShape.PerHead, Beta: true, LearnedGate: true, "a_t (I - beta_t k_t^T k_t) S_{t-1} + beta_t k_t^T v_t");

    /// <summary>Every recurrence, in the order of the table in docs.</summary>
    public static IReadOnlyList<Recurrence> All { get; } = [Decay, ScalarGate, Gla, Delta, GatedDelta];

    /// <summary>The recurrence called <paramref name="name"/>; throws naming the known ones otherwise.</summary>
    public static Recurrence Get(string name) =>
        All.FirstOrDefault(r => string.Equals(r.Name, name, StringComparison.OrdinalIgnoreCase))
        ?? throw new ArgumentException($"unknown recurrence '{name}'; known: {string.Join(", ", All.Select(r => r.Name))}.", nameof(name));

    /// <summary>Elements of one transition A per head: 1, Dk or Dk^2.</summary>
    public long TransitionElements(long dimK) => Transition switch
    {
        TransitionKind.Scalar => 1,
        TransitionKind.Diagonal => dimK,
        _ => dimK * dimK,
    };

    /// <summary>Shape of one transition A for a state [B, H, Dk, Dv]: [B, H], [B, H, Dk] or [B, H, Dk, Dk].</summary>
    public long[] TransitionShape(long batch, long heads, long dimK) => Transition switch
    {
        TransitionKind.Scalar => [batch, heads],
        TransitionKind.Diagonal => [batch, heads, dimK],
        _ => [batch, heads, dimK, dimK],
    };

    /// <summary>A S for A of this kind and S [B, H, Dk, Dv].</summary>
    public Tensor Apply(Tensor transition, Tensor state) => Transition switch
    {
        TransitionKind.Scalar => transition.unsqueeze(-1).unsqueeze(-1) * state,
        TransitionKind.Diagonal => transition.unsqueeze(-1) * state,
        _ => transition.matmul(state),
    };

    /// <summary>A^T G: the adjoint of <see cref="Apply"/> (the gradient flowing back through S_out = A S_in).</summary>
    public Tensor ApplyTransposed(Tensor transition, Tensor gradient) =>
        Transition == TransitionKind.Matrix ? transition.transpose(-2, -1).matmul(gradient) : Apply(transition, gradient);

    /// <summary>
    /// (later o earlier) = A_later A_earlier: the transition of two consecutive spans. Not commutative for the
    /// delta rule, so the order of the arguments is the order of the tokens.
    /// </summary>
    public Tensor Compose(Tensor later, Tensor earlier) =>
        Transition == TransitionKind.Matrix ? later.matmul(earlier) : later * earlier;

    /// <summary>
    /// dL/dA for S_out = A S_in + B, given G = dL/dS_out [B, H, Dk, Dv] and S_in: G S_in^T, reduced to A's kind
    /// (its trace-like sum for a scalar, its diagonal for a vector).
    /// </summary>
    public Tensor TransitionGradient(Tensor gradient, Tensor state) => Transition switch
    {
        TransitionKind.Scalar => (gradient * state).sum([-2, -1]),
        TransitionKind.Diagonal => (gradient * state).sum(-1),
        _ => gradient.matmul(state.transpose(-2, -1)),
    };

    /// <summary>The identity transition of this kind for <paramref name="like"/>'s dtype and device.</summary>
    public Tensor Identity(long batch, long heads, long dimK, Tensor like) => Transition switch
    {
        TransitionKind.Matrix => eye(dimK, dtype: like.dtype, device: like.device).expand(batch, heads, dimK, dimK).contiguous(),
        _ => ones(TransitionShape(batch, heads, dimK), dtype: like.dtype, device: like.device),
    };

    /// <inheritdoc/>
    public override string ToString() => Name;
}

/// <summary>
/// The per-token inputs of a recurrence beside q, k, v: the log-gate g = log a (&lt;= 0) [B, H, N] or
/// [B, H, N, Dk], and beta in (0, 2) [B, H, N]. Either is null when the recurrence does not read it.
/// On a rank these are the rank's shard (the same layout as q).
/// </summary>
public sealed record Gates(Recurrence Recurrence, Tensor? LogGate = null, Tensor? Beta = null)
{
    /// <summary>The constant per-head decay as log-gates log lambda_h for every token: [B, H, N].</summary>
    public static Gates ConstantDecay(double[] lambda, long batch, long seq, ScalarType dtype, Device? device = null)
    {
        for (int h = 0; h < lambda.Length; h++)
            if (!(lambda[h] > 0.0 && lambda[h] <= 1.0))
                throw new ArgumentOutOfRangeException(nameof(lambda), lambda[h], $"lambda[{h}] = {lambda[h]} is outside (0, 1].");
        using var logLambda = tensor(lambda, dtype: dtype, device: device).log();
        return new Gates(Recurrence.Decay, logLambda.view(1, -1, 1).expand(batch, lambda.Length, seq).contiguous());
    }

    /// <summary>The same gates for the tokens [start, start + length) along dimension 2.</summary>
    public Gates Narrow(long start, long length) =>
        this with { LogGate = LogGate?.narrow(2, start, length), Beta = Beta?.narrow(2, start, length) };

    /// <summary>The gate and beta tensors that are present, in that order (the differentiable inputs beside q, k, v).</summary>
    public Tensor[] Tensors => new[] { LogGate, Beta }.OfType<Tensor>().ToArray();

    /// <summary>The gates of <paramref name="recurrence"/> from its tensors in the order of <see cref="Tensors"/>.</summary>
    public static Gates Of(Recurrence recurrence, IReadOnlyList<Tensor> tensors)
    {
        ArgumentNullException.ThrowIfNull(recurrence);
        int expected = (recurrence.Gate != GateShape.None ? 1 : 0) + (recurrence.Beta ? 1 : 0);
        if (tensors.Count != expected)
            throw new ArgumentException($"the {recurrence.Name} recurrence takes {expected} gate tensors, got {tensors.Count}.", nameof(tensors));
        return new Gates(recurrence, recurrence.Gate != GateShape.None ? tensors[0] : null, recurrence.Beta ? tensors[^1] : null);
    }

    /// <summary>The same recurrence with these tensors in place of <see cref="Tensors"/> (same order).</summary>
    public Gates With(IReadOnlyList<Tensor> tensors) => Of(Recurrence, tensors);

    /// <summary>Per-token log a_t broadcastable against [B, H, N, Dk]: [B, H, N, 1] or [B, H, N, Dk]; null without a gate.</summary>
    internal Tensor? LogGateByKey => Recurrence.Gate switch
    {
        GateShape.PerHead => LogGate!.unsqueeze(-1),
        GateShape.PerKey => LogGate,
        _ => null,
    };

    /// <summary>
    /// Checks the gates against q [B, H, N, Dk]: the tensors the recurrence reads are present with the right shape,
    /// dtype and device, the others absent; g finite and &lt;= 0, beta in (0, 2).
    /// </summary>
    public void Check(Tensor q)
    {
        long[] perHead = [q.shape[0], q.shape[1], q.shape[2]];
        long[]? gateShape = Recurrence.Gate switch
        {
            GateShape.PerHead => perHead,
            GateShape.PerKey => [.. perHead, q.shape[3]],
            _ => null,
        };
        CheckTensor(LogGate, nameof(LogGate), gateShape, q, $"the {Recurrence.Name} recurrence");
        CheckTensor(Beta, nameof(Beta), Recurrence.Beta ? perHead : null, q, $"the {Recurrence.Name} recurrence");
        if (LogGate is not null && !(LogGate.isfinite().all().item<bool>() && Extreme(LogGate.max()) <= 0.0))
            throw new ArgumentOutOfRangeException(nameof(LogGate), "LogGate = log a must be finite and <= 0 (a in (0, 1]).");
        if (Beta is not null && !(Extreme(Beta.min()) > 0.0 && Extreme(Beta.max()) < 2.0))
            throw new ArgumentOutOfRangeException(nameof(Beta), "Beta must lie in (0, 2).");
    }

    /// <summary>A one-element reduction as a double, whatever the floating dtype.</summary>
    static double Extreme(Tensor value)
    {
        using (value) using (var wide = value.to(ScalarType.Float64)) return wide.item<double>();
    }

    static void CheckTensor(Tensor? value, string name, long[]? shape, Tensor q, string who)
    {
        if (shape is null)
        {
            if (value is not null) throw new ArgumentException($"{name} must be null: {who} does not read it.", name);
            return;
        }
        if (value is null) throw new ArgumentException($"{name} is required by {who}: shape [{string.Join(", ", shape)}].", name);
        if (!value.shape.SequenceEqual(shape))
            throw new ArgumentException($"{name} has shape {Guards.Shape(value)} but {who} needs [{string.Join(", ", shape)}].", name);
        Guards.SameDtypeAndDevice((q, nameof(q)), (value, name));
    }
}
