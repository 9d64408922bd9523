using Lasp2.Reference;
using TorchSharp;
using static TorchSharp.torch;

namespace Lasp2.Research.Model;

/// <summary>
/// Documents packed back to back into one token stream (each document's last token is the end-of-document id),
/// cut into training sequences. Sequence j of the stream is the window of N + 1 tokens at offset j N (wrapping
/// around at the end): inputs are its first N tokens, targets its last N; a token whose next token starts a new
/// document has no target (it ends its document). Batch s holds sequences s B .. s B + B - 1, so the data of a
/// step depends only on the step.
/// </summary>
public sealed class PackedCorpus : IBatchSource
{
    readonly long[] tokens;
    readonly bool[] startsDocument;

    /// <summary>
    /// <paramref name="tokens"/>: the packed stream; <paramref name="documentStarts"/>: sorted offsets where documents begin;
    /// <paramref name="rows"/> x <paramref name="length"/>: batch shape.
    /// </summary>
    public PackedCorpus(long[] tokens, IReadOnlyList<long> documentStarts, int vocab, int rows, int length)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        Guards.AtLeast(rows, 1, nameof(rows));
        Guards.AtLeast(length, 1, nameof(length));
        Guards.AtLeast(vocab, 2, nameof(vocab));
        if (tokens.Length < length + 1)
            throw new ArgumentException($"the corpus has {tokens.Length} tokens; a sequence of {length} needs at least {length + 1}.", nameof(tokens));
        if (tokens.Any(t => t < 0 || t >= vocab))
            throw new ArgumentException($"token ids must be in [0, {vocab - 1}].", nameof(tokens));
        (this.tokens, Vocab, Rows, Length) = (tokens, vocab, rows, length);
        startsDocument = new bool[tokens.Length];
        foreach (long start in documentStarts) startsDocument[start] = true;
    }

    public int Vocab { get; }
    public int Rows { get; }
    public int Length { get; }

    /// <summary>Tokens in the stream.</summary>
    public long TokenCount => tokens.Length;

    /// <inheritdoc/>
    public Batch Get(long step)
    {
        Guards.AtLeast(step, 0, nameof(step));
        var inputs = new long[Rows * Length];
        var targets = new long[Rows * Length];
        var starts = new List<long[]>();
        for (int r = 0; r < Rows; r++)
        {
            long offset = (step * Rows + r) * Length % tokens.Length;
            var rowStarts = new List<long>();
            for (int i = 0; i < Length; i++)
            {
                long at = (offset + i) % tokens.Length, next = (at + 1) % tokens.Length;
                inputs[r * Length + i] = tokens[at];
                targets[r * Length + i] = startsDocument[next] ? LinearLlama.NoTarget : tokens[next];
                if (startsDocument[at]) rowStarts.Add(i);
            }
            starts.Add([.. rowStarts]);
        }
        return new Batch(tensor(inputs, [Rows, Length]), tensor(targets, [Rows, Length]), starts);
    }

    /// <summary>
    /// Random documents (lengths uniform in [1, 2 <paramref name="meanDocument"/>), last token <paramref name="vocab"/> - 1
    /// as the end-of-document id) for tests: seeded, no tokenizer, no files.
    /// </summary>
    public static PackedCorpus Random(int vocab, int totalTokens, int meanDocument, int rows, int length, int seed)
    {
        var random = new System.Random(seed);
        var stream = new long[totalTokens];
        var starts = new List<long>();
        for (int at = 0; at < totalTokens;)
        {
            starts.Add(at);
            int documentLength = Math.Min(totalTokens - at, random.Next(1, 2 * meanDocument));
            for (int i = 0; i < documentLength - 1; i++) stream[at + i] = random.Next(vocab - 1);
            stream[at + documentLength - 1] = vocab - 1;
            at += documentLength;
        }
        return new PackedCorpus(stream, starts, vocab, rows, length);
    }
}
