using Lasp2.Reference;
using static TorchSharp.torch;

namespace Lasp2.Research.Comm;

/// <summary>Argument checks shared by both backends; each names the parameter and its valid range.</summary>
static class CommArgs
{
    /// <summary>Bytes of a tensor's elements.</summary>
    public static long Bytes(Tensor tensor) => tensor.NumberOfElements * tensor.ElementSize;

    public static void Input(Tensor input, string name = "input")
    {
        ArgumentNullException.ThrowIfNull(input, name);
        if (input.IsInvalid)
            throw new ObjectDisposedException(name, $"{name} has been disposed.");
    }

    /// <summary>Requires 0 &lt;= <paramref name="peer"/> &lt; <paramref name="worldSize"/>.</summary>
    public static void Peer(int peer, int worldSize, string name)
    {
        if (peer < 0 || peer >= worldSize)
            throw new ArgumentOutOfRangeException(name, peer, $"{name} must be a rank of the group, 0..{worldSize - 1}.");
    }

    /// <summary>ReduceScatter input: [W, ...] with one block per destination rank.</summary>
    public static void ReduceScatterInput(Tensor input, int worldSize)
    {
        Input(input);
        if (input.dim() < 1 || input.shape[0] != worldSize)
            throw new ArgumentException(
                $"ReduceScatter input must be [W, ...] with W = {worldSize} blocks in dimension 0; got shape {Guards.Shape(input)}.",
                nameof(input));
    }

    /// <summary>AllToAll dims, normalized (negative counts from the end); the split dimension must divide by W.</summary>
    public static (int Split, int Concat) AllToAllDims(Tensor input, int splitDim, int concatDim, int worldSize)
    {
        Input(input);
        int split = Dim(input, splitDim, nameof(splitDim));
        int concat = Dim(input, concatDim, nameof(concatDim));
        if (input.shape[split] % worldSize != 0)
            throw new ArgumentException(
                $"AllToAll splits dimension {split} of shape {Guards.Shape(input)} into W = {worldSize} equal blocks; " +
                $"its size {input.shape[split]} is not a multiple of {worldSize}.", nameof(splitDim));
        return (split, concat);
    }

    /// <summary>Recv shape: every extent &gt;= 0.</summary>
    public static void Shape(long[] shape)
    {
        ArgumentNullException.ThrowIfNull(shape);
        if (shape.Any(extent => extent < 0))
            throw new ArgumentOutOfRangeException(nameof(shape), $"every extent of shape must be >= 0; got [{string.Join(",", shape)}].");
    }

    /// <summary>Split color: MPI_Comm_split colors, but every rank must join some sub-group.</summary>
    public static void Color(int color)
    {
        if (color < 0)
            throw new ArgumentOutOfRangeException(nameof(color), color, "color must be >= 0 (every rank joins a sub-group).");
    }

    /// <summary>"Float32 [2,3]" for error messages.</summary>
    public static string Describe(ScalarType dtype, long[] shape) => $"{dtype} [{string.Join(",", shape)}]";

    static int Dim(Tensor input, int dim, string name)
    {
        long rank = input.dim();
        if (dim < -rank || dim >= rank)
            throw new ArgumentOutOfRangeException(name, dim,
                $"{name} must be in {-rank}..{rank - 1} for a tensor of shape {Guards.Shape(input)}.");
        return dim < 0 ? (int)(dim + rank) : dim;
    }
}
