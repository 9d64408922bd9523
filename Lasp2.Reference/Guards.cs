using System.Globalization;
using TorchSharp;
using static TorchSharp.torch;

namespace Lasp2.Reference;

/// <summary>
/// Argument checks shared by every reference form and every distributed method. Each check throws
/// <see cref="ArgumentException"/> (shapes, dtypes, devices) or <see cref="ArgumentOutOfRangeException"/>
/// (values outside their range) naming the parameter and what is allowed. Nothing is broadcast silently.
/// </summary>
public static class Guards
{
    /// <summary>Requires a 4-D floating-point tensor laid out [batch, heads, seq, dim].</summary>
    public static void Rank4(Tensor tensor, string name)
    {
        if (tensor.dim() != 4)
            throw new ArgumentException(
                $"{name} must be 4-D [batch, heads, seq, dim]; got {tensor.dim()}-D shape {Shape(tensor)}.", name);
        if (!tensor.is_floating_point())
            throw new ArgumentException($"{name} must be floating point; got {tensor.dtype}.", name);
    }

    /// <summary>Requires every tensor to share the first one's dtype and device.</summary>
    public static void SameDtypeAndDevice(params (Tensor Tensor, string Name)[] tensors)
    {
        var (first, firstName) = tensors[0];
        foreach (var (tensor, name) in tensors.Skip(1))
        {
            if (tensor.dtype != first.dtype)
                throw new ArgumentException(
                    $"{name} has dtype {tensor.dtype} but {firstName} has {first.dtype}; all inputs must share one dtype.", name);
            if (tensor.device.ToString() != first.device.ToString())
                throw new ArgumentException(
                    $"{name} is on device {tensor.device} but {firstName} is on {first.device}; all inputs must share one device.", name);
        }
    }

    /// <summary>
    /// Checks q [B,H,Nq,Dk], k [B,Hkv,Nk,Dk], v [B,Hkv,Nk,Dv]. <paramref name="allowGroupedKv"/> permits
    /// H to be a multiple of Hkv (grouped-query attention); otherwise Hkv must equal H.
    /// <paramref name="sameTokens"/> requires Nq = Nk (queries and keys are the same tokens).
    /// </summary>
    public static void AttentionInputs(Tensor q, Tensor k, Tensor v, bool allowGroupedKv = false, bool sameTokens = true)
    {
        Rank4(q, nameof(q));
        Rank4(k, nameof(k));
        Rank4(v, nameof(v));
        SameDtypeAndDevice((q, nameof(q)), (k, nameof(k)), (v, nameof(v)));
        long batch = q.shape[0], heads = q.shape[1], seq = q.shape[2];
        if (k.shape[0] != batch || v.shape[0] != batch)
            throw new ArgumentException(
                $"batch sizes differ: q {Shape(q)}, k {Shape(k)}, v {Shape(v)}; dimension 0 must match.", nameof(k));
        if ((sameTokens && k.shape[2] != seq) || v.shape[2] != k.shape[2])
            throw new ArgumentException(
                $"sequence lengths differ: q {Shape(q)}, k {Shape(k)}, v {Shape(v)}; dimension 2 must match.", nameof(k));
        if (k.shape[3] != q.shape[3])
            throw new ArgumentException(
                $"d_k differs: q has {q.shape[3]}, k has {k.shape[3]}; dimension 3 of q and k must match.", nameof(k));
        if (v.shape[1] != k.shape[1])
            throw new ArgumentException(
                $"k has {k.shape[1]} heads but v has {v.shape[1]}; they must match.", nameof(v));
        long kvHeads = k.shape[1];
        if (allowGroupedKv)
        {
            if (kvHeads < 1 || heads % kvHeads != 0)
                throw new ArgumentException(
                    $"q has {heads} heads, which is not a multiple of the {kvHeads} KV heads of k and v.", nameof(k));
        }
        else if (kvHeads != heads)
            throw new ArgumentException(
                $"q has {heads} heads but k and v have {kvHeads}; linear attention needs equal head counts.", nameof(k));
    }

    /// <summary>
    /// Checks linear-attention inputs (equal head counts, non-empty sequence) and their decay; a decay other
    /// than 1 needs the causal mask. Returns the per-head lambdas.
    /// </summary>
    public static double[] LinearAttentionInputs(Tensor q, Tensor k, Tensor v, bool causal, double[]? decay)
    {
        AttentionInputs(q, k, v);
        AtLeast(q.shape[2], 1, "sequence length of q (dimension 2)");
        var lambda = Decay(decay, q.shape[1]);
        if (!causal && lambda.Any(l => l != 1.0))
            throw new ArgumentException(
                "decay requires the causal mask (it weights past tokens by distance); pass causal: true or decay: null.",
                nameof(decay));
        return lambda;
    }

    /// <summary>
    /// Validates a per-head decay: null means lambda = 1 for every head; otherwise one value per
    /// head, each in (0, 1]. Returns the per-head array.
    /// </summary>
    public static double[] Decay(double[]? decay, long heads)
    {
        if (decay is null) return Enumerable.Repeat(1.0, (int)heads).ToArray();
        if (decay.Length != heads)
            throw new ArgumentException(
                $"decay has {decay.Length} values but there are {heads} heads; give one lambda per head.", nameof(decay));
        for (int h = 0; h < decay.Length; h++)
            if (!(decay[h] > 0.0 && decay[h] <= 1.0))
                throw new ArgumentOutOfRangeException(
                    nameof(decay), decay[h], $"decay[{h}] = {decay[h]} is outside (0, 1].");
        return decay;
    }

    /// <summary>Requires an integer parameter to be at least <paramref name="minimum"/>.</summary>
    public static void AtLeast(long value, long minimum, string name)
    {
        if (value < minimum)
            throw new ArgumentOutOfRangeException(name, value, $"{name} = {value} must be >= {minimum}.");
    }

    /// <summary>
    /// Requires <paramref name="value"/> in [minimum, maximum], or (minimum, maximum] when
    /// <paramref name="minimumExclusive"/>; NaN is never in range.
    /// </summary>
    public static void InRange(double value, double minimum, double maximum, string name, bool minimumExclusive = false)
    {
        bool above = minimumExclusive ? value > minimum : value >= minimum;
        if (!(above && value <= maximum))
            throw new ArgumentOutOfRangeException(name, value,
                $"{name} = {value.ToString(CultureInfo.InvariantCulture)} must be {RangeText(minimum, maximum, minimumExclusive)}.");
    }

    /// <summary>The range of <see cref="InRange"/> in words: "&gt;= 1", "&gt; 0", "in (0, 1]", "in [1, 1024]".</summary>
    public static string RangeText(double minimum, double maximum, bool minimumExclusive = false)
    {
        string low = minimum.ToString(CultureInfo.InvariantCulture);
        return double.IsPositiveInfinity(maximum)
            ? $"{(minimumExclusive ? ">" : ">=")} {low}"
            : $"in {(minimumExclusive ? "(" : "[")}{low}, {maximum.ToString(CultureInfo.InvariantCulture)}]";
    }

    /// <summary>Requires <paramref name="value"/> to be one of <paramref name="allowed"/> (ignoring case); returns the allowed spelling.</summary>
    public static string OneOf(string value, IReadOnlyCollection<string> allowed, string name) =>
        allowed.FirstOrDefault(a => string.Equals(a, value, StringComparison.OrdinalIgnoreCase))
        ?? throw new ArgumentException($"{name} = '{value}' is not one of: {string.Join(", ", allowed)}.", name);

    /// <summary>Formats a shape as [a, b, c].</summary>
    public static string Shape(Tensor tensor) => "[" + string.Join(", ", tensor.shape) + "]";
}
