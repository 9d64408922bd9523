using TorchSharp;
using static TorchSharp.torch;

namespace Lasp2.Reference;

/// <summary>
/// Packed documents: where each document of a packed sequence of N tokens starts, as cumulative lengths
/// (the cu_seqlens convention) [0, n_1, n_1 + n_2, ..., N]. Document d holds the global tokens
/// [CuSeqlens[d], CuSeqlens[d + 1]). Linear attention starts its state from zero at every document start (a
/// start is a transition of 0: lambda across it is 0), softmax attention sees only its own document.
/// Validated on construction: first 0, strictly increasing, last N.
/// </summary>
public sealed class DocumentBoundaries
{
    readonly long[] cuSeqlens;

    DocumentBoundaries(long[] cuSeqlens) => this.cuSeqlens = cuSeqlens;

    /// <summary>[0, n_1, n_1 + n_2, ..., N]: Count + 1 entries.</summary>
    public IReadOnlyList<long> CuSeqlens => cuSeqlens;

    /// <summary>N, the packed sequence length.</summary>
    public long Length => cuSeqlens[^1];

    /// <summary>Number of documents (&gt;= 1).</summary>
    public int Count => cuSeqlens.Length - 1;

    /// <summary>Each document's length n_d, in order.</summary>
    public long[] Lengths => Enumerable.Range(0, Count).Select(d => cuSeqlens[d + 1] - cuSeqlens[d]).ToArray();

    /// <summary>
    /// From cumulative lengths for a sequence of <paramref name="sequenceLength"/> tokens; throws naming
    /// <paramref name="cuSeqlens"/> unless it starts at 0, strictly increases and ends at N.
    /// </summary>
    public static DocumentBoundaries FromCuSeqlens(IReadOnlyList<long> cuSeqlens, long sequenceLength)
    {
        ArgumentNullException.ThrowIfNull(cuSeqlens);
        if (cuSeqlens.Count < 2)
            throw new ArgumentException(
                $"cuSeqlens needs at least 2 entries [0, ..., N]; got {cuSeqlens.Count}.", nameof(cuSeqlens));
        if (cuSeqlens[0] != 0)
            throw new ArgumentException($"cuSeqlens[0] = {cuSeqlens[0]} must be 0.", nameof(cuSeqlens));
        for (int d = 1; d < cuSeqlens.Count; d++)
            if (cuSeqlens[d] <= cuSeqlens[d - 1])
                throw new ArgumentException(
                    $"cuSeqlens must be strictly increasing (every document has >= 1 token); cuSeqlens[{d}] = {cuSeqlens[d]} <= cuSeqlens[{d - 1}] = {cuSeqlens[d - 1]}.", nameof(cuSeqlens));
        if (cuSeqlens[^1] != sequenceLength)
            throw new ArgumentException(
                $"cuSeqlens must end at the sequence length N = {sequenceLength}; its last entry is {cuSeqlens[^1]}.", nameof(cuSeqlens));
        return new DocumentBoundaries(cuSeqlens.ToArray());
    }

    /// <summary>From document lengths n_d (each &gt;= 1); N is their sum.</summary>
    public static DocumentBoundaries FromLengths(IReadOnlyList<long> lengths)
    {
        ArgumentNullException.ThrowIfNull(lengths);
        if (lengths.Count < 1) throw new ArgumentException("lengths needs at least one document.", nameof(lengths));
        for (int d = 0; d < lengths.Count; d++)
            if (lengths[d] < 1)
                throw new ArgumentException($"lengths[{d}] = {lengths[d]} must be >= 1 (every document has a token).", nameof(lengths));
        var cu = new long[lengths.Count + 1];
        for (int d = 0; d < lengths.Count; d++) cu[d + 1] = cu[d] + lengths[d];
        return new DocumentBoundaries(cu);
    }

    /// <summary>One document covering all N tokens (no boundary inside).</summary>
    public static DocumentBoundaries Single(long sequenceLength)
    {
        Guards.AtLeast(sequenceLength, 1, nameof(sequenceLength));
        return new DocumentBoundaries([0, sequenceLength]);
    }

    /// <summary>Throws unless the boundaries describe a sequence of <paramref name="sequenceLength"/> tokens.</summary>
    public void CheckLength(long sequenceLength, string parameter)
    {
        if (Length != sequenceLength)
            throw new ArgumentException(
                $"{parameter} cover {Length} tokens but the sequence has {sequenceLength}; cuSeqlens must end at N.", parameter);
    }

    /// <summary>True when a document starts at global position <paramref name="position"/> (0 always does).</summary>
    public bool StartsAt(long position) => Array.BinarySearch(cuSeqlens, 0, Count, position) >= 0;

    /// <summary>The document holding global position <paramref name="position"/> (0-based).</summary>
    public int DocumentOf(long position)
    {
        int index = Array.BinarySearch(cuSeqlens, position);
        return index >= 0 ? index : ~index - 1;
    }

    /// <summary>
    /// The document starts inside the run of global tokens [start, start + length), in local coordinates
    /// (0 = the run's first token), ascending. Local 0 is included when a document starts exactly there.
    /// </summary>
    public long[] StartsWithin(long start, long length) =>
        cuSeqlens.Take(Count).Where(s => s >= start && s < start + length).Select(s => s - start).ToArray();

    /// <summary>The document index of every global position (int64 [n]), for document masks by position.</summary>
    public Tensor DocumentIds(Tensor positions)
    {
        // the number of document ends at or before p is the index of p's document
        using var ends = tensor(cuSeqlens.Skip(1).ToArray(), dtype: int64, device: positions.device);
        return searchsorted(ends, positions.to(int64), right: true);
    }

    /// <summary>"[0, 7, 107, 108, 128]"</summary>
    public override string ToString() => "[" + string.Join(", ", cuSeqlens) + "]";
}
