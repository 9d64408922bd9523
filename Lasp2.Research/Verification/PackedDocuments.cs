using System.Globalization;
using Lasp2.Reference;

namespace Lasp2.Research.Verification;

/// <summary>
/// The `--docs` option of `lasp2 verify` and `lasp2 bench`: document lengths ("7,100,1,20": N is their sum),
/// "random" (lengths drawn from the seed over N tokens) or "equal:K" (K equal documents, K divides N).
/// </summary>
public static class PackedDocuments
{
    /// <summary>The documents <paramref name="spec"/> names over <paramref name="sequenceLength"/> tokens (lengths: their sum must be N).</summary>
    public static DocumentBoundaries Parse(string spec, long sequenceLength, long seed)
    {
        ArgumentNullException.ThrowIfNull(spec);
        if (spec == "random") return Random(sequenceLength, seed);
        if (spec.StartsWith("equal:", StringComparison.Ordinal))
        {
            if (!long.TryParse(spec["equal:".Length..], NumberStyles.None, CultureInfo.InvariantCulture, out long count) || count < 1
                || sequenceLength % count != 0)
                throw new ArgumentException($"--docs equal:K needs an integer K >= 1 dividing N = {sequenceLength}; got '{spec}'.", "--docs");
            return DocumentBoundaries.FromLengths(Enumerable.Repeat(sequenceLength / count, (int)count).ToArray());
        }
        var documents = DocumentBoundaries.FromLengths(Lengths(spec));
        if (documents.Length != sequenceLength)
            throw new ArgumentException(
                $"--docs lengths sum to {documents.Length} but the sequence has N = {sequenceLength} tokens; give lengths summing to N.", "--docs");
        return documents;
    }

    /// <summary>The sequence length the lengths of <paramref name="spec"/> sum to, or null for "random" / "equal:K" (N from --seq).</summary>
    public static long? LengthOf(string spec) =>
        spec == "random" || spec.StartsWith("equal:", StringComparison.Ordinal) ? null : Lengths(spec).Sum();

    static long[] Lengths(string spec)
    {
        var items = spec.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        var lengths = items.Select(item => long.TryParse(item, NumberStyles.None, CultureInfo.InvariantCulture, out long n) && n >= 1
            ? n : throw new ArgumentException($"--docs takes document lengths >= 1 (e.g. 7,100,1,20), 'random' or 'equal:K'; got '{item}'.", "--docs")).ToArray();
        return lengths.Length > 0 ? lengths : throw new ArgumentException("--docs needs at least one document length.", "--docs");
    }

    /// <summary>
    /// Random documents over N tokens from the seed, built to hit the hard cases: a boundary exactly at an edge of the
    /// N/16-token grid (a shard or zigzag piece edge for W up to 8 when 16 divides N), a document of length 1 right
    /// after it, and two more boundaries anywhere (so some document usually spans several shards).
    /// </summary>
    public static DocumentBoundaries Random(long sequenceLength, long seed)
    {
        Guards.AtLeast(sequenceLength, 1, "--seq");
        var random = new System.Random(unchecked((int)seed));
        long grid = sequenceLength % 16 == 0 ? sequenceLength / 16 : 1;
        long edge = grid * random.NextInt64(1, Math.Max(2, sequenceLength / grid));
        var cuts = new[] { edge, edge + 1, random.NextInt64(1, Math.Max(2, sequenceLength)), random.NextInt64(1, Math.Max(2, sequenceLength)) }
            .Where(cut => cut >= 1 && cut < sequenceLength).Distinct().Order().ToArray();
        return DocumentBoundaries.FromCuSeqlens([0, .. cuts, sequenceLength], sequenceLength);
    }
}
